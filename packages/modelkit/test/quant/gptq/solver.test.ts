// The native GPTQ solver (native/addon/gptq.cpp via ops.gptq) against a plain
// float64 implementation of the same algorithm, written here line by line after
// the published reference (GPTQ `fasterquant`): explicit inverse of the damped
// Hessian by Gauss-Jordan, its Cholesky factor, the block loop with W1 / Err1 and
// the lazy update, grids (quant/grid.ts, the one grid) from the global W at each
// group start. Codes, scales,
// zeros and g_idx must be equal; and on every case GPTQ's quadratic error is
// below round-to-nearest's on the same grid.
import t from 'tap';
import { backendOps } from '@shoal/engine';
import { Rng } from '../../../src/synth/gen-model.js';
import { f16ToF32 } from '../../../src/io/dtypes.js';
import { groupParams, quantizeCode } from '../../../src/quant/grid.js';
import { accumulateHessian, gptqLinear } from '../../../src/quant/gptq/solve.js';

interface RefOpts { bits: number; G: number; damp: number; actOrder: boolean; staticGroups: boolean; sym: boolean; minZero: number; block: number }

/** The one grid (quant/grid.ts), GPTQ style: range includes 0, f16 scale. */
function grid(vals: number[], o: RefOpts): { s: number; z: number } {
  const p = groupParams({ bits: o.bits, style: 'gptq', sym: o.sym, minZero: o.minZero }, Math.min(...vals), Math.max(...vals));
  return { s: p.scale, z: p.zero };
}

const quant = (w: number, g: { s: number; z: number }, maxq: number) => quantizeCode(w, g.s, g.z, maxq);

function inverse(A: number[][]): number[][] {
  const n = A.length;
  const M = A.map((r, i) => [...r, ...Array.from({ length: n }, (_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(M[r]![c]!) > Math.abs(M[p]![c]!)) p = r;
    [M[c], M[p]] = [M[p]!, M[c]!];
    const d = M[c]![c]!;
    for (let j = 0; j < 2 * n; j++) M[c]![j] = M[c]![j]! / d;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = M[r]![c]!;
      for (let j = 0; j < 2 * n; j++) M[r]![j] = M[r]![j]! - f * M[c]![j]!;
    }
  }
  return M.map((r) => r.slice(n));
}

/** Upper U with A = UᵀU. */
function choleskyUpper(A: number[][]): number[][] {
  const n = A.length;
  const L = A.map(() => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let s = A[i]![j]!;
      for (let k = 0; k < j; k++) s -= L[i]![k]! * L[j]![k]!;
      L[i]![j] = i === j ? Math.sqrt(s) : s / L[j]![j]!;
    }
  }
  return L[0]!.map((_, i) => L.map((row) => row[i]!)); // Lᵀ
}

/** GPTQ as published, float64, on W [N][K] and H [K][K]. */
function referenceGptq(W0: number[][], H0: number[][], o: RefOpts) {
  const N = W0.length;
  const K = H0.length;
  const maxq = 2 ** o.bits - 1;
  const W = W0.map((r) => [...r]);
  let H = H0.map((r) => [...r]);
  for (let k = 0; k < K; k++) {
    if (H[k]![k] === 0) {
      H[k]![k] = 1;
      for (let n = 0; n < N; n++) W[n]![k] = 0;
    }
  }
  const groups: { s: number; z: number }[][] = []; // static: [group][row]
  if (o.staticGroups) for (let g = 0; g < K / o.G; g++) groups.push(W.map((r) => grid(r.slice(g * o.G, (g + 1) * o.G), o)));
  let perm = Array.from({ length: K }, (_, i) => i);
  if (o.actOrder) {
    perm = perm.sort((a, b) => H[b]![b]! - H[a]![a]! || a - b);
    const Wp = W.map((r) => perm.map((p) => r[p]!));
    W.splice(0, N, ...Wp);
    H = perm.map((i) => perm.map((j) => H[i]![j]!));
  }
  let mean = 0;
  for (let k = 0; k < K; k++) mean += H[k]![k]! / K;
  for (let k = 0; k < K; k++) H[k]![k] = H[k]![k]! + o.damp * mean;
  const Hinv = choleskyUpper(inverse(H));
  const Q = W.map(() => new Array<number>(K).fill(0));
  const scales: number[][] = []; // [group][row] in discovery order
  const zeros: number[][] = [];
  let cur: { s: number; z: number }[] = [];
  for (let i1 = 0; i1 < K; i1 += o.block) {
    const i2 = Math.min(i1 + o.block, K);
    const W1 = W.map((r) => r.slice(i1, i2));
    const Err1 = W.map(() => new Array<number>(i2 - i1).fill(0));
    for (let i = 0; i < i2 - i1; i++) {
      const d = Hinv[i1 + i]![i1 + i]!;
      let gr: { s: number; z: number }[];
      if (!o.staticGroups) {
        if ((i1 + i) % o.G === 0) {
          cur = W.map((r) => grid(r.slice(i1 + i, i1 + i + o.G), o));
          scales.push(cur.map((g) => g.s));
          zeros.push(cur.map((g) => g.z));
        }
        gr = cur;
      } else {
        gr = groups[Math.floor(perm[i1 + i]! / o.G)]!;
      }
      for (let n = 0; n < N; n++) {
        const w = W1[n]![i]!;
        const qv = quant(w, gr[n]!, maxq);
        Q[n]![i1 + i] = qv;
        const err = (w - (qv - gr[n]!.z) * gr[n]!.s) / d;
        for (let j = i; j < i2 - i1; j++) W1[n]![j] = W1[n]![j]! - err * Hinv[i1 + i]![i1 + j]!;
        Err1[n]![i] = err;
      }
    }
    for (let n = 0; n < N; n++) {
      for (let j = i2; j < K; j++) {
        let s = 0;
        for (let c = 0; c < i2 - i1; c++) s += Err1[n]![c]! * Hinv[i1 + c]![j]!;
        W[n]![j] = W[n]![j]! - s;
      }
    }
  }
  // back to input order; g_idx
  const codes = W.map(() => new Array<number>(K).fill(0));
  const gIdx = new Array<number>(K).fill(0);
  for (let i = 0; i < K; i++) {
    for (let n = 0; n < N; n++) codes[n]![perm[i]!] = Q[n]![i]!;
    gIdx[perm[i]!] = o.staticGroups ? Math.floor(perm[i]! / o.G) : Math.floor(i / o.G);
  }
  if (o.staticGroups) {
    for (const g of groups) {
      scales.push(g.map((x) => x.s));
      zeros.push(g.map((x) => x.z));
    }
  }
  return { codes, gIdx, scales, zeros };
}

function problem(N: number, K: number, T: number, seed: number, deadCol: number | null) {
  const rng = new Rng(seed);
  const u = () => rng.nextU32() / 2 ** 32 - 0.5;
  const W = Array.from({ length: N }, () => Array.from({ length: K }, () => u() * 0.2 + (rng.nextU32() % 50 === 0 ? u() : 0)));
  // correlated inputs with channel scales (what makes GPTQ differ from RTN)
  const X = Array.from({ length: T }, () => {
    const base = u();
    return Array.from({ length: K }, (_, k) => (k === deadCol ? 0 : (u() + 0.7 * base) * (1 + (k % 7))));
  });
  const H = Array.from({ length: K }, () => new Array<number>(K).fill(0));
  for (const x of X) for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) H[i]![j] = H[i]![j]! + (2 / T) * x[i]! * x[j]!;
  return { W, H, X };
}

const cases: Array<Partial<RefOpts> & { name: string; K?: number; dead?: number }> = [
  { name: 'w4 g32 block 128', bits: 4, G: 32 },
  { name: 'w4 g32 block 48 (groups across blocks)', bits: 4, G: 32, block: 48 },
  { name: 'w3 g64 act-order', bits: 3, G: 64, actOrder: true },
  { name: 'w2 g32 act-order block 32', bits: 2, G: 32, actOrder: true, block: 32 },
  { name: 'w8 g32', bits: 8, G: 32 },
  { name: 'w4 one group (-1)', bits: 4, G: 128 },
  { name: 'w4 g32 act-order static groups', bits: 4, G: 32, actOrder: true, staticGroups: true },
  { name: 'w4 g32 sym', bits: 4, G: 32, sym: true },
  { name: 'w3 g32 minZero 1 (v1 zeros), dead input', bits: 3, G: 32, minZero: 1, dead: 5 },
];

for (const c of cases) {
  t.test(`native GPTQ equals the float64 reference: ${c.name}`, async (t) => {
    const N = 12;
    const K = c.K ?? 128;
    const o: RefOpts = { bits: 4, G: 32, damp: 0.01, actOrder: false, staticGroups: false, sym: false, minZero: 0, block: 128, ...c };
    const { W, H } = problem(N, K, 200, 7 + (c.bits ?? 0) + (c.block ?? 0), c.dead ?? null);
    const ref = referenceGptq(W, H, o);
    const Hf = new Float64Array(K * K);
    H.forEach((r, i) => Hf.set(r, i * K));
    const Wf = Float32Array.from(W.flat());
    // the reference sees the f32 weights the solver sees
    const W32 = W.map((r, n) => r.map((_, k) => Wf[n * K + k]!));
    const ref32 = referenceGptq(W32, H, o);
    const r = await gptqLinear(Wf, N, K, Hf, {
      bits: o.bits, group: o.G, damp: o.damp, actOrder: o.actOrder, staticGroups: o.staticGroups, sym: o.sym, minZero: o.minZero as 0 | 1, block: o.block, errors: true,
    });
    let diff = 0;
    for (let n = 0; n < N; n++) for (let k = 0; k < K; k++) if (r.ql.q[k * N + n] !== ref32.codes[n]![k]) diff++;
    t.equal(diff, 0, 'codes equal');
    t.same(Array.from(r.gIdx), ref32.gIdx, 'g_idx equal');
    const ng = K / o.G;
    let sdiff = 0;
    for (let g = 0; g < ng; g++) {
      for (let n = 0; n < N; n++) {
        if (f16ToF32(r.ql.scales[g * N + n]!) !== ref32.scales[g]![n] || r.ql.zeros[g * N + n] !== ref32.zeros[g]![n]) sdiff++;
      }
    }
    t.equal(sdiff, 0, 'scales and zeros equal');
    t.ok(ref.codes.length === N, 'reference ran');
    t.ok(r.relErrGptq! < r.relErrRtn!, `quadratic error GPTQ ${r.relErrGptq!.toExponential(3)} < RTN ${r.relErrRtn!.toExponential(3)}`);
    if (c.dead !== undefined) {
      t.equal(r.dead, 1, 'one dead input');
      for (let n = 0; n < N; n++) t.equal(r.deq[n * K + c.dead], 0, 'dead input weight is zero');
    }
  });
}

t.test('ops.hessian accumulates 2/T XᵀX in float64 through the backend', async (t) => {
  const T = 3000;
  const K = 40;
  const rng = new Rng(3);
  const x = Float32Array.from({ length: T * K }, () => rng.nextU32() / 2 ** 32 - 0.5);
  const H = new Float64Array(K * K);
  await accumulateHessian(H, x.subarray(0, 1000 * K), 1000, K, T);
  await accumulateHessian(H, x.subarray(1000 * K), 2000, K, T);
  let maxErr = 0;
  for (let i = 0; i < K; i++) {
    for (let j = 0; j < K; j++) {
      let s = 0;
      for (let r = 0; r < T; r++) s += x[r * K + i]! * x[r * K + j]!;
      maxErr = Math.max(maxErr, Math.abs(H[i * K + j]! - (2 / T) * s));
    }
  }
  t.ok(maxErr < 1e-5, `max |H − 2/T·XᵀX| = ${maxErr.toExponential(2)}`);
  t.throws(() => backendOps().hessian(x, T, K, new Float64Array(3), 1), /H has 3 values/);
});

t.test('a Hessian that is not positive definite is a clear error', async (t) => {
  const K = 32;
  const H = new Float64Array(K * K);
  for (let i = 0; i < K; i++) for (let j = 0; j < K; j++) H[i * K + j] = 1; // rank 1
  await t.rejects(gptqLinear(new Float32Array(4 * K).fill(0.1), 4, K, H, { bits: 4, group: 32, damp: 0, actOrder: false, staticGroups: false, sym: false, minZero: 0 }),
    { code: 'SHOAL_ERR_NUMERIC', message: /raise --damp/ });
});
