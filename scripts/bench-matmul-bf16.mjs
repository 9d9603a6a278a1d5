#!/usr/bin/env node
// bench-matmul-bf16.mjs — one-op A/B of ops.matmul precision 'f32' vs 'bf16'
// (the AWQ quantizer's GEMM): [M, K] × [N, K]ᵀ, the two alternating, median
// GFLOP/s of wall time per precision. Needs the built addon (`make native`).
//   node scripts/bench-matmul-bf16.mjs [--m 1024,4096] [--n 5632] [--k 2048] [--reps 5]
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: { m: { type: 'string', default: '1024,4096' }, n: { type: 'string', default: '5632' },
    k: { type: 'string', default: '2048' }, reps: { type: 'string', default: '5' } },
});
const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const ops = createRequire(import.meta.url)(process.env.SHOAL_ADDON ?? path.join(root, 'native/build/Release/shoal.node')).ops;
const N = Number(a.n), K = Number(a.k), reps = Number(a.reps);

const rand = (n) => { const v = new Float32Array(n); for (let i = 0; i < n; i++) v[i] = Math.random() - 0.5; return v; };
const median = (v) => { const s = [...v].sort((p, q) => p - q); return s[s.length >> 1]; };

console.log(JSON.stringify(ops.info()));
const w = rand(N * K);
for (const M of a.m.split(',').map(Number)) {
  const x = rand(M * K);
  const gflops = { f32: [], bf16: [] };
  await ops.matmul(x, M, w, N, K, 'f32'); // warm-up: thread pool, scratch buffers
  await ops.matmul(x, M, w, N, K, 'bf16');
  for (let r = 0; r < reps; r++) {
    for (const p of ['f32', 'bf16']) {
      const t0 = process.hrtime.bigint();
      await ops.matmul(x, M, w, N, K, p);
      gflops[p].push((2 * M * N * K) / Number(process.hrtime.bigint() - t0));
    }
  }
  const f = median(gflops.f32), b = median(gflops.bf16);
  console.log(`M=${M} N=${N} K=${K}: f32 ${f.toFixed(1)} GFLOP/s, bf16 ${b.toFixed(1)} GFLOP/s (${(b / f).toFixed(2)}x); ` +
    `runs f32 [${gflops.f32.map((v) => v.toFixed(1))}] bf16 [${gflops.bf16.map((v) => v.toFixed(1))}]`);
}
