// formats/awq.ts — AutoAWQ `gemm` INT4 layout: group quantization on the grid of
// quant/grid.ts, packing, unpacking and dequantization, written from the format description.
//
// Shapes (K = in_features, N = out_features, G = group size):
//   HF weight      [N, K]   (nn.Linear: y = x W^T + b)
//   qweight  i32   [K, N/8]  8 nibbles per word along N
//   qzeros   i32   [K/G, N/8] packed the same way
//   scales   f16   [K/G, N]
// Nibble i (bits 4i..4i+3) of word c holds column 8c + AWQ_ORDER[i].
// Dequantization: w[n, k] = (q[k, n] - z[k/G, n]) * s[k/G, n].
import { f16ToF32 } from '../io/dtypes.js';
import { getBits, groupParams, groupRange, putBits, quantizeCode, type GridSpec } from '../quant/grid.js';
import { ShoalError } from '@shoal/common';

/** Column (within a pack of 8) stored in nibble i. */
export const AWQ_ORDER: readonly number[] = [0, 2, 4, 6, 1, 3, 5, 7];
/** Nibble that holds column j (inverse of AWQ_ORDER). */
export const AWQ_REVERSE_ORDER: readonly number[] = [0, 4, 1, 5, 2, 6, 3, 7];

/** Packs a row-major [rows, cols] array of 4-bit values into int32 [rows, cols/8]. */
export function packAwq(values: ArrayLike<number>, rows: number, cols: number): Int32Array {
  if (cols % 8 !== 0) throw new ShoalError('SHOAL_ERR_SHAPE', `AWQ packing needs a multiple of 8 columns, got ${cols}`);
  if (values.length !== rows * cols) throw new ShoalError('SHOAL_ERR_SHAPE', `AWQ packing: ${values.length} values for [${rows}, ${cols}]`);
  const words = cols / 8;
  const out = new Uint32Array(rows * words);
  for (let r = 0; r < rows; r++) {
    const base = r * cols;
    for (let c = 0; c < words; c++) {
      const col = base + 8 * c;
      for (let i = 0; i < 8; i++) {
        const v = values[col + AWQ_ORDER[i]!]!;
        if (v < 0 || v > 15 || !Number.isInteger(v)) {
          throw new ShoalError('SHOAL_ERR_INVALID_ARG', `AWQ packing: value ${v} at [${r}, ${8 * c + AWQ_ORDER[i]!}] is not an integer in 0..15`);
        }
        putBits(out, r * words + c, 1, 4 * i, 4, v);
      }
    }
  }
  return new Int32Array(out.buffer);
}

/** Unpacks int32 [rows, cols/8] into row-major 4-bit values [rows, cols]. */
export function unpackAwq(packed: ArrayLike<number>, rows: number, cols: number): Uint8Array {
  if (cols % 8 !== 0) throw new ShoalError('SHOAL_ERR_SHAPE', `AWQ unpacking needs a multiple of 8 columns, got ${cols}`);
  const words = cols / 8;
  if (packed.length !== rows * words) throw new ShoalError('SHOAL_ERR_SHAPE', `AWQ unpacking: ${packed.length} words for [${rows}, ${cols}]`);
  const out = new Uint8Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < words; c++) {
      const col = r * cols + 8 * c;
      for (let i = 0; i < 8; i++) out[col + AWQ_ORDER[i]!] = getBits(packed, r * words + c, 1, 4 * i, 4);
    }
  }
  return out;
}

export interface QuantizedLinear {
  inFeatures: number;   // K
  outFeatures: number;  // N
  groupSize: number;    // G
  /** 4-bit codes in AWQ orientation [K, N] (row-major, unpacked). */
  q: Uint8Array;
  /** zero points [K/G, N] */
  zeros: Uint8Array;
  /** f16 bits of the scales [K/G, N] */
  scales: Uint16Array;
}

/** The AutoAWQ gemm grid: 4 bits, asymmetric, max − min clamped at 1e-5 (quant/grid.ts). */
export const AWQ_GRID: GridSpec = { bits: 4, style: 'awq' };

/**
 * Group-quantizes an HF weight [N, K] (row-major) with groups of G consecutive
 * input channels per output row (AutoAWQ pseudo_quantize_tensor, zero_point).
 */
export function quantizeLinear(weight: ArrayLike<number>, outFeatures: number, inFeatures: number, groupSize: number): QuantizedLinear {
  const N = outFeatures;
  const K = inFeatures;
  const G = groupSize;
  if (weight.length !== N * K) throw new ShoalError('SHOAL_ERR_SHAPE', `weight has ${weight.length} values, expected [${N}, ${K}]`);
  if (G <= 0 || K % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `group size ${G} does not divide in_features ${K}`);
  const groups = K / G;
  const q = new Uint8Array(K * N);
  const zeros = new Uint8Array(groups * N);
  const scales = new Uint16Array(groups * N);
  for (let n = 0; n < N; n++) {
    const row = n * K;
    for (let g = 0; g < groups; g++) {
      const k0 = g * G;
      const { mn, mx } = groupRange(weight, row + k0, G, 1, `weight row ${n}, group ${g}`);
      const p = groupParams(AWQ_GRID, mn, mx);
      zeros[g * N + n] = p.zero;
      scales[g * N + n] = p.scaleBits;
      for (let k = k0; k < k0 + G; k++) q[k * N + n] = quantizeCode(weight[row + k]!, p.scale, p.zero, 15);
    }
  }
  return { inFeatures: K, outFeatures: N, groupSize: G, q, zeros, scales };
}

export interface PackedLinear {
  /** int32 [K, N/8] */
  qweight: Int32Array;
  /** int32 [K/G, N/8] */
  qzeros: Int32Array;
  /** f16 bits [K/G, N] */
  scales: Uint16Array;
}

/** Packs a quantized linear into AutoAWQ gemm tensors. */
export function packLinear(ql: QuantizedLinear): PackedLinear {
  const K = ql.inFeatures;
  const N = ql.outFeatures;
  return {
    qweight: packAwq(ql.q, K, N),
    qzeros: packAwq(ql.zeros, K / ql.groupSize, N),
    scales: ql.scales,
  };
}

/**
 * Dequantizes AutoAWQ gemm tensors to an HF-oriented weight [N, K] in float64:
 * w[n, k] = (q[k, n] - z[k/G, n]) * s[k/G, n].
 */
export function dequantizeAwq(qweight: ArrayLike<number>, qzeros: ArrayLike<number>, scalesF16: ArrayLike<number>,
  inFeatures: number, outFeatures: number, groupSize: number): Float64Array {
  const K = inFeatures;
  const N = outFeatures;
  const G = groupSize;
  if (K % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `group size ${G} does not divide in_features ${K}`);
  const groups = K / G;
  if (scalesF16.length !== groups * N) throw new ShoalError('SHOAL_ERR_SHAPE', `scales have ${scalesF16.length} values, expected [${groups}, ${N}]`);
  const q = unpackAwq(qweight, K, N);
  const z = unpackAwq(qzeros, groups, N);
  const out = new Float64Array(N * K);
  for (let k = 0; k < K; k++) {
    const g = Math.floor(k / G);
    for (let n = 0; n < N; n++) {
      const s = f16ToF32(scalesF16[g * N + n]!);
      out[n * K + k] = (q[k * N + n]! - z[g * N + n]!) * s;
    }
  }
  return out;
}

/** Dequantizes an unpacked QuantizedLinear to [N, K] float64. */
export function dequantizeLinear(ql: QuantizedLinear): Float64Array {
  const { inFeatures: K, outFeatures: N, groupSize: G } = ql;
  const out = new Float64Array(N * K);
  for (let k = 0; k < K; k++) {
    const g = Math.floor(k / G);
    for (let n = 0; n < N; n++) {
      out[n * K + k] = (ql.q[k * N + n]! - ql.zeros[g * N + n]!) * f16ToF32(ql.scales[g * N + n]!);
    }
  }
  return out;
}
