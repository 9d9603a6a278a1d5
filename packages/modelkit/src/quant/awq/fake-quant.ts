// awq/fake-quant.ts — group-wise asymmetric quantize-dequantize (AutoAWQ
// pseudo_quantize_tensor with zero_point) for 2, 3 and 4 bits, on HF-oriented
// weights [N, K] (groups of G consecutive input channels per output row).
//
// The grid is quant/grid.ts (AWQ style, qmax = 2^bits − 1), ŵ = (q − z)·s. At 4
// bits the result equals dequantizeLinear(quantizeLinear(w)) exactly (tested);
// this is the path the scale and clip searches call many times.
import { ShoalError } from '@shoal/common';
import { groupParams, groupRange, quantizeCode, type GridSpec } from '../grid.js';

export const SUPPORTED_BITS: readonly number[] = [2, 3, 4];

/** The AutoAWQ grid at each supported width, by qmax = 2^bits − 1. */
const AWQ_GRIDS: Readonly<Record<number, GridSpec>> = Object.fromEntries(SUPPORTED_BITS.map((b) => [(1 << b) - 1, { bits: b, style: 'awq' }]));

/**
 * Quantize-dequantize of one group w[off .. off+G) into out[off ..): returns
 * nothing; `out` may be `w` itself.
 */
export function fakeQuantGroup(w: ArrayLike<number>, off: number, G: number, qmax: number, out: Float32Array | Float64Array): void {
  const { mn, mx } = groupRange(w, off, G, 1, `a weight group (row ${Math.floor(off / G)})`);
  const { scale, zero } = groupParams(AWQ_GRIDS[qmax]!, mn, mx);
  for (let k = off; k < off + G; k++) out[k] = (quantizeCode(w[k]!, scale, zero, qmax) - zero) * scale;
}

/** Quantize-dequantize of a whole weight [N, K] with groups of G along K. */
export function fakeQuantize(w: Float32Array, N: number, K: number, G: number, bits: number, out: Float32Array = new Float32Array(N * K)): Float32Array {
  if (!SUPPORTED_BITS.includes(bits)) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported; use 2, 3 or 4`);
  if (G <= 0 || K % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `group size ${G} does not divide in_features ${K}`);
  if (w.length !== N * K) throw new ShoalError('SHOAL_ERR_SHAPE', `weight has ${w.length} values, expected [${N}, ${K}]`);
  const qmax = (1 << bits) - 1;
  for (let off = 0; off < N * K; off += G) fakeQuantGroup(w, off, G, qmax, out);
  return out;
}
