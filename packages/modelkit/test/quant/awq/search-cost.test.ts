// The cheaper AWQ scale search (issue 19): the v→o / up→down candidate losses
// from the input Gram matrix equal the token-by-token output MSE; the streamed,
// chunked FP pass gives the same statistics as one forward over all tokens;
// the search-block subsample is fixed, seeded and whole-block.
import t from 'tap';
import { backendOps } from '@shoal/engine';
import type { LinearKind, ModelShape } from '../../../src/arch/model-shapes.js';
import { LINEAR_KINDS } from '../../../src/arch/model-shapes.js';
import { attentionBlock, chunkBlocks, forwardLayer, type Ctx, type LayerWeights } from '../../../src/quant/awq/layer.js';
import { meanAbsColumns, mse } from '../../../src/quant/awq/ops.js';
import { attentionAveragedInputs, forwardLoss, gramLoss, searchScale, type CandidateLoss } from '../../../src/quant/awq/search.js';
import { layerStats, searchBlocks } from '../../../src/quant/awq/stats.js';
import { AUTO_BF16_MIN_HIDDEN, autoBf16, checkAwqOptions } from '../../../src/quant/awq/quantize-awq.js';
import { rand } from '../helpers.js';

/** mean_{t,n} (x_t · (ŵ_n − w_n))², token by token, in float64. */
function tokenLoss(x: Float32Array, T: number, w: Float32Array, N: number, K: number): CandidateLoss {
  return async ([wq]) => {
    let s = 0;
    for (let tk = 0; tk < T; tk++) {
      for (let n = 0; n < N; n++) {
        let y = 0;
        for (let k = 0; k < K; k++) y += x[tk * K + k]! * (wq![n * K + k]! - w[n * K + k]!);
        s += y * y;
      }
    }
    return s / (T * N);
  };
}

function recording(f: CandidateLoss, into: number[]): CandidateLoss {
  return async (ws) => {
    const l = await f(ws);
    into.push(l);
    return l;
  };
}

t.test('Gram-matrix candidate loss = token-by-token output MSE at every α, same α chosen', async (t) => {
  backendOps().init('cpu');
  for (const { T, N, K, G, bits, seed } of [{ T: 300, N: 24, K: 64, G: 16, bits: 4, seed: 1 }, { T: 97, N: 40, K: 96, G: 32, bits: 3, seed: 7 }]) {
    // activations with very different channel scales, as LLM inputs have (what AWQ exploits)
    const x = rand(T * K, seed);
    for (let tk = 0; tk < T; tk++) for (let k = 0; k < K; k++) x[tk * K + k] = x[tk * K + k]! * (k % 7 === 0 ? 20 : 1 + (k % 3));
    const w = rand(N * K, seed + 1);
    const H = new Float64Array(K * K);
    await backendOps().hessian(x, T, K, H, 1 / T);
    const C = Float32Array.from(H);
    const kind: LinearKind = 'mlp.down_proj';
    const ctx = { G, bits, duo: false, quantized: new Set([kind]) } as unknown as Ctx;
    const xMean = meanAbsColumns(x, T, K);
    const gl: number[] = [];
    const tl: number[] = [];
    const a = await searchScale(ctx, 'g', xMean, K, [{ kind, w, N }], recording(gramLoss(C, w, N, K), gl));
    const b = await searchScale(ctx, 't', xMean, K, [{ kind, w, N }], recording(tokenLoss(x, T, w, N, K), tl));
    t.equal(gl.length, 20);
    t.equal(tl.length, 20);
    let rel = 0;
    gl.forEach((l, i) => { rel = Math.max(rel, Math.abs(l - tl[i]!) / tl[i]!); });
    t.ok(rel < 2e-6, `T ${T}, ${N}×${K}, w${bits}g${G}: max relative loss difference ${rel.toExponential(2)}`);
    t.equal(a.report.alpha, b.report.alpha, `same α (${a.report.alpha})`);
    t.ok(Math.max(...tl) > 1.2 * Math.min(...tl), 'the losses differ across α (the test can tell the candidates apart)');
    t.same(Array.from(a.scales), Array.from(b.scales));
  }
});

t.test('search blocks: fixed seed, whole blocks, ascending, distinct; all blocks when the tokens cover them', async (t) => {
  const b = searchBlocks(128, 512, 4096);
  t.equal(b.length, 8);
  t.same(searchBlocks(128, 512, 4096), b, 'deterministic');
  t.same([...b].sort((x, y) => x - y), b);
  t.equal(new Set(b).size, 8);
  t.ok(b.every((i) => Number.isInteger(i) && i >= 0 && i < 128));
  t.notSame(b, [0, 1, 2, 3, 4, 5, 6, 7], 'a subsample over the whole calibration set, not its first blocks');
  t.equal(searchBlocks(128, 512, 4097).length, 9, 'rounded up to whole blocks');
  t.same(searchBlocks(6, 512, 4096), [0, 1, 2, 3, 4, 5]);
  t.same(searchBlocks(16, 512, 1), searchBlocks(16, 512, 512));
});

t.test('--search-tokens must be a positive integer (SHOAL_ERR_INVALID_ARG)', async (t) => {
  for (const v of [0, -5, 1.5, Number.NaN]) {
    t.throws(() => checkAwqOptions({ model: 'm', out: 'o', searchTokens: v }), { code: 'SHOAL_ERR_INVALID_ARG', message: /--search-tokens/ });
  }
  t.doesNotThrow(() => checkAwqOptions({ model: 'm', out: 'o', searchTokens: 512 }));
});

t.test('streamed FP pass (several chunks) = one forward over all tokens', async (t) => {
  backendOps().init('cpu');
  const D = 16;
  const F = 24;
  const heads = 4;
  const kvHeads = 2;
  const hd = 4;
  const seqlen = 512; // chunkBlocks = 2: nine blocks make five chunks, the Gram is staged over 8 blocks then 1
  t.equal(chunkBlocks(seqlen), 2);
  const samples = 9;
  const T = samples * seqlen;
  const shape = { hiddenSize: D, intermediateSize: F, heads, kvHeads, headDim: hd, rmsNormEps: 1e-5 } as ModelShape;
  const invFreq = new Float32Array(hd / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / hd));
  const w = {} as Record<LinearKind, Float32Array>;
  const sizes: Record<LinearKind, number> = {
    'self_attn.q_proj': heads * hd * D, 'self_attn.k_proj': kvHeads * hd * D, 'self_attn.v_proj': kvHeads * hd * D,
    'self_attn.o_proj': D * heads * hd, 'mlp.gate_proj': F * D, 'mlp.up_proj': F * D, 'mlp.down_proj': D * F,
  };
  LINEAR_KINDS.forEach((k, i) => { w[k] = rand(sizes[k], 10 + i).map((v) => v * 0.6); });
  const lw: LayerWeights = { attnNorm: rand(D, 3).map((v) => 1 + v), ffnNorm: rand(D, 4).map((v) => 1 + v), w, bias: {} };
  const ctx: Ctx = {
    shape, F, T, seqlen, bits: 4, G: 8, invFreq, quantized: new Set(LINEAR_KINDS), duo: false, alphaSearch: 'grid', precision: 'f32', clipTokens: 64, clipVAttention: true, searchBlocks: [0, 2],
  };
  const x = rand(T * D, 5);
  const clipRows = [0, 100, 511, 512, 1023, 1024, 1500, 3000, 4607];
  const st = await layerStats(ctx, lw, x, { searchBlocks: [0, 2], clipRows, gramA: true, gramM: true, vAvg: true, propagate: false });
  t.same(x, rand(T * D, 5), 'without propagate x is left as it was');
  const full = await forwardLayer(ctx, lw, x);
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, what: string, tol = 1e-5) => {
    let e = 0;
    let m = 0;
    for (let i = 0; i < b.length; i++) {
      e = Math.max(e, Math.abs(a[i]! - b[i]!));
      m = Math.max(m, Math.abs(b[i]!));
    }
    t.equal(a.length, b.length, `${what}: length`);
    t.ok(e <= tol * Math.max(1, m), `${what}: max diff ${e.toExponential(2)} (max ${m.toExponential(2)})`);
  };
  close(st.meanH, meanAbsColumns(full.h, T, D), 'mean |h|');
  close(st.meanA, meanAbsColumns(full.a, T, heads * hd), 'mean |a|');
  close(st.meanH2, meanAbsColumns(full.h2, T, D), 'mean |h2|');
  close(st.meanM, meanAbsColumns(full.m, T, F), 'mean |m|');
  const gram = (v: Float32Array, K: number) => {
    const g = new Float64Array(K * K);
    for (let tk = 0; tk < T; tk++) for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) g[i * K + j] = g[i * K + j]! + v[tk * K + i]! * v[tk * K + j]! / T;
    return g;
  };
  close(st.gramM!, gram(full.m, F), 'Gram of down_proj input');
  close(st.gramA!, gram(full.a, heads * hd), 'Gram of o_proj input');
  const blockRows = (v: Float32Array, K: number) => {
    const o = new Float32Array(2 * seqlen * K);
    o.set(v.subarray(0, seqlen * K), 0);
    o.set(v.subarray(2 * seqlen * K, 3 * seqlen * K), seqlen * K);
    return o;
  };
  t.equal(st.search.T, 2 * seqlen);
  close(st.search.h, blockRows(full.h, D), 'search h');
  close(st.search.attnOut, blockRows(full.attnOut, D), 'search attention output');
  close(st.search.h2, blockRows(full.h2, D), 'search h2');
  close(st.search.mlpOut, blockRows(full.mlpOut, D), 'search MLP output');
  const rows = (v: Float32Array, K: number) => {
    const o = new Float32Array(clipRows.length * K);
    clipRows.forEach((r, i) => o.set(v.subarray(r * K, (r + 1) * K), i * K));
    return o;
  };
  close(st.clip.h2, rows(full.h2, D), 'clip rows of h2');
  close(st.clip.m, rows(full.m, F), 'clip rows of m');
  close(st.clip.a, rows(full.a, heads * hd), 'clip rows of a');
  const avg = await attentionAveragedInputs(ctx, full.h, lw, clipRows);
  avg.forEach((v, kh) => close(st.clip.vAvg![kh]!, v, `attention-averaged v inputs, kv head ${kh}`));
  close(st.searchOut, blockRows(full.out, D), 'FP layer output of the search blocks');

  close(st.search.x, blockRows(x, D), 'search blocks: layer input');

  // propagate: the FP layer output over x (the next layer's input, AutoAWQ), the statistics unchanged
  const xp = x.slice();
  const stp = await layerStats(ctx, lw, xp, { searchBlocks: [0, 2], clipRows, gramA: true, gramM: true, vAvg: true, propagate: true });
  close(xp, full.out, 'propagate: x holds the FP layer output of every token');
  t.same(stp.meanM, st.meanM, 'propagate: the same mean |m|');
  t.same(stp.gramM, st.gramM, 'propagate: the same down_proj Gram');
  t.same(stp.searchOut, st.searchOut, 'propagate: the same search-block output');
  t.same(stp.search.x, st.search.x, 'propagate: the search blocks keep their input');

  // a candidate's loss over the search tokens, chunk by chunk = the MSE of one forward over them all
  const wq = w['self_attn.q_proj'].map((v, i) => v + (i % 5 === 0 ? 0.05 : 0));
  const ref = full.attnOut;
  const chunked = await forwardLoss(ctx, full.h, ref, async (c, xc, [a, b, v]) => (await attentionBlock(c, xc, a!, b!, v!, lw)).out)(
    [wq, w['self_attn.k_proj'], w['self_attn.v_proj']]);
  const whole = mse((await attentionBlock(ctx, full.h, wq, w['self_attn.k_proj'], w['self_attn.v_proj'], lw)).out, ref);
  t.ok(whole > 0 && Math.abs(chunked - whole) <= 1e-6 * whole, `chunked candidate loss ${chunked.toExponential(6)} = whole ${whole.toExponential(6)}`);
});

t.test('ops.hessian: upper-triangle panels mirrored = XᵀX over several row blocks and panels, accumulated on a symmetric H', async (t) => {
  backendOps().init('cpu');
  const K = 1030; // panels of 512: 512, 512, 6
  const rows = 2060; // row blocks of 2048: 2048, 12
  const x = rand(rows * K, 21);
  const H = new Float64Array(K * K);
  await backendOps().hessian(x.subarray(0, 1000 * K), 1000, K, H, 0.5);
  await backendOps().hessian(x.subarray(1000 * K), rows - 1000, K, H, 0.5);
  let asym = 0;
  for (let i = 0; i < K; i++) for (let j = 0; j < i; j++) asym = Math.max(asym, Math.abs(H[i * K + j]! - H[j * K + i]!));
  t.equal(asym, 0, 'exactly symmetric');
  let err = 0;
  const pick = (n: number) => Math.floor((n * 2654435761) % K);
  const pairs: Array<[number, number]> = [[0, 0], [K - 1, K - 1], [511, 512], [512, 1029], [1029, 0], [1024, 1025]];
  for (let n = 0; n < 400; n++) pairs.push([pick(n), pick(n + 7919)]);
  for (const [i, j] of pairs) {
    let s = 0;
    for (let r = 0; r < rows; r++) s += x[r * K + i]! * x[r * K + j]!;
    err = Math.max(err, Math.abs(H[i * K + j]! - 0.5 * s));
  }
  t.ok(err < 1e-4, `max |H − ½XᵀX| over ${pairs.length} entries ${err.toExponential(2)} (diagonal ≈ ${H[0]!.toFixed(1)})`);
});

t.test('checkAwqOptions: layerInput, precision and alphaSearch values', async (t) => {
  t.throws(() => checkAwqOptions({ model: 'm', out: 'o', layerInput: 'int4' as 'fp' }), { code: 'SHOAL_ERR_INVALID_ARG', message: /--layer-input int4; use fp or quantized/ });
  t.throws(() => checkAwqOptions({ model: 'm', out: 'o', precision: 'fp8' as 'f32' }), { code: 'SHOAL_ERR_INVALID_ARG', message: /--precision fp8; use auto, bf16 or f32/ });
  t.throws(() => checkAwqOptions({ model: 'm', out: 'o', alphaSearch: 'random' as 'grid' }), { code: 'SHOAL_ERR_INVALID_ARG', message: /--alpha-search random; use coarse-fine or grid/ });
  t.doesNotThrow(() => checkAwqOptions({ model: 'm', out: 'o', layerInput: 'quantized', precision: 'bf16', alphaSearch: 'grid' }));
});

t.test('--precision auto: bf16 only with native bf16 products and a hidden size of 1024 or more', async (t) => {
  t.equal(AUTO_BF16_MIN_HIDDEN, 1024);
  t.equal(autoBf16({ hiddenSize: 2048 }, true), true, 'TinyLlama shape, AVX512_BF16');
  t.equal(autoBf16({ hiddenSize: 2048 }, false), false, 'no native bf16: f32 (the emulation would be slower)');
  t.equal(autoBf16({ hiddenSize: 64 }, true), false, 'stories260K: f32');
  t.equal(autoBf16({ hiddenSize: 1023 }, true), false);
});
