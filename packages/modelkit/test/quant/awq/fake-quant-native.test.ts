// The addon's native quantize-dequantize (addon/fake-quant.cpp: ops.fakeQuant,
// ops.clipDeltas), which the AWQ searches call for every candidate, against
// the TypeScript reference (awq/fake-quant.ts): bit for bit, with column
// scales, at 2/3/4 bits, on groups with ties, constant values, tiny ranges,
// subnormal-f16 scales and outliers; and the clear error of a non-finite weight.
import t from 'tap';
import { backendOps } from '@shoal/engine';
import { fakeQuantGroup, fakeQuantize } from '../../../src/quant/awq/fake-quant.js';
import { Rng } from '../../../src/synth/gen-model.js';
import { scaleColumns, divColumnsInPlace } from '../../../src/quant/awq/ops.js';

function weights(N: number, K: number, G: number, seed: number): Float32Array {
  const rng = new Rng(seed);
  const w = new Float32Array(N * K);
  for (let i = 0; i < w.length; i++) w[i] = (rng.nextU32() / 2 ** 32 - 0.5) * 0.2 * (i % 37 === 0 ? 8 : 1);
  w.fill(0.25, 0, G); // constant group
  for (let j = 0; j < G; j++) w[G + j] = (j % 16) * 0.0625 - 0.5; // exact half-steps at 4 bits
  for (let j = 0; j < G; j++) w[2 * G + j] = (j - G / 2) * 1e-9; // range below 1e-5: the minimum range
  for (let j = 0; j < G; j++) w[3 * G + j] = (j - G / 2) * 3e-6; // f16-subnormal scale
  w[4 * G] = 900; // outlier
  return w;
}

function firstDiff(a: Float32Array, b: Float32Array): string {
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return `index ${i}: ${a[i]} vs ${b[i]}`;
  return 'none';
}

t.test('ops.fakeQuant equals fakeQuantize, with and without column scales', async (t) => {
  const ops = backendOps();
  for (const bits of [2, 3, 4]) {
    for (const [N, K, G] of [[24, 128, 32], [13, 192, 64], [8, 256, 128]] as const) {
      const w = weights(N, K, G, bits * 1000 + G);
      const ref = fakeQuantize(w, N, K, G, bits);
      const got = await ops.fakeQuant(w, N, K, G, bits, null);
      t.equal(firstDiff(ref, got), 'none', `w${bits}g${G} [${N}, ${K}] plain`);
      const rng = new Rng(7 + bits);
      const s = new Float64Array(K).map(() => Math.pow(rng.nextU32() / 2 ** 32 + 0.01, 0.6) * 3);
      // the AWQ search's reference: Q(w·diag(s))·diag(s)⁻¹ in TypeScript
      const ws = scaleColumns(w, N, K, s);
      fakeQuantize(ws, N, K, G, bits, ws);
      divColumnsInPlace(ws, N, K, s);
      const gotS = await ops.fakeQuant(w, N, K, G, bits, s);
      t.equal(firstDiff(ws, gotS), 'none', `w${bits}g${G} [${N}, ${K}] scaled`);
    }
  }
});

t.test('ops.clipDeltas equals the clamp + quantize-dequantize of the clip search', async (t) => {
  const ops = backendOps();
  const steps = 10;
  const nGrid = 20;
  for (const bits of [3, 4]) {
    const [N, K, G] = [11, 192, 64];
    const w = weights(N, K, G, 99 + bits);
    for (let g = 0; g < K / G; g++) {
      const got = await ops.clipDeltas(w, N, K, G, g, bits, steps, nGrid);
      const ref = new Float32Array(N * steps * G);
      const orig = new Float32Array(G);
      const c = new Float32Array(G);
      for (let n = 0; n < N; n++) {
        let m = 0;
        for (let j = 0; j < G; j++) {
          orig[j] = w[n * K + g * G + j]!;
          m = Math.max(m, Math.abs(orig[j]!));
        }
        for (let i = 0; i < steps; i++) {
          const mv = m * (1 - i / nGrid);
          for (let j = 0; j < G; j++) c[j] = Math.min(mv, Math.max(-mv, orig[j]!));
          fakeQuantGroup(c, 0, G, (1 << bits) - 1, c);
          for (let j = 0; j < G; j++) ref[(n * steps + i) * G + j] = c[j]! - orig[j]!;
        }
      }
      t.equal(firstDiff(ref, got), 'none', `w${bits} group ${g}`);
    }
  }
});

t.test('a non-finite weight or a bad shape is a clear error, not a crash', async (t) => {
  const ops = backendOps();
  const w = new Float32Array(64).fill(0.1);
  w[5] = NaN;
  await t.rejects(ops.fakeQuant(w, 2, 32, 32, 4, null), { code: 'SHOAL_ERR_INVALID_ARG', message: /non-finite/ });
  w[5] = Infinity;
  await t.rejects(ops.clipDeltas(w, 2, 32, 32, 0, 4, 10, 20), { code: 'SHOAL_ERR_INVALID_ARG', message: /non-finite/ });
  await t.rejects(async () => ops.fakeQuant(new Float32Array(64), 2, 32, 24, 4, null), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(async () => ops.fakeQuant(new Float32Array(64), 2, 32, 32, 4, new Float64Array(3)), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => ops.init('tpu' as 'cpu'), { code: 'SHOAL_ERR_BACKEND' });
  t.equal(ops.init('cpu').backend, 'cpu');
  t.equal(ops.info().backend, 'cpu');
});
