// The one quantization grid (src/quant/grid.ts): rounding, the AWQ and GPTQ
// group parameters on known values, and the bit packing every format uses.
import t from 'tap';
import { f16ToF32 } from '../../src/io/dtypes.js';
import { AWQ_MIN_RANGE, getBits, groupParams, groupRange, putBits, quantizeCode, roundHalfEven } from '../../src/quant/grid.js';

t.test('roundHalfEven is torch.round (half to even)', async (t) => {
  for (const [x, r] of [[0.5, 0], [1.5, 2], [2.5, 2], [-0.5, -0], [-1.5, -2], [-2.5, -2], [2.4, 2], [2.6, 3], [-2.6, -3], [2.4999, 2], [-3.6, -4], [7, 7]] as const) {
    t.equal(roundHalfEven(x), r, `round(${x})`);
  }
});

t.test('AWQ style: max − min, clamped at 1e-5', async (t) => {
  // group [-1, 2]: s = 3/15 = 0.2 -> f16 0x3266, z = -round(-1/s) = 5
  const p = groupParams({ bits: 4, style: 'awq' }, -1, 2);
  t.same(p, { scaleBits: 0x3266, scale: 0.199951171875, zero: 5 });
  t.same([-1, 0, 0.5, 2].map((w) => quantizeCode(w, p.scale, p.zero, 15)), [0, 5, 8, 15]);
  t.equal(groupParams({ bits: 4, style: 'awq' }, 0, 0).scale, f16ToF32(groupParams({ bits: 4, style: 'awq' }, 0, AWQ_MIN_RANGE).scaleBits));
  t.equal(groupParams({ bits: 4, style: 'awq' }, 1, 3).zero, 0, 'all positive: z clamps at 0');
  t.equal(groupParams({ bits: 4, style: 'awq' }, -3, -1).zero, 15, 'all negative: z clamps at qmax');
  t.equal(groupParams({ bits: 2, style: 'awq' }, -3, -1).zero, 3, 'qmax follows the width');
});

t.test('GPTQ style: the range includes 0; sym; minZero', async (t) => {
  const asym = groupParams({ bits: 4, style: 'gptq' }, 1, 3); // range [0, 3]
  t.equal(asym.scale, f16ToF32(asym.scaleBits));
  t.equal(asym.zero, 0);
  t.equal(groupParams({ bits: 4, style: 'gptq', minZero: 1 }, 1, 3).zero, 1, 'minZero');
  const sym = groupParams({ bits: 4, style: 'gptq', sym: true }, -1, 3); // 2·max|w| = 6
  t.equal(sym.zero, 8);
  t.equal(sym.scaleBits, groupParams({ bits: 4, style: 'gptq' }, -3, 3).scaleBits);
  t.ok(groupParams({ bits: 3, style: 'gptq' }, 0, 0).scale > 0, 'all zero: a positive scale');
  t.throws(() => groupParams({ bits: 4, style: 'awq' }, -1e30, 1e30), { code: 'SHOAL_ERR_INVALID_ARG' });
});

t.test('groupRange reads a strided group and rejects non-finite values', async (t) => {
  t.same(groupRange([5, -1, 9, 2, 7, 3], 1, 3, 2), { mn: -1, mx: 3 });
  t.throws(() => groupRange([1, NaN, 2], 0, 3), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => groupRange([1, Infinity], 0, 2), { code: 'SHOAL_ERR_INVALID_ARG' });
});

t.test('putBits/getBits: values straddling words round-trip', async (t) => {
  for (const bits of [2, 3, 4, 8]) {
    const n = 64;
    const words = new Uint32Array(Math.ceil((n * bits) / 32) * 2);
    const vals = Array.from({ length: n }, (_, i) => (i * 7 + 3) % (1 << bits));
    vals.forEach((v, i) => putBits(words, 1, 2, i * bits, bits, v)); // stride 2, base 1: every other word
    t.same(vals.map((_, i) => getBits(words, 1, 2, i * bits, bits)), vals, `${bits}-bit`);
    t.ok(words.every((w, i) => i % 2 === 1 || w === 0), 'the other stream is untouched');
  }
});
