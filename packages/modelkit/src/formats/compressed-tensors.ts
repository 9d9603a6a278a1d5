// compressed-tensors.ts — the `pack-quantized` layout llm-compressor writes
// (quant_method "compressed-tensors"), written from the format's published
// source (compressed_tensors/compressors/quantized_compressors/pack_quantized.py,
// quantization/quant_args.py, quant_config.py), independently of the native loader.
//
// Per quantized linear, K = in_features, N = out_features, pf = 32 / bits:
//   weight_packed      I32 [N, ceil(K/pf)]  value k of row n at bits b·(k mod pf) of
//                                           word k/pf, stored as q + 2^(b−1) (signed →
//                                           unsigned); the last word zero-padded
//   weight_scale       float [N, K/G]       (strategy channel: [N, 1])
//   weight_zero_point  I32 [ceil(N/pf), K/G] asymmetric only: zp + 2^(b−1) packed along
//                                           the rows (pack_to_int32 packed_dim=0)
//   weight_g_idx       I32 [K]              actorder "group" only: the group of input k
//   weight_shape       I64 [2] = [N, K]
//   w = (q − zp) · s, signed q, zp in [−2^(b−1), 2^(b−1)).
// In unsigned terms (what the GPTQ quantizer produces) u = q + 2^(b−1), zu = zp + 2^(b−1):
// w = (u − zu) · s, and a symmetric scheme is zu = 2^(b−1). GPTQ's min/max RTN grid
// (zero in the range, s = (max−min)/maxq, or 2·max|w|/maxq when symmetric) is the same
// grid as compressed-tensors' calculate_qparams, so its codes are valid as they are.
import { ShoalError } from '@shoal/common';

export const CT_BITS: readonly number[] = [4, 8];

function checkBits(bits: number): void {
  if (!CT_BITS.includes(bits)) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `compressed-tensors pack-quantized: ${bits} bits is not supported here (4 or 8)`);
}

/** Unsigned codes u [K, N] (k-major, as the GPTQ quantizer returns them) → weight_packed [N, ceil(K/pf)]. */
export function packCtWeight(u: ArrayLike<number>, K: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const pf = 32 / bits;
  const W = Math.ceil(K / pf);
  const out = new Uint32Array(N * W);
  const mask = (1 << bits) - 1;
  for (let n = 0; n < N; n++) {
    for (let k = 0; k < K; k++) {
      const v = u[k * N + n]!;
      if (v < 0 || v > mask) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `code ${v} at row ${n}, input ${k} is outside 0..${mask}`);
      out[n * W + Math.floor(k / pf)] = (out[n * W + Math.floor(k / pf)]! | (v << (bits * (k % pf)))) >>> 0;
    }
  }
  return new Int32Array(out.buffer);
}

/** weight_packed [N, ceil(K/pf)] → unsigned codes [K, N]. */
export function unpackCtWeight(packed: ArrayLike<number>, K: number, N: number, bits: number): Uint8Array {
  checkBits(bits);
  const pf = 32 / bits;
  const W = Math.ceil(K / pf);
  const mask = (1 << bits) - 1;
  const out = new Uint8Array(K * N);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) out[k * N + n] = (packed[n * W + Math.floor(k / pf)]! >>> (bits * (k % pf))) & mask;
  return out;
}

/** Unsigned zero points zu [groups, N] → weight_zero_point [ceil(N/pf), groups] (packed along the rows). */
export function packCtZeros(zu: ArrayLike<number>, groups: number, N: number, bits: number): Int32Array {
  checkBits(bits);
  const pf = 32 / bits;
  const R = Math.ceil(N / pf);
  const out = new Uint32Array(R * groups);
  for (let g = 0; g < groups; g++) {
    for (let n = 0; n < N; n++) {
      const i = Math.floor(n / pf) * groups + g;
      out[i] = (out[i]! | ((zu[g * N + n]! & ((1 << bits) - 1)) << (bits * (n % pf)))) >>> 0;
    }
  }
  return new Int32Array(out.buffer);
}

/** weight_zero_point [ceil(N/pf), groups] → unsigned zero points [groups, N]. */
export function unpackCtZeros(packed: ArrayLike<number>, groups: number, N: number, bits: number): Uint8Array {
  checkBits(bits);
  const pf = 32 / bits;
  const out = new Uint8Array(groups * N);
  for (let g = 0; g < groups; g++) {
    for (let n = 0; n < N; n++) out[g * N + n] = (packed[Math.floor(n / pf) * groups + g]! >>> (bits * (n % pf))) & ((1 << bits) - 1);
  }
  return out;
}

/** Scales [groups, N] (GPTQ order) → weight_scale [N, groups]. */
export function ctScales<T extends Uint16Array | Float32Array>(s: T, groups: number, N: number): T {
  const out = new (s.constructor as new (n: number) => T)(groups * N);
  for (let g = 0; g < groups; g++) for (let n = 0; n < N; n++) out[n * groups + g] = s[g * N + n]!;
  return out;
}

/** weight_shape as compressed-tensors saves it (torch.tensor(weight.shape): int64). */
export function ctWeightShape(N: number, K: number): BigInt64Array {
  return BigInt64Array.from([BigInt(N), BigInt(K)]);
}

export interface CtScheme {
  bits: number;
  /** group size, or -1 for strategy channel */
  groupSize: number;
  symmetric: boolean;
  /** actorder group: weight_g_idx is written */
  actorder?: boolean;
  /** targets (default ["Linear"]) */
  targets?: string[];
}

/** The quantization_config of a pack-quantized checkpoint (one config group per scheme). */
export function ctQuantConfig(schemes: readonly CtScheme[], ignore: readonly string[]): Record<string, unknown> {
  const groups: Record<string, unknown> = {};
  schemes.forEach((s, i) => {
    checkBits(s.bits);
    groups[`group_${i}`] = {
      targets: s.targets ?? ['Linear'],
      weights: {
        num_bits: s.bits, type: 'int', symmetric: s.symmetric,
        strategy: s.groupSize === -1 ? 'channel' : 'group', group_size: s.groupSize === -1 ? null : s.groupSize,
        block_structure: null, dynamic: false, actorder: s.actorder ? 'group' : null, observer: 'minmax', observer_kwargs: {},
      },
      input_activations: null,
      output_activations: null,
      format: 'pack-quantized',
    };
  });
  return {
    quant_method: 'compressed-tensors',
    format: 'pack-quantized',
    quantization_status: 'compressed',
    config_groups: groups,
    ignore: [...ignore],
    kv_cache_scheme: null,
    global_compression_ratio: null,
    sparsity_config: {},
    transform_config: {},
    version: '0.12.2',
  };
}
