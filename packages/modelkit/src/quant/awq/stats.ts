// awq/stats.ts — what AWQ's searches need from one layer's FP forward, gathered
// chunk by chunk (whole calibration blocks of seqlen tokens), so that no
// [T, F] activation of all calibration tokens is ever held:
//   - per-channel mean |x| of the inputs of q/k/v, o, gate/up and down (all tokens)
//   - the input Gram matrices C = XᵀX / T of o_proj (v→o group) and down_proj
//     (up→down group), all tokens, f64 sums in the backend's hessian op (its
//     panel products in ctx.precision)
//   - the inputs and block outputs of the search blocks (a seeded subsample of
//     whole blocks) for the groups whose loss goes through attention or SiLU
//   - the clip search's sampled rows (and v_proj's attention-averaged inputs)
//   - the layer input and FP layer output of the search blocks (the report's output MSE)
//   - with req.propagate: the FP layer output of every token, written over x
//     (the next layer's calibration input, as AutoAWQ and llm-awq pass it on)
// Without req.propagate down_proj runs on the search blocks only: nothing else
// needs its output of the FP layer (mean |m| and the Gram are of its input),
// and over all tokens it is 2·T·D·F FLOP (1.5 TFLOP per TinyLlama layer at 65,536 tokens).
import { add, backendOps, linear, rmsnorm, type Precision } from './ops.js';
import { attentionBlock, chunkBlocks, forEachChunk, type Ctx, type LayerWeights } from './layer.js';
import { attentionAveragedInputs } from './search.js';
import { mulberry32 } from '../seeded-random.js';

/** Rows gathered before each ops.hessian call (its mirror step costs K² per call). */
const GRAM_ROWS = 4096;

/** Accumulates C += XᵀX / T through ops.hessian, staging rows so each call gets ~GRAM_ROWS of them. */
class GramAccumulator {
  readonly H: Float64Array;
  private stage: Float32Array | null = null;
  private n = 0;
  constructor(private readonly K: number, private readonly T: number, private readonly cap: number, private readonly precision: Precision) {
    this.H = new Float64Array(K * K);
  }
  async add(x: Float32Array, rows: number): Promise<void> {
    if (rows >= this.cap) {
      await this.flush();
      await backendOps().hessian(x, rows, this.K, this.H, 1 / this.T, this.precision);
      return;
    }
    if (this.n + rows > this.cap) await this.flush();
    this.stage ??= new Float32Array(this.cap * this.K);
    this.stage.set(x.subarray(0, rows * this.K), this.n * this.K);
    this.n += rows;
  }
  async flush(): Promise<void> {
    if (this.n === 0) return;
    await backendOps().hessian(this.stage!.subarray(0, this.n * this.K), this.n, this.K, this.H, 1 / this.T, this.precision);
    this.n = 0;
  }
  /** C as f32 (the candidates' GEMM operand); drops the staging buffer. */
  async result(): Promise<Float32Array> {
    await this.flush();
    this.stage = null;
    return Float32Array.from(this.H);
  }
}

export const SEARCH_SEED = 0x5eed;

/**
 * The calibration blocks the α candidates of the nonlinear groups are evaluated
 * on: ⌈searchTokens / seqlen⌉ of `samples` blocks, drawn without replacement
 * with a fixed seed, ascending; all blocks when that covers them.
 */
export function searchBlocks(samples: number, seqlen: number, searchTokens: number, seed = SEARCH_SEED): number[] {
  const n = Math.min(samples, Math.ceil(searchTokens / seqlen));
  const idx = Array.from({ length: samples }, (_, i) => i);
  if (n >= samples) return idx;
  const rnd = mulberry32(seed);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(rnd() * (samples - i));
    [idx[i], idx[j]] = [idx[j]!, idx[i]!];
  }
  return idx.slice(0, n).sort((a, b) => a - b);
}

/** acc[k] += Σ_m |x[m, k]| */
function addAbsColumns(acc: Float64Array, x: Float32Array, M: number, K: number): void {
  for (let m = 0; m < M; m++) {
    const o = m * K;
    for (let k = 0; k < K; k++) acc[k] = acc[k]! + Math.abs(x[o + k]!);
  }
}

export interface SearchSet {
  /** tokens in the search blocks */
  T: number;
  x: Float32Array;       // [T, D] layer input
  h: Float32Array;       // [T, D] input of q/k/v
  attnOut: Float32Array; // [T, D]
  h2: Float32Array;      // [T, D] input of gate/up
  mlpOut: Float32Array;  // [T, D]
}

export interface ClipRows {
  h: Float32Array;  // [R, D]
  a: Float32Array;  // [R, qd]
  h2: Float32Array; // [R, D]
  m: Float32Array;  // [R, F]
  /** per kv head, [R · heads/kvHeads, D] (only when asked) */
  vAvg: Float32Array[] | null;
}

export interface LayerStats {
  meanH: Float64Array;
  meanA: Float64Array;
  meanH2: Float64Array;
  meanM: Float64Array;
  /** C = AᵀA / T [qd, qd] of o_proj's input (null: not asked) */
  gramA: Float32Array | null;
  /** C = MᵀM / T [F, F] of down_proj's input (null: not asked) */
  gramM: Float32Array | null;
  search: SearchSet;
  clip: ClipRows;
  /** FP layer output of the search blocks [search.T, D] (the report's output MSE) */
  searchOut: Float32Array;
}

export interface StatsRequest {
  /** blocks (of ctx.seqlen tokens) for the search set */
  searchBlocks: readonly number[];
  /** token rows (ascending) for the clip search */
  clipRows: readonly number[];
  gramA: boolean;
  gramM: boolean;
  vAvg: boolean;
  /** write the FP layer's output over x, chunk by chunk (x is not read again afterwards) */
  propagate: boolean;
}

/** The FP forward of layer lw over x [T, D], chunk by chunk, reduced to what the searches need. */
export async function layerStats(ctx: Ctx, lw: LayerWeights, x: Float32Array, req: StatsRequest): Promise<LayerStats> {
  const s = ctx.shape;
  const D = s.hiddenSize;
  const qd = s.heads * s.headDim;
  const F = ctx.F;
  const T = ctx.T;
  const L = ctx.seqlen;
  const perKv = s.heads / s.kvHeads;
  const sums = { h: new Float64Array(D), a: new Float64Array(qd), h2: new Float64Array(D), m: new Float64Array(F) };
  const gramRows = Math.max(1, Math.floor(GRAM_ROWS / (chunkBlocks(L) * L))) * chunkBlocks(L) * L;
  const Ha = req.gramA ? new GramAccumulator(qd, T, gramRows, ctx.precision) : null;
  const Hm = req.gramM ? new GramAccumulator(F, T, gramRows, ctx.precision) : null;
  const ST = req.searchBlocks.length * L;
  const search: SearchSet = { T: ST, x: new Float32Array(ST * D), h: new Float32Array(ST * D), attnOut: new Float32Array(ST * D), h2: new Float32Array(ST * D), mlpOut: new Float32Array(ST * D) };
  const R = req.clipRows.length;
  const clip: ClipRows = {
    h: new Float32Array(R * D), a: new Float32Array(R * qd), h2: new Float32Array(R * D), m: new Float32Array(R * F),
    vAvg: req.vAvg ? Array.from({ length: s.kvHeads }, () => new Float32Array(R * perKv * D)) : null,
  };
  const searchOut = new Float32Array(ST * D);
  const eps = s.rmsNormEps;
  let ci = 0; // next clip row
  await forEachChunk(ctx, x, async (ctxc, xc, t0) => {
    const n = ctxc.T;
    // the FP layer up to down_proj's input (forwardLayer without down_proj)
    const h = rmsnorm(xc, n, D, lw.attnNorm, eps);
    const { a, out: attnOut } = await attentionBlock(ctxc, h, lw.w['self_attn.q_proj'], lw.w['self_attn.k_proj'], lw.w['self_attn.v_proj'], lw);
    const x1 = add(xc, attnOut);
    const h2 = rmsnorm(x1, n, D, lw.ffnNorm, eps);
    const m = await linear(h2, n, lw.w['mlp.gate_proj'], F, D, null, ctx.precision);
    await backendOps().siluMul(m, await linear(h2, n, lw.w['mlp.up_proj'], F, D, null, ctx.precision));
    const acts = { h, a, h2, m };
    addAbsColumns(sums.h, acts.h, n, D);
    addAbsColumns(sums.a, acts.a, n, qd);
    addAbsColumns(sums.h2, acts.h2, n, D);
    addAbsColumns(sums.m, acts.m, n, F);
    if (Ha) await Ha.add(acts.a, n);
    if (Hm) await Hm.add(acts.m, n);
    // down_proj over the whole chunk only when its output goes on to the next layer
    const mlpAll = req.propagate ? await linear(m, n, lw.w['mlp.down_proj'], D, F, null, ctx.precision) : null;
    for (let i = 0; i < req.searchBlocks.length; i++) {
      const bt = req.searchBlocks[i]! * L;
      if (bt < t0 || bt >= t0 + n) continue;
      const src = (bt - t0) * D;
      const dst = i * L * D;
      const mlpOut = mlpAll ? mlpAll.subarray(src, src + L * D)
        : await linear(m.subarray((bt - t0) * F, (bt - t0 + L) * F), L, lw.w['mlp.down_proj'], D, F, null, ctx.precision);
      search.x.set(xc.subarray(src, src + L * D), dst);
      search.h.set(h.subarray(src, src + L * D), dst);
      search.attnOut.set(attnOut.subarray(src, src + L * D), dst);
      search.h2.set(h2.subarray(src, src + L * D), dst);
      search.mlpOut.set(mlpOut, dst);
      searchOut.set(add(x1.subarray(src, src + L * D), mlpOut), dst);
    }
    if (mlpAll) {
      for (let i = 0; i < xc.length; i++) xc[i] = x1[i]! + mlpAll[i]!;
    }
    const local: number[] = [];
    const first = ci;
    while (ci < R && req.clipRows[ci]! < t0 + n) local.push(req.clipRows[ci++]! - t0);
    local.forEach((r, j) => {
      const i = first + j;
      clip.h.set(acts.h.subarray(r * D, (r + 1) * D), i * D);
      clip.a.set(acts.a.subarray(r * qd, (r + 1) * qd), i * qd);
      clip.h2.set(acts.h2.subarray(r * D, (r + 1) * D), i * D);
      clip.m.set(acts.m.subarray(r * F, (r + 1) * F), i * F);
    });
    if (clip.vAvg && local.length) {
      const avg = await attentionAveragedInputs(ctxc, acts.h, lw, local);
      avg.forEach((v, kh) => clip.vAvg![kh]!.set(v, first * perKv * D));
    }
  });
  const mean = (v: Float64Array) => v.map((x) => x / T);
  return {
    meanH: mean(sums.h), meanA: mean(sums.a), meanH2: mean(sums.h2), meanM: mean(sums.m),
    gramA: Ha ? await Ha.result() : null,
    gramM: Hm ? await Hm.result() : null,
    search, clip, searchOut,
  };
}
