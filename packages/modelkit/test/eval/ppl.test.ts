// Perplexity: window planning, exact values on synthetic logits, and F32 vs
// RTN INT4 perplexity of stories260K through the TypeScript reference forward
// (the native engine version is in native-vs-reference.test.ts).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { evaluatePerplexity, formatPplLine, logProb, planWindows } from '../../src/eval/ppl.js';
import { quantizeModel } from '../../src/quant/rtn.js';
import { loadReferenceModel, referenceForward } from '../../src/eval/reference-forward.js';
import { HfModelTokenizer, type Model, type ModelInfo, type Session } from '@shoal/engine';
import { hasShared, sharedPath, storiesPath } from '@shoal/testkit';

function info(v: number, ctx: number, bos: number | null): ModelInfo {
  return {
    dir: '', arch: 'LlamaForCausalLM', family: 'llama', quant: 'none', dtype: 'f32', backend: 'cpu', isa: 'test', threads: 1,
    kvCache: 'f16', kvBytesPerPosition: 0, lmHead: 'f32', precision: 'fast',
    vocabSize: v, hiddenSize: 0, intermediateSize: 0, layers: 0, heads: 0, kvHeads: 0, headDim: 0, contextLength: ctx,
    bosTokenId: bos, eosTokenIds: [], tiedEmbeddings: false, groupSize: 0, parameters: 0, fileBytes: 0, weightBytes: 0,
    bytesPerToken: 0, activeParameters: 0, slidingWindow: 0, experts: 0, expertsUsed: 0, expertCache: 'off', loadSeconds: 0, repackSeconds: 0,
  };
}

/** A model whose logits come from fn(history, position) and which records every eval call. */
function fakeModel(v: number, ctx: number, bos: number | null, fn: (tokens: number[], pos: number) => Float32Array, calls: number[][] = []): Model {
  return {
    info: info(v, ctx, bos),
    tokenizer: null,
    createSession(opts?: { contextSize?: number }): Session {
      let hist: number[] = [];
      const s = {
        contextSize: opts?.contextSize ?? ctx,
        get position() { return hist.length; },
        async eval(tokens: ArrayLike<number>, o?: { allLogits?: boolean }) {
          const toks = Array.from(tokens);
          calls.push(toks);
          if (hist.length + toks.length > s.contextSize) throw Object.assign(new Error('context full'), { code: 'SHOAL_ERR_CONTEXT_FULL' });
          const rows: Float32Array[] = [];
          for (const tk of toks) {
            hist.push(tk);
            rows.push(fn(hist, hist.length - 1));
          }
          if (!o?.allLogits) return rows[rows.length - 1]!;
          const out = new Float32Array(rows.length * v);
          rows.forEach((r, i) => out.set(r, i * v));
          return out;
        },
        reset() { hist = []; },
        truncate(k: number) { hist = hist.slice(0, k); },
        dispose() {},
        generate() { throw new Error('not used'); },
      };
      return s as unknown as Session;
    },
    dispose() {},
  };
}

t.test('window planning', async (t) => {
  // BOS: ctx 5 -> 4 text tokens per window; no overlap
  t.same(planWindows(10, 5, 4, true), [{ begin: 0, end: 4, scoreFrom: 0 }, { begin: 4, end: 8, scoreFrom: 4 }, { begin: 8, end: 10, scoreFrom: 8 }]);
  // stride 2: each window scores only new tokens
  t.same(planWindows(7, 5, 2, true), [{ begin: 0, end: 4, scoreFrom: 0 }, { begin: 2, end: 6, scoreFrom: 4 }, { begin: 4, end: 7, scoreFrom: 6 }]);
  // without BOS the first token is never scored; windows overlap by one token
  t.same(planWindows(6, 3, 2, false), [{ begin: 0, end: 3, scoreFrom: 1 }, { begin: 2, end: 5, scoreFrom: 3 }, { begin: 4, end: 6, scoreFrom: 5 }]);
  for (const [n, ctx, stride, bos] of [[100, 16, 5, true], [100, 16, 15, true], [57, 8, 1, false], [57, 8, 7, false], [3, 64, 63, true]] as const) {
    const w = planWindows(n, ctx, stride, bos);
    const scored = w.reduce((a, x) => a + x.end - x.scoreFrom, 0);
    t.equal(scored, bos ? n : n - 1, `n=${n} ctx=${ctx} stride=${stride}: every token scored once`);
    t.ok(w.every((x) => x.end - x.begin <= (bos ? ctx - 1 : ctx)));
  }
});

t.test('logProb is a float64 log-softmax', async (t) => {
  t.ok(Math.abs(logProb([0, 0, 0, 0], 2) - Math.log(0.25)) < 1e-15);
  t.ok(Math.abs(logProb([1000, 0], 0)) < 1e-15, 'stable for large logits');
  t.ok(Math.abs(logProb([Math.log(3), 0], 1) - Math.log(1 / 4)) < 1e-15);
});

t.test('exact perplexities on synthetic logits', async (t) => {
  const V = 50;
  const ids = Array.from({ length: 37 }, (_, i) => 3 + ((i * 7) % 40));
  // uniform logits: ppl == V
  const calls: number[][] = [];
  const uni = await evaluatePerplexity(fakeModel(V, 64, 1, () => new Float32Array(V), calls), ids, { ctx: 10, stride: 9 });
  t.ok(Math.abs(uni.ppl - V) < 1e-9, `uniform ppl ${uni.ppl}`);
  t.equal(uni.tokens, 37);
  t.equal(uni.windows, 5);
  t.ok(calls.every((c) => c[0] === 1 && c.length <= 10), 'BOS first, at most ctx tokens');
  t.equal(formatPplLine(uni), 'ppl 50.000 over 37 tokens');
  // a model that gives the true next token probability p: ppl == 1/p (needs the right row <-> target alignment)
  const p = 0.6;
  const hi = Math.log(p * (V - 1) / (1 - p));
  const oracle = (hist: number[], pos: number) => {
    const row = new Float32Array(V);
    // the text position of the next token: history holds BOS + text[begin..]; find it by matching
    const next = nextOf.get(hist.slice(Math.max(0, pos - 3), pos + 1).join(','));
    if (next !== undefined) row[next] = hi;
    return row;
  };
  const nextOf = new Map<string, number>();
  const withBos = [1, ...ids];
  for (let i = 0; i + 1 < withBos.length; i++) nextOf.set(withBos.slice(Math.max(0, i - 3), i + 1).join(','), withBos[i + 1]!);
  // single window (ctx covers everything): exact
  const one = await evaluatePerplexity(fakeModel(V, 64, 1, oracle), ids, { ctx: 64 });
  t.ok(Math.abs(one.ppl - 1 / Math.fround(p) ) < 1e-4, `oracle ppl ${one.ppl} ~ ${1 / p}`);
  // no BOS: first token not scored
  const nb = await evaluatePerplexity(fakeModel(V, 64, null, () => new Float32Array(V)), ids, { ctx: 8 });
  t.equal(nb.tokens, 36);
  t.equal(nb.stride, 7);
  // argument errors
  await t.rejects(evaluatePerplexity(fakeModel(V, 16, 1, () => new Float32Array(V)), ids, { ctx: 32 }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(evaluatePerplexity(fakeModel(V, 16, 1, () => new Float32Array(V)), ids, { ctx: 8, stride: 8 }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(evaluatePerplexity(fakeModel(V, 16, 1, () => new Float32Array(V)), [1, 2, 99], { ctx: 8 }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(evaluatePerplexity(fakeModel(V, 16, 1, () => new Float32Array(V)), [], {}), { code: 'SHOAL_ERR_INVALID_ARG' });
});

/** A Model over the TypeScript reference forward: eval of a whole window from an empty cache. */
function referenceModel(dir: string): Model {
  const m = loadReferenceModel(dir);
  const V = m.shape.vocabSize;
  return {
    info: info(V, m.shape.maxPositionEmbeddings, m.shape.bosTokenId),
    tokenizer: null,
    createSession(): Session {
      let pos = 0;
      const s = {
        get position() { return pos; },
        async eval(tokens: ArrayLike<number>, o?: { allLogits?: boolean }) {
          if (pos !== 0 || !o?.allLogits) throw new Error('the reference adapter evaluates whole windows only');
          const rows = referenceForward(m, Array.from(tokens));
          pos = rows.length;
          const out = new Float32Array(rows.length * V);
          rows.forEach((r, i) => out.set(r, i * V));
          return out;
        },
        reset() { pos = 0; },
        dispose() {},
      };
      return s as unknown as Session;
    },
    dispose() {},
  };
}

t.test('stories260K: RTN g32 perplexity within 10% of F32 (TypeScript reference forward)', {
  skip: hasShared('data', 'tinystories-valid-sample', 'tinystories_val.txt') ? false : 'shared TinyStories sample not found (set SHOAL_SHARED)',
}, async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shoal-ppl-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const q = path.join(dir, 'q32');
  quantizeModel({ model: storiesPath(), out: q, groupSize: 32 });
  const tok = await HfModelTokenizer.load(storiesPath(), { bos: 1, eos: [2] });
  const text = readFileSync(sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt'), 'utf8').slice(0, 2500);
  const ids = tok!.encode(text, { addSpecialTokens: false });
  t.ok(ids.length > 300 && ids[0] !== 1);
  const run = (modelDir: string) => evaluatePerplexity(referenceModel(modelDir), ids, { ctx: 256 });
  const f32 = await run(storiesPath());
  const int4 = await run(q);
  t.comment(`TS reference, ${f32.tokens} tokens, ctx 256: F32 ppl ${f32.ppl.toFixed(4)}, RTN INT4 g32 ppl ${int4.ppl.toFixed(4)} (${((int4.ppl / f32.ppl - 1) * 100).toFixed(2)}%)`);
  t.equal(f32.tokens, ids.length);
  t.ok(f32.ppl > 1 && f32.ppl < 50, 'a trained model on in-domain text');
  t.ok(Math.abs(int4.ppl / f32.ppl - 1) < 0.10, 'INT4 within 10% of F32');
});
