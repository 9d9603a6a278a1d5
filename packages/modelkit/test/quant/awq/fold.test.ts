// Folding the AWQ scales into the preceding norms / linears, and zero-padding
// the FFN, leave the FP model's function unchanged: the engine's logits of the
// rewritten F32 checkpoints match the original stories260K.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { quantizeAwqModel } from '../../../src/quant/awq/quantize-awq.js';
import { Checkpoint } from '../../../src/io/safetensors.js';
import { calibDocs, engineLogits, maxAbs, maxAbsDiff, skipStories, STORIES } from '../helpers.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-awq-fold-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

t.test('scale folding and FFN padding preserve the FP logits', { skip: skipStories }, async (t) => {
  const ref = await engineLogits(STORIES);
  for (const padFfn of [false, true]) {
    const out = path.join(root, `fold${padFfn ? '-pad' : ''}`);
    const r = await quantizeAwqModel({
      model: STORIES, out, method: 'awq', bits: 4, groupSize: 32, foldOnly: true, padFfn,
      calibDocs: calibDocs(), samples: 4, seqlen: 128,
      // f32 products: the per-layer check below compares the folded and the original layer
      // to 1e-9, which bf16 rounding of two different weight sets would not meet
      precision: 'f32',
    });
    // every scale group ran (no v→o: stories260K has GQA) and moved the weights
    const names = r.layers.flatMap((l) => l.scales.map((s) => s.name));
    t.equal(names.filter((n) => n.startsWith('input_layernorm')).length, 5, 'q,k,v scales in every layer');
    t.equal(names.filter((n) => n.startsWith('post_attention_layernorm')).length, 5, 'gate,up scales in every layer');
    t.equal(names.filter((n) => n.startsWith('up_proj')).length, padFfn ? 5 : 0, 'up→down only when down_proj can be quantized');
    t.ok(r.layers.some((l) => l.scales.some((s) => s.alpha > 0)), 'some α > 0 (the scales are not all 1)');
    const src = Checkpoint.open(STORIES);
    const dst = Checkpoint.open(out);
    const n0 = src.readFloat32('model.layers.0.input_layernorm.weight');
    const n1 = dst.readFloat32('model.layers.0.input_layernorm.weight');
    t.ok(maxAbsDiff(n0, n1) > 1e-3, 'input_layernorm gain changed by the folding');
    if (padFfn) {
      t.same(dst.entry('model.layers.0.mlp.down_proj.weight').shape, [64, 192], 'down_proj padded to 192 inputs');
      t.equal(JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')).intermediate_size, 192);
    }
    src.close();
    dst.close();
    const got = await engineLogits(out);
    const d = maxAbsDiff(got, ref);
    t.ok(d < 2e-4 * Math.max(1, maxAbs(ref)), `pad=${padFfn}: max |Δlogit| ${d.toExponential(2)} (logits up to ${maxAbs(ref).toFixed(2)})`);
    t.ok(r.layers.every((l) => l.outputMse !== null && l.outputMse < 1e-9), 'per-layer output unchanged on the calibration set');
  }
});
