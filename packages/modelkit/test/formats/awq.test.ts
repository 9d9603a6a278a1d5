// AutoAWQ gemm packing: hand-computed words, round trips, the quantizer.
import t from 'tap';
import { groupParams } from '../../src/quant/grid.js';
import {
  AWQ_ORDER, AWQ_REVERSE_ORDER, dequantizeAwq, dequantizeLinear, packAwq, packLinear,
  quantizeLinear, unpackAwq, AWQ_GRID,
} from '../../src/formats/awq.js';
import { f16ToF32 } from '../../src/io/dtypes.js';

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

t.test('order tables are inverse permutations', async (t) => {
  for (let i = 0; i < 8; i++) t.equal(AWQ_REVERSE_ORDER[AWQ_ORDER[i]!], i);
});

t.test('known packed words', async (t) => {
  // columns 0..7 hold their own index: nibbles (LSB first) are 0,2,4,6,1,3,5,7
  t.same(Array.from(packAwq([0, 1, 2, 3, 4, 5, 6, 7], 1, 8)), [0x75316420]);
  // a single 15 in column 0 -> nibble 0; column 1 -> nibble 4; column 7 -> nibble 7 (sign bit)
  t.same(Array.from(packAwq([15, 0, 0, 0, 0, 0, 0, 0], 1, 8)), [0x0000000f]);
  t.same(Array.from(packAwq([0, 10, 0, 0, 0, 0, 0, 0], 1, 8)), [0x000a0000]);
  t.same(Array.from(packAwq([0, 0, 0, 0, 0, 0, 0, 15], 1, 8)), [0xf0000000 | 0]);
  t.same(Array.from(packAwq([0, 0, 0, 0, 3, 0, 0, 0], 1, 8)), [0x00000300]); // column 4 -> nibble 2
  // two rows, 16 columns: words are row-major [rows, cols/8]
  const v = [
    1, 0, 0, 0, 0, 0, 0, 0, /**/ 0, 0, 0, 0, 0, 0, 0, 2,
    0, 0, 5, 0, 0, 0, 0, 0, /**/ 0, 0, 0, 9, 0, 0, 0, 0,
  ];
  t.same(Array.from(packAwq(v, 2, 16)), [0x00000001, 0x20000000, 0x00000050, 0x00900000]);
  t.same(Array.from(unpackAwq([0x75316420], 1, 8)), [0, 1, 2, 3, 4, 5, 6, 7]);
  t.same(Array.from(unpackAwq([0xf0000000 | 0], 1, 8)), [0, 0, 0, 0, 0, 0, 0, 15]);
});

t.test('pack/unpack round trip on random codes', async (t) => {
  const r = rng(7);
  for (const [rows, cols] of [[1, 8], [3, 24], [64, 200], [17, 136]] as const) {
    const v = Uint8Array.from({ length: rows * cols }, () => Math.floor(r() * 16));
    const p = packAwq(v, rows, cols);
    t.equal(p.length, rows * cols / 8);
    t.same(Array.from(unpackAwq(p, rows, cols)), Array.from(v), `[${rows}, ${cols}]`);
  }
});

t.test('packing rejects bad input', async (t) => {
  t.throws(() => packAwq([1, 2, 3, 4], 1, 4), { code: 'SHOAL_ERR_SHAPE' });
  t.throws(() => packAwq([16, 0, 0, 0, 0, 0, 0, 0], 1, 8), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => packAwq([0, 0, 0], 1, 8), { code: 'SHOAL_ERR_SHAPE' });
  t.throws(() => quantizeLinear(new Float32Array(8 * 12), 8, 12, 8), { code: 'SHOAL_ERR_GROUP_SIZE' });
});

t.test('group quantizer known values', async (t) => {
  // group [-1, 0, 0.5, 2]: s = 3/15 = 0.2 -> f16 0x3266 = 0.199951171875,
  // z = -round(-1/s) = round(5.0012) = 5, q = round(w/s) + z = [0, 5, 8, 15]
  const p = groupParams(AWQ_GRID, -1, 2);
  t.equal(p.scaleBits, 0x3266);
  t.equal(p.scale, 0.199951171875);
  t.equal(p.zero, 5);
  const ql = quantizeLinear([-1, 0, 0.5, 2, 0, 0, 0, 0], 2, 4, 4);
  t.same(Array.from(ql.q.filter((_, i) => i % 2 === 0)), [0, 5, 8, 15]); // [K, N] layout: column n = 0
  t.same(Array.from(ql.zeros), [5, 0]);
  // an all-zero group: range clamps at 1e-5, s = f16(1e-5/15), z = 0, q = 0
  t.equal(ql.zeros[1], 0);
  t.equal(f16ToF32(ql.scales[1]!), f16ToF32(groupParams(AWQ_GRID, 0, 0).scaleBits));
  t.ok(f16ToF32(ql.scales[1]!) > 0);
  // all-positive group: z clamps at 0
  t.equal(groupParams(AWQ_GRID, 1, 3).zero, 0);
  // all-negative group: z clamps at 15
  t.equal(groupParams(AWQ_GRID, -3, -1).zero, 15);
});

t.test('quantize -> pack -> dequantize reproduces the quantizer and bounds the error', async (t) => {
  const r = rng(3);
  const N = 24, K = 96;
  for (const G of [32, 48, 96]) {
    const w = Float32Array.from({ length: N * K }, () => (r() - 0.5) * 0.1 + (r() < 0.01 ? 0.3 : 0));
    const ql = quantizeLinear(w, N, K, G);
    const pk = packLinear(ql);
    t.equal(pk.qweight.length, K * N / 8);
    t.equal(pk.qzeros.length, (K / G) * N / 8);
    t.equal(pk.scales.length, (K / G) * N);
    const a = dequantizeAwq(pk.qweight, pk.qzeros, pk.scales, K, N, G);
    const b = dequantizeLinear(ql);
    t.same(Array.from(a), Array.from(b), `G=${G}: packed and unpacked dequantization agree`);
    // every weight within half a step (plus the f16 rounding of s, see gen-model.test.ts)
    let bad = 0;
    for (let n = 0; n < N; n++) {
      for (let k = 0; k < K; k++) {
        const s = f16ToF32(pk.scales[Math.floor(k / G) * N + n]!);
        if (Math.abs(a[n * K + k]! - w[n * K + k]!) > (0.5 + 15 * 2 ** -11) * s + 1e-9) bad++;
      }
    }
    t.equal(bad, 0, `G=${G}: |w - deq| <= s/2`);
  }
});

t.test('orientation: HF [out, in] weight vs qweight [in, out/8]', async (t) => {
  // out 8, in 4, G 4: weight row n is n * [0, 1, 2, 3] / 10
  const N = 8, K = 4;
  const w = new Float32Array(N * K);
  for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) w[n * K + k] = (n * k) / 10;
  const pk = packLinear(quantizeLinear(w, N, K, 4));
  t.equal(pk.qweight.length, K); // [4, 1]
  const q = unpackAwq(pk.qweight, K, N);
  // input channel 0 is 0 for every row -> its code equals the zero point (0 for min 0)
  for (let n = 0; n < N; n++) t.equal(q[0 * N + n], 0);
  // input channel 3 is the max of each row (n > 0) -> code 15
  for (let n = 1; n < N; n++) t.equal(q[3 * N + n], 15);
  const deq = dequantizeAwq(pk.qweight, pk.qzeros, pk.scales, K, N, 4);
  for (let n = 1; n < N; n++) t.ok(Math.abs(deq[n * K + 3]! - (3 * n) / 10) < 1e-3, `row ${n} max restored`);
});
