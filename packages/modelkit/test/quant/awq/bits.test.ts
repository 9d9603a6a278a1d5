// 3- and 2-bit fake quantization (RTN and AWQ): the F32 checkpoints load in the
// engine and evaluate; fewer bits cost more perplexity; bad options fail with codes.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '@shoal/engine';
import { evaluatePerplexity } from '../../../src/eval/ppl.js';
import { quantizeAwqModel } from '../../../src/quant/awq/quantize-awq.js';
import { Checkpoint } from '../../../src/io/safetensors.js';
import { calibDocs, skipStories, STORIES, STORIES_TXT } from '../helpers.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-awq-bits-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

async function ppl(dir: string): Promise<number> {
  const m = await loadModel(dir);
  try {
    const text = readFileSync(STORIES_TXT, 'utf8').slice(-20000);
    const ids = m.tokenizer!.encode(text, { addSpecialTokens: false }).slice(0, 2000);
    return (await evaluatePerplexity(m, ids, { ctx: 256 })).ppl;
  } finally {
    m.dispose();
  }
}

t.test('w3 and w2 fake-quant checkpoints load and evaluate', { skip: skipStories }, async (t) => {
  const fp = await ppl(STORIES);
  const res: Record<string, number> = {};
  for (const method of ['rtn', 'awq'] as const) {
    for (const bits of [3, 2]) {
      const out = path.join(root, `${method}-w${bits}`);
      const r = await quantizeAwqModel({
        model: STORIES, out, method, bits, groupSize: 32, calibDocs: calibDocs(), samples: 4, seqlen: 128,
      });
      t.equal(r.fakeQuant, true);
      t.same(r.modulesToNotConvert, ['mlp.down_proj'], 'down_proj (172 inputs) stays FP');
      t.equal(r.quantizedLinears, 30);
      const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8'));
      t.equal(cfg.quantization_config, undefined, 'a plain float checkpoint');
      t.match(cfg.shoal_fake_quantization, { bits, group_size: 32, method });
      // the weights lie on a 2^bits-level grid per group of 32
      const ck = Checkpoint.open(out);
      const w = ck.readFloat32('model.layers.2.mlp.gate_proj.weight');
      ck.close();
      let levels = 0;
      for (let off = 0; off < w.length; off += 32) levels = Math.max(levels, new Set(w.subarray(off, off + 32)).size);
      t.ok(levels <= 1 << bits, `${method} w${bits}: at most ${1 << bits} levels per group (${levels})`);
      res[`${method}${bits}`] = await ppl(out);
      t.ok(Number.isFinite(res[`${method}${bits}`]!) && res[`${method}${bits}`]! > fp, `${method} w${bits}: ppl ${res[`${method}${bits}`]} > FP ${fp}`);
    }
    t.ok(res[`${method}2`]! > res[`${method}3`]!, `${method}: w2 ${res[`${method}2`]} worse than w3 ${res[`${method}3`]}`);
  }
});

t.test('bad options fail with stable codes', { skip: skipStories }, async (t) => {
  const out = path.join(root, 'bad');
  await t.rejects(quantizeAwqModel({ model: STORIES, out, bits: 5, calibDocs: ['x'] }), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, groupSize: 20, calibDocs: ['x'] }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, method: 'awq' }), { code: 'SHOAL_ERR_GROUP_SIZE', message: /--group 128 fits none/ });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, method: 'awq', groupSize: 32 }), { code: 'SHOAL_ERR_INVALID_ARG', message: /--calib/ });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, groupSize: 32, calibDocs: ['Once upon a time.'], samples: 4, seqlen: 128 }), { code: 'SHOAL_ERR_CALIB_TOO_SHORT' });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, groupSize: 32, calibDocs: calibDocs(), seqlen: 4096, samples: 1 }), { code: 'SHOAL_ERR_INVALID_ARG', message: /context/ });
  await t.rejects(quantizeAwqModel({ model: STORIES, out, groupSize: 32, calib: [path.join(root, 'missing.txt')] }), { code: 'SHOAL_ERR_IO' });
  const notModel = path.join(root, 'not-a-model');
  writeFileSync(path.join(root, 'x.txt'), 'hello');
  await t.rejects(quantizeAwqModel({ model: notModel, out, calibDocs: ['x'] }), { code: 'SHOAL_ERR_CONFIG' });
  await t.rejects(quantizeAwqModel({ model: STORIES, out: path.join(root, 'x.txt'), method: 'rtn', bits: 3, groupSize: 32 }), { code: /SHOAL_ERR_(IO|OUTPUT_EXISTS)/ });
});
