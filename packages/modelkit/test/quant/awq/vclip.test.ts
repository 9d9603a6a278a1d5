// The attention-averaged inputs behind `--v-clip-error attention`: v_proj's weight
// error d reaches o_proj's input as ā^q_t·d, so a change Δ of v_proj's rows must
// move every query head's attention output by exactly the averaged inputs · Δ.
import t from 'tap';
import { backendOps } from '@shoal/engine';
import type { LinearKind, ModelShape } from '../../../src/arch/model-shapes.js';
import { attentionAveragedInputs, type LayerWeights } from '../../../src/quant/awq/quantize-awq.js';
import { rand } from '../helpers.js';

function xwT(x: Float32Array, M: number, w: Float32Array, N: number, K: number): Float32Array {
  const y = new Float32Array(M * N);
  for (let m = 0; m < M; m++) {
    for (let n = 0; n < N; n++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += x[m * K + k]! * w[n * K + k]!;
      y[m * N + n] = s;
    }
  }
  return y;
}

t.test('attention-averaged inputs · Δ = change of the attention output when v_proj changes by Δ (GQA, D not a multiple of headDim)', async (t) => {
  for (const { D, heads, kvHeads, hd } of [{ D: 16, heads: 4, kvHeads: 2, hd: 4 }, { D: 18, heads: 4, kvHeads: 1, hd: 4 }]) {
    const seqlen = 8;
    const T = 3 * seqlen;
    const qd = heads * hd;
    const kvd = kvHeads * hd;
    const shape = { hiddenSize: D, heads, kvHeads, headDim: hd } as ModelShape;
    const invFreq = new Float32Array(hd / 2).map((_, i) => 1 / Math.pow(10000, (2 * i) / hd));
    const h = rand(T * D, 1);
    const wq = rand(qd * D, 2);
    const wk = rand(kvd * D, 3);
    const wv = rand(kvd * D, 4);
    const delta = rand(kvd * D, 5);
    const qk = { w: { 'self_attn.q_proj': wq, 'self_attn.k_proj': wk } as Record<LinearKind, Float32Array>, bias: {} } satisfies Pick<LayerWeights, 'w' | 'bias'>;
    const rows = [0, 5, 8, 13, 23];
    const avg = await attentionAveragedInputs({ shape, T, seqlen, invFreq }, h, qk, rows);
    t.equal(avg.length, kvHeads);

    const q = xwT(h, T, wq, qd, D);
    const k = xwT(h, T, wk, kvd, D);
    const a0 = await backendOps().attention(q, k, xwT(h, T, wv, kvd, D), T, seqlen, heads, kvHeads, hd, invFreq);
    const a1 = await backendOps().attention(q, k, xwT(h, T, wv.map((v, i) => v + delta[i]!), kvd, D), T, seqlen, heads, kvHeads, hd, invFreq);
    const perKv = heads / kvHeads;
    let err = 0;
    let scale = 0;
    rows.forEach((row, i) => {
      for (let qh = 0; qh < heads; qh++) {
        const kh = Math.floor(qh / perKv);
        const xbar = avg[kh]!.subarray((i * perKv + (qh % perKv)) * D, (i * perKv + (qh % perKv) + 1) * D);
        for (let j = 0; j < hd; j++) {
          let pred = 0;
          for (let c = 0; c < D; c++) pred += xbar[c]! * delta[(kh * hd + j) * D + c]!;
          const got = a1[row * qd + qh * hd + j]! - a0[row * qd + qh * hd + j]!;
          err = Math.max(err, Math.abs(pred - got));
          scale = Math.max(scale, Math.abs(got));
        }
      }
    });
    t.ok(scale > 0.05, `the perturbation moves the output (${scale})`);
    t.ok(err < 1e-5, `D ${D}, ${heads}/${kvHeads} heads: max |ā·Δ − Δout| = ${err}`);
  }
});
