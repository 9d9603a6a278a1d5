// formats/gptq.ts — GPTQ / EfficientQAT / AutoAWQ gemv(_fast) tensor packing and
// group-wise round-to-nearest on the grid of quant/grid.ts for 2, 3, 4 and 8 bits. Written from the
// format descriptions (docs/lowbit.md), independently of the native loader, so
// tests can build checkpoints from known integers and check the engine.
//
// Orientation: integer codes q are [K, N] (input-major, as GPTQ stores them);
// zeros and scales are [groups, N].
import { f16ToF32 } from '../io/dtypes.js';
import { getBits, groupParams, groupRange, putBits, quantizeCode, type GridSpec } from '../quant/grid.js';
import { ShoalError } from '@shoal/common';

export const GPTQ_BITS: readonly number[] = [2, 3, 4, 8];

function checkBits(bits: number): void {
  if (!GPTQ_BITS.includes(bits)) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `bits ${bits} is not supported; use 2, 3, 4 or 8`);
}

/**
 * GPTQ qweight: codes [K, N] → int32 [ceil(K·b/32), N]; column n is an
 * LSB-first bit stream of q[0, n], q[1, n], … (3-bit values straddle words:
 * 32 values fill exactly 3 words, as AutoGPTQ packs them).
 */
export function packGptqWeight(q: ArrayLike<number>, K: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const rows = Math.ceil((K * bits) / 32);
  const out = new Uint32Array(rows * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) putBits(out, n, N, k * bits, bits, q[k * N + n]!);
  return new Int32Array(out.buffer);
}

export function unpackGptqWeight(qweight: ArrayLike<number>, K: number, N: number, bits: number): Uint8Array {
  const out = new Uint8Array(K * N);
  for (let k = 0; k < K; k++) for (let n = 0; n < N; n++) out[k * N + n] = getBits(qweight, n, N, k * bits, bits);
  return out;
}

/** GPTQ qzeros: zeros [groups, N] (already minus one for checkpoint_format gptq) → int32 [groups, ceil(N·b/32)]. */
export function packGptqZeros(z: ArrayLike<number>, groups: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const W = Math.ceil((N * bits) / 32);
  const out = new Uint32Array(groups * W);
  for (let g = 0; g < groups; g++) for (let n = 0; n < N; n++) putBits(out, g * W, 1, n * bits, bits, z[g * N + n]! & ((1 << bits) - 1));
  return new Int32Array(out.buffer);
}

export function unpackGptqZeros(qzeros: ArrayLike<number>, groups: number, N: number, bits: number): Uint8Array {
  const W = Math.ceil((N * bits) / 32);
  const out = new Uint8Array(groups * N);
  for (let g = 0; g < groups; g++) for (let n = 0; n < N; n++) out[g * N + n] = getBits(qzeros, g * W, 1, n * bits, bits);
  return out;
}

/** EfficientQAT native qweight: floor(32/b) whole values per word along K → int32 [ceil(K/per), N]. */
export function packEqatWeight(q: ArrayLike<number>, K: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const per = Math.floor(32 / bits);
  const out = new Uint32Array(Math.ceil(K / per) * N);
  for (let k = 0; k < K; k++) {
    const bit = 32 * Math.floor(k / per) + bits * (k % per);
    for (let n = 0; n < N; n++) putBits(out, n, N, bit, bits, q[k * N + n]!);
  }
  return new Int32Array(out.buffer);
}

/** EfficientQAT native qzeros: floor(32/b) values per word along N → int32 [groups, ceil(N/per)]. */
export function packEqatZeros(z: ArrayLike<number>, groups: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const per = Math.floor(32 / bits);
  const W = Math.ceil(N / per);
  const out = new Uint32Array(groups * W);
  for (let g = 0; g < groups; g++) {
    for (let n = 0; n < N; n++) putBits(out, g * W, 1, 32 * Math.floor(n / per) + bits * (n % per), bits, z[g * N + n]!);
  }
  return new Int32Array(out.buffer);
}

/** AutoAWQ gemv/gemv_fast zero-point width W (calculate_zeros_width). */
export function awqZerosWidth(K: number, G: number): number {
  const mult = G >= 128 ? 1 : G === 64 ? 2 : G === 32 ? 4 : 0;
  if (mult === 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `AWQ gemv group size ${G} is not supported (32, 64 or >= 128)`);
  const base = Math.ceil(K / G / 8);
  return Math.ceil(base / mult) * mult;
}

/** AutoAWQ gemv: codes [K, N] → qweight int32 [N, K/8] (nibble i of word c = input 8c + i), zeros [groups, N] → int32 [N, W]. */
export function packAwqGemv(q: ArrayLike<number>, z: ArrayLike<number>, K: number, N: number, G: number): { qweight: Int32Array; qzeros: Int32Array; W: number } {
  const W = awqZerosWidth(K, G);
  const qw = new Uint32Array(N * (K / 8));
  const qz = new Uint32Array(N * W);
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) putBits(qw, n * (K / 8), 1, 4 * k, 4, q[k * N + n]!);
    for (let g = 0; g < K / G; g++) putBits(qz, n * W, 1, 4 * g, 4, z[g * N + n]!);
  }
  return { qweight: new Int32Array(qw.buffer), qzeros: new Int32Array(qz.buffer), W };
}

/**
 * AutoAWQ gemv_fast qweight (pack_intweight, interleave 4, kstride 64): codes
 * [K, N] → int16 [N/4, K]. Within each 32 inputs, input 8d + 2c + e moves to
 * position 8c + 4e + d; then 4 rows are interleaved per 64 inputs, 4 nibbles
 * per int16.
 */
export function packAwqGemvFast(q: ArrayLike<number>, K: number, N: number): Int16Array {
  if (K % 64 !== 0 || N % 4 !== 0) throw new ShoalError('SHOAL_ERR_SHAPE', `gemv_fast needs in_features % 64 == 0 and out_features % 4 == 0, got [${N}, ${K}]`);
  const out = new Uint16Array((N / 4) * K);
  for (let n = 0; n < N; n++) {
    const i = n >> 2;
    const r = n & 3;
    for (let k = 0; k < K; k++) {
      const t = k & 31;
      const d = t >> 3;
      const c = (t & 7) >> 1;
      const e = t & 1;
      const P = (k & ~31) + 8 * c + 4 * e + d; // position after the two in-block shuffles
      const f = r * 64 + (P & 63);            // flat index inside the (4 rows × 64) interleave block
      const idx = i * K + (P & ~63) + (f >> 2);
      out[idx] = (out[idx]! | (q[k * N + n]! << (4 * (f & 3)))) & 0xffff;
    }
  }
  return new Int16Array(out.buffer);
}

export interface GptqQuantized {
  K: number;
  N: number;
  G: number;        // resolved group size (K for group -1)
  bits: number;
  sym: boolean;
  /** codes [K, N] */
  q: Uint8Array;
  /** true zero points [groups, N] (not minus one) */
  zeros: Uint8Array;
  /** f16 bits of the scales [groups, N] */
  scales: Uint16Array;
}

/**
 * Group-wise round-to-nearest of an HF weight [N, K] (row-major) at `bits`
 * (GPTQ's quantizer without the Hessian update): asym s = (max − min)/maxq,
 * z = clamp(round(−min/s), 0, maxq); sym (AutoGPTQ) s = 2·max|w|/maxq,
 * z = (maxq + 1)/2. s is rounded to f16 first, so the codes fit the stored
 * scale; q = clamp(round(w/s) + z, 0, maxq). minZero 1 keeps every zero >= 1
 * (checkpoint_format "gptq" stores z − 1, which must not underflow).
 */
export function quantizeGptqLinear(weight: ArrayLike<number>, N: number, K: number, bits: number, groupSize: number,
  opts: { sym?: boolean; minZero?: number } = {}): GptqQuantized {
  checkBits(bits);
  const G = groupSize === -1 ? K : groupSize;
  if (weight.length !== N * K) throw new ShoalError('SHOAL_ERR_SHAPE', `weight has ${weight.length} values, expected [${N}, ${K}]`);
  if (!(G > 0) || K % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `group size ${G} does not divide in_features ${K}`);
  const maxq = (1 << bits) - 1;
  const sym = opts.sym ?? false;
  const spec: GridSpec = { bits, style: 'gptq', sym, minZero: opts.minZero ?? 0 };
  const groups = K / G;
  const q = new Uint8Array(K * N);
  const zeros = new Uint8Array(groups * N);
  const scales = new Uint16Array(groups * N);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < groups; g++) {
      const { mn, mx } = groupRange(weight, n * K + g * G, G, 1, `weight row ${n}, group ${g}`);
      const p = groupParams(spec, mn, mx);
      zeros[g * N + n] = p.zero;
      scales[g * N + n] = p.scaleBits;
      for (let k = g * G; k < (g + 1) * G; k++) q[k * N + n] = quantizeCode(weight[n * K + k]!, p.scale, p.zero, maxq);
    }
  }
  return { K, N, G, bits, sym, q, zeros, scales };
}

/** w[n, k] = (q[k, n] − z[g, n]) · s[g, n] as [N, K] float64 (g = gIdx[k], default k / G). */
export function dequantizeGptq(ql: Pick<GptqQuantized, 'K' | 'N' | 'G' | 'q' | 'zeros' | 'scales'>, gIdx?: ArrayLike<number>): Float64Array {
  const { K, N, G } = ql;
  const out = new Float64Array(N * K);
  for (let k = 0; k < K; k++) {
    const g = gIdx ? gIdx[k]! : Math.floor(k / G);
    for (let n = 0; n < N; n++) out[n * K + k] = (ql.q[k * N + n]! - ql.zeros[g * N + n]!) * f16ToF32(ql.scales[g * N + n]!);
  }
  return out;
}

/** g_idx of a plain (not act-order) GPTQ linear: k / G. */
export function trivialGIdx(K: number, G: number): Int32Array {
  const g = new Int32Array(K);
  for (let k = 0; k < K; k++) g[k] = Math.floor(k / G);
  return g;
}
