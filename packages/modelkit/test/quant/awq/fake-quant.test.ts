// Group quantize-dequantize at 2/3/4 bits: the 4-bit path equals formats/awq.ts's
// quantizer bit for bit; the 2/3-bit grids have the right number of levels.
import t from 'tap';
import { dequantizeLinear, quantizeLinear } from '../../../src/formats/awq.js';
import { fakeQuantize } from '../../../src/quant/awq/fake-quant.js';
import { Rng } from '../../../src/synth/gen-model.js';

function randomWeights(n: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(n);
  for (let i = 0; i < n; i++) w[i] = (rng.nextU32() / 2 ** 32 - 0.5) * 0.2 * (i % 37 === 0 ? 8 : 1);
  return w;
}

t.test('4 bits: identical to dequantizeLinear(quantizeLinear(w))', async (t) => {
  const N = 24;
  const K = 128;
  for (const G of [32, 64, 128]) {
    const w = randomWeights(N * K, G);
    // a constant group and a group with exact half-steps
    w.fill(0.25, 0, G);
    const ref = dequantizeLinear(quantizeLinear(w, N, K, G));
    const got = fakeQuantize(w, N, K, G, 4);
    let same = 0;
    for (let i = 0; i < got.length; i++) if (got[i] === Math.fround(ref[i]!)) same++;
    t.equal(same, got.length, `G=${G}: all ${got.length} values equal`);
  }
});

t.test('2 and 3 bits: at most 2^bits levels per group, error grows as bits shrink', async (t) => {
  const N = 16;
  const K = 64;
  const G = 32;
  const w = randomWeights(N * K, 7);
  const err: Record<number, number> = {};
  for (const bits of [2, 3, 4]) {
    const q = fakeQuantize(w, N, K, G, bits);
    let maxLevels = 0;
    for (let off = 0; off < N * K; off += G) maxLevels = Math.max(maxLevels, new Set(q.subarray(off, off + G)).size);
    t.ok(maxLevels <= 1 << bits, `${bits} bits: ${maxLevels} levels per group`);
    t.ok(maxLevels > 1 << (bits - 1), `${bits} bits: the grid is used (${maxLevels} levels)`);
    let e = 0;
    for (let i = 0; i < w.length; i++) e += (w[i]! - q[i]!) ** 2;
    err[bits] = e;
  }
  t.ok(err[2]! > err[3]! && err[3]! > err[4]!, `squared error 2b ${err[2]} > 3b ${err[3]} > 4b ${err[4]}`);
});

t.test('bad input', async (t) => {
  const w = new Float32Array(64);
  t.throws(() => fakeQuantize(w, 2, 32, 32, 5), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  t.throws(() => fakeQuantize(w, 2, 32, 24, 4), { code: 'SHOAL_ERR_GROUP_SIZE' });
  t.throws(() => fakeQuantize(w, 3, 32, 32, 4), { code: 'SHOAL_ERR_SHAPE' });
  const bad = new Float32Array(64);
  bad[3] = NaN;
  t.throws(() => fakeQuantize(bad, 2, 32, 32, 4), { code: 'SHOAL_ERR_INVALID_ARG' });
});
