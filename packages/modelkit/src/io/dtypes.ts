// io/dtypes.ts — safetensors dtypes and the f16 / bf16 conversions every model
// writer and reader shares (round to nearest even, single rounding from float64).
import { ShoalError } from '@shoal/common';

// ---------------------------------------------------------------------------
// dtypes
// ---------------------------------------------------------------------------

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

export const DTYPE_BYTES: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Bytes per element of a safetensors dtype. */
export function dtypeBytes(dtype: StDType): number {
  return DTYPE_BYTES[dtype];
}

export function isStDType(s: unknown): s is StDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** A non-negative safe integer (header fields). */
export function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Number of elements of a shape ([] is a scalar: 1). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------
// f16 / bf16 conversions
// ---------------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 bit pattern -> f16 bit pattern, round to nearest even; NaN stays NaN, overflow -> inf. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // half exponent field
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // half subnormal: units of 2^-24
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 126 - exp; // 14..24
    let q = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) !== 0)) q++;
    return sign | q; // q == 0x400 is the smallest normal: correct encoding
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry into the exponent is correct
  return sign | h;
}

/** A JS number (rounded to f32 first) -> f16 bits. */
export function f32ToF16(v: number): number {
  scratchF32[0] = v;
  return f32BitsToF16Bits(scratchU32[0]!);
}

function roundHalfEvenPositive(a: number): number {
  const f = Math.floor(a);
  const d = a - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** A float64 -> f16 bits with a single rounding (no double rounding through f32). */
export function f64ToF16(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // 65520 is the tie between 65504 and 2^16: even -> inf
  if (a < 2 ** -14) return sign | roundHalfEvenPositive(a * 2 ** 24); // 1024 -> smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const m = roundHalfEvenPositive(a * 2 ** (10 - e)); // 1024..2048, exact power-of-two scaling
  return sign | (((e + 15) << 10) + (m - 1024)); // m == 2048 carries into the exponent
}

const F16_TO_F32 = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    let v: number;
    if (e === 0) v = m * 2 ** -24;
    else if (e === 31) v = m === 0 ? Infinity : NaN;
    else v = (1024 + m) * 2 ** (e - 25);
    t[h] = s * v;
  }
  return t;
})();

/** f16 bits -> number (exact). */
export function f16ToF32(h: number): number {
  return F16_TO_F32[h & 0xffff]!;
}

/** f32 bit pattern -> bf16 bits, round to nearest even; NaN stays NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToBf16(v: number): number {
  scratchF32[0] = v;
  return f32BitsToBf16Bits(scratchU32[0]!);
}

export function bf16ToF32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0]!;
}

/** Float array -> f16 bits (values are rounded to f32 first, then to f16). */
export function toF16Array(src: ArrayLike<number>): Uint16Array {
  const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
  const u = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < u.length; i++) out[i] = f32BitsToF16Bits(u[i]!);
  return out;
}

export function toBf16Array(src: ArrayLike<number>): Uint16Array {
  const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
  const u = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < u.length; i++) out[i] = f32BitsToBf16Bits(u[i]!);
  return out;
}

export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F16_TO_F32[src[i]!]!;
  return out;
}

export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) u[i] = src[i]! << 16;
  return out;
}

/** Encodes float values as the bytes of a float dtype (F32, F16, BF16, F64). */
export function encodeFloats(src: ArrayLike<number>, dtype: StDType): Uint8Array {
  switch (dtype) {
    case 'F32': {
      const a = src instanceof Float32Array ? src : Float32Array.from(src);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case 'F64': {
      const a = src instanceof Float64Array ? src : Float64Array.from(src);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case 'F16': {
      const a = toF16Array(src);
      return new Uint8Array(a.buffer);
    }
    case 'BF16': {
      const a = toBf16Array(src);
      return new Uint8Array(a.buffer);
    }
    default:
      throw new ShoalError('SHOAL_ERR_ST_DTYPE', `cannot encode floats as ${dtype}; use F32, F16, BF16 or F64`);
  }
}
