// awq/ops.ts — the dense math of the quantizer. The heavy products (calibration
// activations × weights, attention) run in the engine's backend through the
// addon's `ops` entries (addon-ops.cpp, on a worker thread); the cheap
// element-wise parts (RMSNorm, SiLU, scaling, errors) run here.
import { backendOps } from '@shoal/engine';

export { backendOps };

/** Precision of the products: f32, or bf16 inputs with f32 sums (engine ops.matmul). */
export type Precision = 'f32' | 'bf16';

/** y [M, N] = x [M, K] · wᵀ (+ bias), w [N, K]. */
export async function linear(x: Float32Array, M: number, w: Float32Array, N: number, K: number, bias: Float32Array | null = null,
  precision: Precision = 'f32'): Promise<Float32Array> {
  const y = await backendOps().matmul(x, M, w, N, K, precision);
  if (bias) {
    for (let m = 0; m < M; m++) {
      const o = m * N;
      for (let n = 0; n < N; n++) y[o + n] = y[o + n]! + bias[n]!;
    }
  }
  return y;
}

/** RMSNorm per row: x / sqrt(mean(x²) + eps) · g. */
export function rmsnorm(x: Float32Array, M: number, D: number, g: Float32Array, eps: number): Float32Array {
  const out = new Float32Array(M * D);
  for (let m = 0; m < M; m++) {
    const o = m * D;
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[o + i]! * x[o + i]!;
    const r = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) out[o + i] = x[o + i]! * r * g[i]!;
  }
  return out;
}

/** gate ← silu(gate) · up, in place. */
export function siluMul(gate: Float32Array, up: Float32Array): Float32Array {
  for (let i = 0; i < gate.length; i++) {
    const g = gate[i]!;
    gate[i] = (g / (1 + Math.exp(-g))) * up[i]!;
  }
  return gate;
}

/** a + b into a new array. */
export function add(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]! + b[i]!;
  return out;
}

/** Mean squared difference (float64 accumulation). */
export function mse(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s / a.length;
}

/** Per-column mean |x| of x [M, K] (float64). */
export function meanAbsColumns(x: Float32Array, M: number, K: number): Float64Array {
  const s = new Float64Array(K);
  for (let m = 0; m < M; m++) {
    const o = m * K;
    for (let k = 0; k < K; k++) s[k] = s[k]! + Math.abs(x[o + k]!);
  }
  for (let k = 0; k < K; k++) s[k] = s[k]! / M;
  return s;
}

/** w [N, K] with every column k multiplied by s[k], into a new array. */
export function scaleColumns(w: Float32Array, N: number, K: number, s: ArrayLike<number>): Float32Array {
  const out = new Float32Array(N * K);
  for (let n = 0; n < N; n++) {
    const o = n * K;
    for (let k = 0; k < K; k++) out[o + k] = w[o + k]! * s[k]!;
  }
  return out;
}

/** In place: every column k of w [N, K] divided by s[k]. */
export function divColumnsInPlace(w: Float32Array, N: number, K: number, s: ArrayLike<number>): void {
  for (let n = 0; n < N; n++) {
    const o = n * K;
    for (let k = 0; k < K; k++) w[o + k] = w[o + k]! / s[k]!;
  }
}

/** In place: every row n of w [N, K] divided by s[n]. */
export function divRowsInPlace(w: Float32Array, N: number, K: number, s: ArrayLike<number>): void {
  for (let n = 0; n < N; n++) {
    const o = n * K;
    const d = s[n]!;
    for (let k = 0; k < K; k++) w[o + k] = w[o + k]! / d;
  }
}
