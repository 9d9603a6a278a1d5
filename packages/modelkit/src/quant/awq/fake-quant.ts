// awq/fake-quant.ts — group-wise asymmetric quantize-dequantize (AutoAWQ
// pseudo_quantize_tensor with zero_point) for 2, 3 and 4 bits, on HF-oriented
// weights [N, K] (groups of G consecutive input channels per output row).
//
// Same arithmetic as awq-pack.ts (quantizeGroupParams/quantizeValue) with
// qmax = 2^bits − 1: s = max(max − min, 1e-5) / qmax rounded to f16 (the stored
// scale), z = clamp(−round(min / s), 0, qmax), q = clamp(round(w / s) + z, 0, qmax),
// ŵ = (q − z)·s, rounding half to even. At 4 bits the result equals
// dequantizeLinear(quantizeLinear(w)) exactly (tested); this version is the
// fast path the scale and clip searches call many times.
import { AWQ_MIN_RANGE } from '../../formats/awq.js';
import { f16ToF32, f64ToF16, ToolError } from '../../io/safetensors.js';

export const SUPPORTED_BITS: readonly number[] = [2, 3, 4];

/** torch.round (half to even) without the modulo of the reference version. */
export function roundEven(x: number): number {
  const r = Math.round(x);
  return r - x === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** Scale (f16-rounded, as a number) and zero point of a group with range [mn, mx]. */
export function groupScaleZero(mn: number, mx: number, qmax: number): { scale: number; zero: number } {
  const range = Math.max(mx - mn, AWQ_MIN_RANGE);
  const scale = f16ToF32(f64ToF16(range / qmax));
  if (!Number.isFinite(scale) || scale <= 0) {
    throw new ToolError('SHOAL_ERR_INVALID_ARG', `weight range ${range} gives scale ${range / qmax}, outside f16; the weights are not finite or far too large`);
  }
  const zero = Math.min(qmax, Math.max(0, -roundEven(mn / scale)));
  return { scale, zero };
}

/**
 * Quantize-dequantize of one group w[off .. off+G) into out[off ..): returns
 * nothing; `out` may be `w` itself.
 */
export function fakeQuantGroup(w: ArrayLike<number>, off: number, G: number, qmax: number, out: Float32Array | Float64Array): void {
  let mn = Infinity;
  let mx = -Infinity;
  for (let k = off; k < off + G; k++) {
    const v = w[k]!;
    if (v !== v) mn = NaN; // NaN never compares; remember it
    if (v < mn) mn = v;
    if (v > mx) mx = v;
  }
  if (!Number.isFinite(mn) || !Number.isFinite(mx)) {
    throw new ToolError('SHOAL_ERR_INVALID_ARG', `a weight group has a non-finite value (row ${Math.floor(off / G)}); the checkpoint is corrupt`);
  }
  const { scale, zero } = groupScaleZero(mn, mx, qmax);
  for (let k = off; k < off + G; k++) {
    // w / s (not w * (1/s)) so the codes match awq-pack bit for bit
    let q = roundEven(w[k]! / scale) + zero;
    if (q < 0) q = 0;
    else if (q > qmax) q = qmax;
    out[k] = (q - zero) * scale;
  }
}

/** Quantize-dequantize of a whole weight [N, K] with groups of G along K. */
export function fakeQuantize(w: Float32Array, N: number, K: number, G: number, bits: number, out: Float32Array = new Float32Array(N * K)): Float32Array {
  if (!SUPPORTED_BITS.includes(bits)) throw new ToolError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported; use 2, 3 or 4`);
  if (G <= 0 || K % G !== 0) throw new ToolError('SHOAL_ERR_GROUP_SIZE', `group size ${G} does not divide in_features ${K}`);
  if (w.length !== N * K) throw new ToolError('SHOAL_ERR_SHAPE', `weight has ${w.length} values, expected [${N}, ${K}]`);
  const qmax = (1 << bits) - 1;
  for (let off = 0; off < N * K; off += G) fakeQuantGroup(w, off, G, qmax, out);
  return out;
}
