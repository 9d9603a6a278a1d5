// awq/layer.ts — one decoder layer as the AWQ search sees it: its weights, the
// search context, and the FP forward batched over blocks of seqlen tokens (the
// inputs of every linear and the reference outputs of attention and MLP).
import { linearDims, type LinearKind, type ModelShape } from '../../arch/model-shapes.js';
import { add, backendOps, linear, rmsnorm, type Precision } from './ops.js';

export const N_GRID = 20;
/** Spacing of the coarse α pass of --alpha-search coarse-fine (search.ts fineNeighbours). */
export const COARSE_STEP = 4;
/**
 * How the α grid is searched: every point (llm-awq, AutoAWQ), or every
 * COARSE_STEP-th point and then the neighbours of the best (the same α when
 * the loss is unimodal over the grid; 11 instead of 20 candidates).
 */
export type AlphaSearch = 'grid' | 'coarse-fine';
export const CLIP_STEPS = 10; // i = 0..9: shrink up to 45 % (llm-awq max_shrink 0.5, n_grid 20)

export interface LayerWeights {
  attnNorm: Float32Array;
  ffnNorm: Float32Array;
  w: Record<LinearKind, Float32Array>;
  bias: Partial<Record<LinearKind, Float32Array>>;
}

export interface Ctx {
  shape: ModelShape;
  /** FFN size as processed (padded when padFfn) */
  F: number;
  T: number;
  seqlen: number;
  bits: number;
  G: number;
  invFreq: Float32Array;
  quantized: Set<LinearKind>;
  duo: boolean;
  alphaSearch: AlphaSearch;
  /** products of the layer forwards, Gram panels and candidate losses (AwqQuantizeOptions.precision) */
  precision: Precision;
  clipTokens: number;
  /** v_proj's clip error measured after attention averaging (attentionAveragedInputs). */
  clipVAttention: boolean;
  /** calibration blocks the α candidates of q,k,v and gate,up are evaluated on (stats.searchBlocks) */
  searchBlocks: readonly number[];
}

export function dims(ctx: { shape: ModelShape; F: number }, kind: LinearKind): { out: number; in: number } {
  const d = linearDims({ ...ctx.shape, intermediateSize: ctx.F }, kind);
  return { out: d.out, in: d.in };
}

// ---------------------------------------------------------------------------
// layer forward (batched over blocks of seqlen tokens)
// ---------------------------------------------------------------------------

/**
 * Calibration blocks per chunk of the streamed forward passes (≈ 1024 tokens):
 * a chunk's largest buffers ([1024, 5632] f32 for TinyLlama's MLP, 23 MiB) stay
 * under glibc's 32 MiB mmap threshold, so they are reused from the heap instead
 * of being mapped and zero-faulted anew for every chunk and candidate.
 */
export function chunkBlocks(seqlen: number): number {
  return Math.max(1, Math.floor(1024 / seqlen));
}

/** Runs fn on each chunk of whole blocks of x [T, D]: ctx with T = chunk tokens, the chunk's view and first token. */
export async function forEachChunk(ctx: Ctx, x: Float32Array, fn: (ctxc: Ctx, xc: Float32Array, t0: number) => Promise<void>): Promise<void> {
  const D = ctx.shape.hiddenSize;
  const step = chunkBlocks(ctx.seqlen) * ctx.seqlen;
  for (let t0 = 0; t0 < ctx.T; t0 += step) {
    const n = Math.min(step, ctx.T - t0);
    await fn({ ...ctx, T: n }, x.subarray(t0 * D, (t0 + n) * D), t0);
  }
}


export async function attentionBlock(ctx: Ctx, h: Float32Array, wq: Float32Array, wk: Float32Array, wv: Float32Array,
  lw: LayerWeights): Promise<{ a: Float32Array; out: Float32Array }> {
  const s = ctx.shape;
  const D = s.hiddenSize;
  const qd = s.heads * s.headDim;
  const kvd = s.kvHeads * s.headDim;
  const T = ctx.T;
  const p = ctx.precision;
  const q = await linear(h, T, wq, qd, D, lw.bias['self_attn.q_proj'] ?? null, p);
  const k = await linear(h, T, wk, kvd, D, lw.bias['self_attn.k_proj'] ?? null, p);
  const v = await linear(h, T, wv, kvd, D, lw.bias['self_attn.v_proj'] ?? null, p);
  const a = await backendOps().attention(q, k, v, T, ctx.seqlen, s.heads, s.kvHeads, s.headDim, ctx.invFreq);
  const out = await linear(a, T, lw.w['self_attn.o_proj'], D, qd, lw.bias['self_attn.o_proj'] ?? null, p);
  return { a, out };
}

export async function mlpBlock(ctx: Ctx, h2: Float32Array, wg: Float32Array, wu: Float32Array, wd: Float32Array): Promise<{ m: Float32Array; out: Float32Array }> {
  const D = ctx.shape.hiddenSize;
  const g = await linear(h2, ctx.T, wg, ctx.F, D, null, ctx.precision);
  const u = await linear(h2, ctx.T, wu, ctx.F, D, null, ctx.precision);
  await backendOps().siluMul(g, u);
  const m = g; // silu(gate)·up
  const out = await linear(m, ctx.T, wd, D, ctx.F, null, ctx.precision);
  return { m, out };
}

export interface LayerActs {
  h: Float32Array;      // input of q/k/v
  a: Float32Array;      // input of o
  attnOut: Float32Array;
  h2: Float32Array;     // input of gate/up
  m: Float32Array;      // input of down
  mlpOut: Float32Array;
  out: Float32Array;    // layer output
}

export async function forwardLayer(ctx: Ctx, lw: LayerWeights, x: Float32Array): Promise<LayerActs> {
  const D = ctx.shape.hiddenSize;
  const eps = ctx.shape.rmsNormEps;
  const h = rmsnorm(x, ctx.T, D, lw.attnNorm, eps);
  const { a, out: attnOut } = await attentionBlock(ctx, h, lw.w['self_attn.q_proj'], lw.w['self_attn.k_proj'], lw.w['self_attn.v_proj'], lw);
  const x1 = add(x, attnOut);
  const h2 = rmsnorm(x1, ctx.T, D, lw.ffnNorm, eps);
  const { m, out: mlpOut } = await mlpBlock(ctx, h2, lw.w['mlp.gate_proj'], lw.w['mlp.up_proj'], lw.w['mlp.down_proj']);
  return { h, a, attnOut, h2, m, mlpOut, out: add(x1, mlpOut) };
}

