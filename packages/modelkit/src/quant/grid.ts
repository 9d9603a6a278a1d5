// quant/grid.ts — the one integer grid every format and method quantizes onto,
// and the bit packing of its codes. AWQ (gemm, gemv), GPTQ, EfficientQAT, the
// RTN and AWQ quantizers and the fake-quant of the AWQ search all call this, so
// a checkpoint's codes and the search's error estimates come from one formula.
//
// Asymmetric group grid with b bits, qmax = 2^b − 1 (AutoAWQ pseudo_quantize,
// GPTQ's quantizer without the Hessian update):
//   s = range / qmax, rounded to f16 (the stored scale, so the codes are chosen
//       for the scale the kernels use)
//   z = clamp(round(−min / s), minZero, qmax)      (symmetric: z = (qmax + 1) / 2)
//   q = clamp(round(w / s) + z, 0, qmax),   ŵ = (q − z) · s
// with round = half to even (torch.round). The range is max − min of the group;
// GPTQ widens the group to include 0 and uses 2·max|w| when symmetric.
import { ShoalError } from '@shoal/common';
import { f16ToF32, f64ToF16 } from '../io/dtypes.js';

/** torch.round: half to even. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** How a group's range is formed, and how a (near-)empty range gets a positive scale. */
export interface GridSpec {
  bits: number;
  /** GPTQ: [min(min, 0), max(max, 0)] and an all-zero range becomes 1e-5·qmax. AWQ: max − min clamped at 1e-5. */
  style: 'awq' | 'gptq';
  /** GPTQ sym=True: s = 2·max|w| / qmax, z = (qmax + 1) / 2. */
  sym?: boolean;
  /** Smallest zero point (GPTQ checkpoint_format "gptq" stores z − 1, which must not underflow). */
  minZero?: number;
}

/** AutoAWQ clamps max − min at this before dividing. */
export const AWQ_MIN_RANGE = 1e-5;

export interface GroupParams {
  /** f16 bits of the scale (what a checkpoint stores) */
  scaleBits: number;
  /** the same scale as a number */
  scale: number;
  zero: number;
}

/** Scale and zero point of a group whose values span [mn, mx]. */
export function groupParams(spec: GridSpec, mn: number, mx: number): GroupParams {
  const qmax = (1 << spec.bits) - 1;
  let range: number;
  if (spec.style === 'awq') {
    range = Math.max(mx - mn, AWQ_MIN_RANGE);
  } else {
    mn = Math.min(mn, 0);
    mx = Math.max(mx, 0);
    range = spec.sym ? 2 * Math.max(-mn, mx) : mx - mn;
    if (range === 0) range = AWQ_MIN_RANGE * qmax; // all zero: any positive scale
  }
  const scaleBits = f64ToF16(range / qmax);
  const scale = f16ToF32(scaleBits);
  if (!Number.isFinite(scale) || scale <= 0) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `weight range ${range} gives scale ${range / qmax}, outside f16; the weights are not finite or far too large`);
  }
  const zero = spec.sym ? (qmax + 1) >> 1 : Math.min(qmax, Math.max(spec.minZero ?? 0, -roundHalfEven(mn / scale)));
  return { scaleBits, scale, zero };
}

/** The code of w on the grid (w / s, not w · (1/s), so every caller gets the same bits). */
export function quantizeCode(w: number, scale: number, zero: number, qmax: number): number {
  return Math.min(qmax, Math.max(0, roundHalfEven(w / scale) + zero));
}

/** Minimum and maximum of count values w[off], w[off + stride], …; throws on a non-finite value. */
export function groupRange(w: ArrayLike<number>, off: number, count: number, stride = 1, where = 'a weight group'): { mn: number; mx: number } {
  let mn = Infinity;
  let mx = -Infinity;
  for (let i = 0, k = off; i < count; i++, k += stride) {
    const v = w[k]!;
    if (!Number.isFinite(v)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${where} has a non-finite value; the checkpoint is corrupt`);
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  return { mn, mx };
}

// ---------------------------------------------------------------------------
// packing: codes as bit fields of little-endian 32-bit words
// ---------------------------------------------------------------------------

/**
 * ORs value v (bits wide) into bit position `bit` of a stream of 32-bit words
 * words[base], words[base + stride], …; a value may straddle two words (3-bit GPTQ).
 */
export function putBits(words: Uint32Array, base: number, stride: number, bit: number, bits: number, v: number): void {
  const w = Math.floor(bit / 32);
  const sh = bit % 32;
  words[base + w * stride] = (words[base + w * stride]! | (v << sh)) >>> 0;
  if (sh + bits > 32) words[base + (w + 1) * stride] = (words[base + (w + 1) * stride]! | (v >>> (32 - sh))) >>> 0;
}

/** Reads the value putBits wrote. */
export function getBits(words: ArrayLike<number>, base: number, stride: number, bit: number, bits: number): number {
  const w = Math.floor(bit / 32);
  const sh = bit % 32;
  let v = (words[base + w * stride]! >>> 0) >>> sh;
  if (sh + bits > 32) v = (v | ((words[base + (w + 1) * stride]! >>> 0) << (32 - sh))) >>> 0;
  return v & ((1 << bits) - 1);
}
