// KV cache element type and int8 lm_head through the TypeScript API on the
// real stories260K: the info reports them, f16 (the default) halves the f32
// cache and keeps greedy output equal to the reference (with the int8 lm_head too), q8 holds about a
// quarter plus its scales; bad values are refused with SHOAL_ERR_INVALID_ARG.
// The precision option: reported, exact on the CPU only and with the output matrix as stored.
// And `shoal bench` sizes: defaults fit the model's context, explicit sizes
// that cannot fit are refused.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { benchSizes } from '../src/bench.js';
import type { KvCacheType, LmHeadMode } from '../src/types.js';
import { generateModel } from '@shoal/modelkit';
import { engineSkip, sharedPath, skipUnlessShared } from '@shoal/testkit';

const STORIES = ['models', 'stories260K'];
const skip = skipUnlessShared(...STORIES);

interface RefCase { input_ids: number[]; steps: number; ids_after_bos: number[] }

async function greedy(kvCache: KvCacheType, c: RefCase, lmHead: LmHeadMode = 'auto'): Promise<number[]> {
  const model = await loadModel(sharedPath(...STORIES), { threads: 2, kvCache, lmHead, tokenizer: false });
  try {
    const s = model.createSession();
    const ids = c.input_ids.slice(1);
    const gen = s.generate(c.input_ids, { maxTokens: c.steps - (c.input_ids.length - 1), stopTokenIds: [1] });
    for (;;) {
      const r = await gen.next();
      if (r.done) break;
      if (r.value.token >= 0) ids.push(r.value.token);
    }
    s.dispose();
    return ids;
  } finally {
    model.dispose();
  }
}

t.test('kvCache and lmHead options', { skip }, async (t) => {
  const per: Record<string, number> = {};
  for (const kv of ['f32', 'f16', 'q8'] as const) {
    const m = await loadModel(sharedPath(...STORIES), { threads: 1, kvCache: kv, tokenizer: false });
    t.equal(m.info.kvCache, kv, `info.kvCache ${kv}`);
    per[kv] = m.info.kvBytesPerPosition;
    m.dispose();
  }
  // stories260K: 5 layers × 4 KV heads × head_dim 8 × (K + V)
  t.equal(per.f32, 5 * 4 * 8 * 2 * 4, 'f32: 4 bytes per element');
  t.equal(per.f16, per.f32! / 2, 'f16 halves the f32 cache');
  t.equal(per.q8, 5 * 4 * (8 * 2 + 2 * 4), 'q8: 1 byte per element + one f32 scale per position, head and K/V');
  const d = await loadModel(sharedPath(...STORIES), { threads: 1, tokenizer: false });
  t.equal(d.info.kvCache, 'f16', 'default KV cache is f16');
  t.equal(d.info.lmHead, 'f32', 'default lm_head auto: as stored on a 512 × 64 matrix');
  d.dispose();
  const q = await loadModel(sharedPath(...STORIES), { threads: 1, lmHead: 'q8', tokenizer: false });
  t.equal(q.info.lmHead, 'q8', 'lmHead q8 reported');
  q.dispose();
  const n = await loadModel(sharedPath(...STORIES), { threads: 1, lmHead: 'native', tokenizer: false });
  t.equal(n.info.lmHead, 'f32', 'lmHead native: as stored');
  n.dispose();
  await t.rejects(loadModel(sharedPath(...STORIES), { kvCache: 'f8' as KvCacheType }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(loadModel(sharedPath(...STORIES), { lmHead: 'int4' as 'q8' }), { code: 'SHOAL_ERR_INVALID_ARG' });

  const ref = JSON.parse(readFileSync(sharedPath(...STORIES, 'reference_greedy.json'), 'utf8')) as { cases: RefCase[] };
  const c = ref.cases[1]!;
  t.same(await greedy('f16', c), c.ids_after_bos, 'f16 KV: greedy output equals the reference');
  t.same(await greedy('f16', c, 'q8'), c.ids_after_bos, 'f16 KV and the int8 lm_head: greedy output equals the reference');
});

t.test('lmHead auto: int8 from 2^22 weights on, as stored with precision exact', { skip: engineSkip }, async (t) => {
  // a float Llama whose tied output matrix has exactly 2^22 weights (65,536 × 64): the
  // size from which lm_head 'auto' holds it in int8 (native/src/model.h)
  const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-wide-vocab-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const { dir } = generateModel({
    out: path.join(root, 'm'), shape: 'tiny', dtype: 'f32', seed: 7,
    overrides: { vocabSize: 65536, hiddenSize: 64, intermediateSize: 96, layers: 1, heads: 4, kvHeads: 4, headDim: 16, tieWordEmbeddings: true },
  });
  const last = async (lmHead: LmHeadMode): Promise<{ held: string; bytes: number; logits: Float32Array }> => {
    const m = await loadModel(dir, { threads: 2, lmHead, tokenizer: false });
    try {
      const s = m.createSession({ contextSize: 16 });
      const logits = await s.eval([1, 300, 4000, 65000]);
      s.dispose();
      return { held: m.info.lmHead, bytes: m.info.bytesPerToken, logits };
    } finally {
      m.dispose();
    }
  };
  const auto = await last('auto'), native = await last('native');
  t.equal(auto.held, 'q8', 'auto: a 65,536 × 64 output matrix is held in int8');
  t.equal(native.held, 'f32', 'native: as stored');
  // f32 → int8 + one f16 scale and one f16 −s·z per 64-wide row
  t.equal(native.bytes - auto.bytes, 65536 * 64 * 4 - 65536 * (64 + 4), 'bytes read per token drop by the f32 matrix less its int8 copy');
  let worst = 0, top = 0;
  auto.logits.forEach((v, i) => { worst = Math.max(worst, Math.abs(v - native.logits[i]!)); top = Math.max(top, Math.abs(native.logits[i]!)); });
  t.ok(worst > 0 && worst < 0.01 * top, `int8 moves the logits a little: max |Δ| ${worst.toExponential(2)} (largest logit ${top.toFixed(2)})`);
  const exact = await loadModel(dir, { threads: 1, lmHead: 'auto', precision: 'exact', tokenizer: false });
  t.equal(exact.info.lmHead, 'f32', 'auto with precision exact: as stored');
  exact.dispose();
});

t.test('precision option', { skip }, async (t) => {
  const d = await loadModel(sharedPath(...STORIES), { threads: 1, tokenizer: false });
  t.equal(d.info.precision, 'fast', 'default precision fast');
  d.dispose();
  const e = await loadModel(sharedPath(...STORIES), { threads: 1, tokenizer: false, precision: 'exact', backend: 'auto' });
  t.equal(e.info.precision, 'exact', 'precision exact reported');
  t.equal(e.info.backend, 'cpu', 'precision exact: auto takes the CPU');
  t.equal(e.info.lmHead, 'f32', 'the output matrix as stored');
  e.dispose();
  await t.rejects(loadModel(sharedPath(...STORIES), { precision: 'double' as 'exact' }), { code: 'SHOAL_ERR_INVALID_ARG', message: /precision must be one of fast, exact/ });
  await t.rejects(loadModel(sharedPath(...STORIES), { precision: 'exact', lmHead: 'q8' }), { code: 'SHOAL_ERR_INVALID_ARG', message: /lm_head must be native or auto/ });
  await t.rejects(loadModel(sharedPath(...STORIES), { precision: 'exact', backend: 'cuda' }), { code: 'SHOAL_ERR_BACKEND', message: /CPU backend only/ });
});

t.test('bench sizes fit the model', async (t) => {
  t.same(benchSizes(2048), { prompt: 512, decode: 128 }, 'defaults on a 2048-position model');
  t.same(benchSizes(512), { prompt: 384, decode: 128 }, 'stories260K (512 positions): the prompt shrinks so 128 tokens decode');
  t.same(benchSizes(64), { prompt: 48, decode: 16 }, 'a tiny context: a quarter decodes');
  t.throws(() => benchSizes(512, 512, 128), { code: 'SHOAL_ERR_INVALID_ARG', message: /do not fit in the model's context of 512/ });
  t.throws(() => benchSizes(512, undefined, 512), { code: 'SHOAL_ERR_INVALID_ARG' });
});
