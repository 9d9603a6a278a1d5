// AWQ never worse than RTN per layer (awq/fallback.ts): the decision on stub
// layers, and on stories260K that every layer reports both held-out errors,
// keeps the lower one, and that a layer written as RTN holds exactly RTN's
// weights (original norms, quantize-dequantize of the original linears).
import t from 'tap';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { awqOrRtn, cloneLayer } from '../../../src/quant/awq/fallback.js';
import { quantizeAwqModel } from '../../../src/quant/awq/quantize-awq.js';
import type { LayerWeights } from '../../../src/quant/awq/layer.js';
import { Checkpoint } from '../../../src/io/safetensors.js';
import { calibDocs, skipStories, STORIES } from '../helpers.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-awq-fallback-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

function layer(v: number): LayerWeights {
  const w = {} as LayerWeights['w'];
  for (const k of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'] as const) w[k] = Float32Array.of(v);
  return { attnNorm: Float32Array.of(1), ffnNorm: Float32Array.of(1), w, bias: {} };
}

t.test('awqOrRtn keeps the quantized layer with the lower held-out error (ties: AWQ)', async (t) => {
  // the "layer" multiplies x by its q weight; qdq rounds it to one decimal
  const run = async (lw: LayerWeights, x: Float32Array) => x.map((v) => v * lw.w['self_attn.q_proj'][0]!);
  const qdq = async (lw: LayerWeights) => { const c = cloneLayer(lw); c.w['self_attn.q_proj'][0] = Math.round(c.w['self_attn.q_proj'][0]! * 10) / 10; return c; };
  const x = Float32Array.of(1, 2, 3);
  const fp = layer(0.26);
  let d = await awqOrRtn(run, qdq, fp, layer(0.27), x); // AWQ's 0.3 vs RTN's 0.3: tie
  t.equal(d.report.choice, 'awq');
  d = await awqOrRtn(run, qdq, fp, layer(0.24), x); // AWQ 0.2 (err .06) vs RTN 0.3 (err .04)
  t.equal(d.report.choice, 'rtn');
  t.ok(d.report.awqMse > d.report.rtnMse);
  t.same(Array.from(d.out), Array.from(x.map((v) => v * Math.fround(0.3))), 'the chosen (RTN) output is returned');
  t.equal(fp.w['self_attn.q_proj'][0], Math.fround(0.26), 'inputs untouched');
});

t.test('stories260K: every layer checked on held-out tokens; an RTN layer holds RTN weights', { skip: skipStories }, async (t) => {
  const docs = calibDocs(400);
  const awq = await quantizeAwqModel({ model: STORIES, out: path.join(root, 'awq'), bits: 3, groupSize: 32, calibDocs: docs, samples: 4, seqlen: 128, holdout: 2 });
  t.equal(awq.calibration?.heldOutTokens, 256);
  t.equal(awq.calibration?.heldOutFromSamples, false);
  for (const l of awq.layers) {
    const f = l.fallback!;
    t.ok(Number.isFinite(f.awqMse) && Number.isFinite(f.rtnMse), `layer ${l.layer}: awq ${f.awqMse.toExponential(2)} rtn ${f.rtnMse.toExponential(2)} → ${f.choice}`);
    t.equal(f.choice, f.awqMse <= f.rtnMse ? 'awq' : 'rtn');
  }
  t.same(awq.rtnFallbackLayers, awq.layers.filter((l) => l.fallback!.choice === 'rtn').map((l) => l.layer));
  const rtn = await quantizeAwqModel({ model: STORIES, out: path.join(root, 'rtn'), method: 'rtn', bits: 3, groupSize: 32 });
  t.equal(rtn.rtnFallbackLayers.length, 0);
  const a = Checkpoint.open(awq.dir);
  const r = Checkpoint.open(rtn.dir);
  t.teardown(() => { a.close(); r.close(); });
  for (const l of awq.layers) {
    const name = `model.layers.${l.layer}.self_attn.q_proj.weight`;
    const same = a.readFloat32(name).every((v, i) => v === r.readFloat32(name)[i]);
    t.equal(same, l.fallback!.choice === 'rtn', `layer ${l.layer} (${l.fallback!.choice}): q_proj ${same ? 'equals' : 'differs from'} RTN's`);
  }
  // too little text for the held-out blocks: they come from the samples, and the result says so
  const few = await quantizeAwqModel({ model: STORIES, out: path.join(root, 'few'), bits: 3, groupSize: 32, calibDocs: calibDocs(20), samples: 2, seqlen: 128, holdout: 100 });
  t.match(few.calibration, { samples: 1, heldOutTokens: 128, heldOutFromSamples: true });
  const off = await quantizeAwqModel({ model: STORIES, out: path.join(root, 'off'), bits: 3, groupSize: 32, calibDocs: docs, samples: 2, seqlen: 128, holdout: 0 });
  t.ok(off.layers.every((l) => l.fallback === undefined), 'holdout 0: no check');
});
