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
  t.match(ops.info(), { backend: 'cpu' });
});
