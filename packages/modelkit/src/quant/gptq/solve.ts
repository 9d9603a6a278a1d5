// gptq/solve.ts — one linear through the native GPTQ solver (native/addon/gptq.h:
// Cholesky of the inverse Hessian, column-by-column quantization with error
// feedback in lazy blocks, group grids, act order) and the Hessian accumulation
// (ops.hessian: XᵀX through the backend GEMM, f64 sums).
import { backendOps } from '@shoal/engine';
import type { GptqQuantized } from '../../formats/gptq.js';
import { f16ToF32 } from '../../io/dtypes.js';
import { ShoalError } from '@shoal/common';

export interface GptqSolveOptions {
  bits: number;
  /** resolved group size (K for one group) */
  group: number;
  /** fraction of mean(diag H) added to the diagonal (GPTQ percdamp, default 0.01) */
  damp: number;
  actOrder: boolean;
  staticGroups: boolean;
  sym: boolean;
  /** 1 for checkpoint_format gptq (zeros stored minus one) */
  minZero: 0 | 1;
  /** lazy-batch block size (default 128) */
  block?: number;
  /** also measure the quadratic errors of GPTQ and RTN (costs about as much as the solve) */
  errors?: boolean;
}

export interface GptqLinearResult {
  ql: GptqQuantized;
  gIdx: Int32Array;
  /** dequantized weights [N, K] (what the next sub-layers see) */
  deq: Float32Array;
  /** GPTQ's Σ (w − q)²/d² */
  loss: number;
  /** inputs never activated (diag H = 0; their weights are zero) */
  dead: number;
  /** with errors: ‖(Ŵ − W)X‖² / ‖WX‖² for GPTQ and for RTN on the same grid */
  relErrGptq?: number;
  relErrRtn?: number;
}

/** H [K, K] += (2 / tokens) · XᵀX for x [rows, K]: GPTQ's H = 2XXᵀ, averaged over `tokens`. */
export async function accumulateHessian(H: Float64Array, x: Float32Array, rows: number, K: number, tokens: number): Promise<void> {
  await backendOps().hessian(x, rows, K, H, 2 / tokens);
}

/** GPTQ of w [N, K] (row-major, HF orientation) with Hessian H [K, K]; H is overwritten. */
export async function gptqLinear(w: Float32Array, N: number, K: number, H: Float64Array, o: GptqSolveOptions): Promise<GptqLinearResult> {
  let r;
  try {
    r = await backendOps().gptq(w, N, K, H, {
      bits: o.bits, group: o.group, damp: o.damp, actOrder: o.actOrder, staticGroups: o.staticGroups, sym: o.sym,
      minZero: o.minZero, block: o.block ?? 128, errors: o.errors ?? false,
    });
  } catch (err) {
    const e = err as Error & { code?: string };
    throw new ShoalError(e.code === 'SHOAL_ERR_OOM' ? 'SHOAL_ERR_OOM' : 'SHOAL_ERR_NUMERIC', `GPTQ: ${e.message}`);
  }
  const ql: GptqQuantized = { K, N, G: o.group, bits: o.bits, sym: o.sym, q: r.q, zeros: r.zeros, scales: r.scales };
  const deq = new Float32Array(N * K);
  const ng = K / o.group;
  const s = new Float32Array(ng * N);
  for (let i = 0; i < s.length; i++) s[i] = f16ToF32(r.scales[i]!);
  for (let k = 0; k < K; k++) {
    const g = r.gIdx[k]!;
    const qo = k * N;
    const go = g * N;
    for (let n = 0; n < N; n++) deq[n * K + k] = (r.q[qo + n]! - r.zeros[go + n]!) * s[go + n]!;
  }
  const res: GptqLinearResult = { ql, gIdx: r.gIdx, deq, loss: r.loss, dead: r.dead };
  if (r.errGptq !== undefined && r.norm !== undefined && r.norm > 0) {
    res.relErrGptq = r.errGptq / r.norm;
    res.relErrRtn = r.errRtn! / r.norm;
  }
  return res;
}
