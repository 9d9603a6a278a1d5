// The addon's backend ops used by the quantizer (addon-ops.cpp) against plain
// TypeScript: matmul y = x·wᵀ, and causal RoPE attention over blocks.
import t from 'tap';
import { addon } from '../src/addon.js';
import { rand } from '@shoal/testkit';

t.test('ops.matmul equals x·wᵀ (odd shapes, several row chunks)', async (t) => {
  for (const [M, K, N] of [[3, 5, 7], [37, 64, 24], [9000, 16, 12]] as const) {
    const x = rand(M * K, M);
    const w = rand(N * K, N);
    const y = await addon().ops.matmul(x, M, w, N, K);
    t.equal(y.length, M * N);
    let err = 0;
    for (let m = 0; m < M; m += Math.max(1, Math.floor(M / 50))) {
      for (let n = 0; n < N; n++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
        err = Math.max(err, Math.abs(s - y[m * N + n]!));
      }
    }
    t.ok(err < 1e-5, `[${M}, ${K}] x [${N}, ${K}]^T: max error ${err}`);
  }
});

// a copy rounded to bf16, to nearest even (the inputs here are finite)
function bf16(a: Float32Array): Float32Array {
  const r = Float32Array.from(a);
  const u = new Uint32Array(r.buffer);
  for (let i = 0; i < u.length; i++) u[i] = ((u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 0) & 0xffff0000;
  return r;
}

t.test("ops.matmul 'bf16' equals bf16-rounded inputs with f32 sums, odd element of each pair first", async (t) => {
  // bf16 × bf16 and the f32 sum with it are exact in f64, so fround(p + acc) is one
  // f32 FMA: the JavaScript chain must match bit for bit on every ISA.
  for (const [M, K, N] of [[1, 5, 3], [5, 7, 9], [37, 64, 33], [600, 257, 40]] as const) {
    const x = rand(M * K, M + 100);
    const w = rand(N * K, N + 100);
    const y = await addon().ops.matmul(x, M, w, N, K, 'bf16');
    const yf = await addon().ops.matmul(x, M, w, N, K, 'f32');
    const y0 = await addon().ops.matmul(x, M, w, N, K);
    t.same(yf, y0, `[${M}, ${K}] x [${N}, ${K}]^T: 'f32' is the default`);
    const xb = bf16(x);
    const wb = bf16(w);
    let bad = 0;
    let differs = false;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let acc = 0;
        for (let k = 0; k < K; k += 2) {
          if (k + 1 < K) acc = Math.fround(xb[m * K + k + 1]! * wb[n * K + k + 1]! + acc);
          acc = Math.fround(xb[m * K + k]! * wb[n * K + k]! + acc);
        }
        if (acc !== y[m * N + n]) bad++;
        if (y[m * N + n] !== yf[m * N + n]) differs = true;
      }
    }
    t.equal(bad, 0, `[${M}, ${K}] x [${N}, ${K}]^T: every output equals the bf16 chain`);
    t.ok(differs, `[${M}, ${K}] x [${N}, ${K}]^T: 'bf16' is not the f32 result`);
  }
  t.type(addon().ops.info().bf16Native, 'boolean');
});

t.test('ops.attention equals RoPE + causal softmax attention per block (GQA)', async (t) => {
  const seqlen = 6;
  const blocks = 2;
  const H = 4;
  const Hkv = 2;
  const hd = 8;
  const T = seqlen * blocks;
  const q = rand(T * H * hd, 1);
  const k = rand(T * Hkv * hd, 2);
  const v = rand(T * Hkv * hd, 3);
  const inv = new Float32Array(hd / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / hd));
  const out = await addon().ops.attention(q, k, v, T, seqlen, H, Hkv, hd, inv);
  const rope = (src: Float32Array, row: number, heads: number, pos: number): Float64Array => {
    const r = Float64Array.from(src.subarray(row * heads * hd, (row + 1) * heads * hd));
    for (let h = 0; h < heads; h++) {
      for (let i = 0; i < hd / 2; i++) {
        const a = pos * inv[i]!;
        const x0 = r[h * hd + i]!;
        const x1 = r[h * hd + i + hd / 2]!;
        r[h * hd + i] = x0 * Math.cos(a) - x1 * Math.sin(a);
        r[h * hd + i + hd / 2] = x1 * Math.cos(a) + x0 * Math.sin(a);
      }
    }
    return r;
  };
  let err = 0;
  for (let b = 0; b < blocks; b++) {
    for (let p = 0; p < seqlen; p++) {
      const row = b * seqlen + p;
      const qr = rope(q, row, H, p);
      for (let h = 0; h < H; h++) {
        const kh = Math.floor(h / (H / Hkv));
        const sc: number[] = [];
        for (let j = 0; j <= p; j++) {
          const kr = rope(k, b * seqlen + j, Hkv, j);
          let d = 0;
          for (let i = 0; i < hd; i++) d += qr[h * hd + i]! * kr[kh * hd + i]!;
          sc.push(d / Math.sqrt(hd));
        }
        const mx = Math.max(...sc);
        const e = sc.map((s) => Math.exp(s - mx));
        const z = e.reduce((a, c) => a + c, 0);
        for (let i = 0; i < hd; i++) {
          let o = 0;
          for (let j = 0; j <= p; j++) o += (e[j]! / z) * v[(b * seqlen + j) * Hkv * hd + kh * hd + i]!;
          err = Math.max(err, Math.abs(o - out[row * H * hd + h * hd + i]!));
        }
      }
    }
  }
  t.ok(err < 1e-5, `max error ${err}`);
});

t.test('ops reject bad shapes with a code', async (t) => {
  const ops = addon().ops;
  t.throws(() => ops.matmul(new Float32Array(6), 2, new Float32Array(6), 2, 4), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => ops.matmul(new Float64Array(6) as unknown as Float32Array, 2, new Float32Array(6), 2, 3), { code: 'SHOAL_ERR_INVALID_ARG' });
  const f = new Float32Array(16);
  t.throws(() => ops.attention(f, f, f, 3, 2, 1, 1, 16, new Float32Array(8)), { code: 'SHOAL_ERR_INVALID_ARG' });
  const x = new Float32Array(6);
  t.throws(() => ops.matmul(x, 2, x, 2, 3, 'f16' as 'f32'), { code: 'SHOAL_ERR_INVALID_ARG', message: /precision must be 'f32' or 'bf16'/ });
  t.throws(() => ops.matmul(x, 2, x, 2, 3, 16 as unknown as 'f32'), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.match(ops.info(), { backend: 'cpu' });
});
