// RTN INT4 quantization into the AutoAWQ gemm layout, checked against an
// independent per-element implementation of the AutoAWQ quantizer.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { dequantizeAwq, quantizeLinear } from '../../src/formats/awq.js';
import { generateModel } from '../../src/synth/gen-model.js';
import { LINEAR_KINDS } from '../../src/arch/model-shapes.js';
import { quantizeModel } from '../../src/quant/rtn.js';
import { loadReferenceModel, referenceForward } from '../../src/eval/reference-forward.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { f32ToF16 } from '../../src/io/dtypes.js';
import { storiesPath } from '@shoal/testkit';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-rtn-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const STORIES = storiesPath();

/** Nearest f16 value of a positive float (ties to even), computed on values rather than bits. */
function f16Nearest(x: number): number {
  let e = Math.floor(Math.log2(x));
  if (2 ** e > x) e--;
  if (2 ** (e + 1) <= x) e++;
  const ulp = 2 ** (Math.max(e, -14) - 10);
  const m = x / ulp;
  const f = Math.floor(m);
  const d = m - f;
  return (d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f) * ulp;
}

/** torch.round */
function rne(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** Independent AutoAWQ pseudo-quantization of W [N, K] (zero point, group G along K): returns (q - z) * s as [N, K]. */
function referenceQuantDequant(w: Float32Array, N: number, K: number, G: number): Float64Array {
  const out = new Float64Array(N * K);
  for (let n = 0; n < N; n++) {
    for (let g = 0; g < K / G; g++) {
      const grp = Array.from(w.subarray(n * K + g * G, n * K + (g + 1) * G));
      const mn = Math.min(...grp);
      const mx = Math.max(...grp);
      const s = f16Nearest(Math.max(mx - mn, 1e-5) / 15);
      const z = Math.min(15, Math.max(0, -rne(mn / s)));
      grp.forEach((v, i) => {
        const q = Math.min(15, Math.max(0, rne(v / s) + z));
        out[n * K + g * G + i] = (q - z) * s;
      });
    }
  }
  return out;
}

t.test('stories260K g32: layout, config and exact dequantized weights', async (t) => {
  const out = path.join(root, 'q32');
  const r = quantizeModel({ model: STORIES, out, groupSize: 32 });
  // gate/up have 172 outputs (not a multiple of 8: cannot pack), down_proj 172 inputs (not a multiple of 32)
  t.same(r.modulesToNotConvert, ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']);
  t.equal(r.quantizedLinears, 20);
  t.equal(r.keptLinears, 15);
  t.comment(`mean relative weight error ${r.meanRelativeError.toFixed(4)}`);
  t.ok(r.meanRelativeError > 0.01 && r.meanRelativeError < 0.2);
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
  t.same(cfg.quantization_config, {
    quant_method: 'awq', bits: 4, group_size: 32, zero_point: true, version: 'gemm',
    modules_to_not_convert: ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'],
  });
  t.equal(cfg.torch_dtype, 'float16');
  t.equal(cfg.hidden_size, 64, 'other config fields are kept');
  for (const f of ['generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) t.ok(existsSync(path.join(out, f)), f);

  const src = Checkpoint.open(STORIES);
  const dst = Checkpoint.open(out);
  t.teardown(() => { src.close(); dst.close(); });
  t.notOk(dst.has('lm_head.weight'));
  let checked = 0;
  for (let l = 0; l < 5; l++) {
    for (const kind of LINEAR_KINDS) {
      const m = `model.layers.${l}.${kind}`;
      const [N, K] = src.entry(`${m}.weight`).shape as [number, number];
      const w = src.readFloat32(`${m}.weight`);
      if (kind.startsWith('mlp.')) {
        t.equal(dst.entry(`${m}.weight`).dtype, 'F16');
        const h = dst.read(`${m}.weight`) as Uint16Array;
        t.ok(h.every((x, i) => x === f32ToF16(w[i]!)), `${m} kept as f16`);
        continue;
      }
      t.same(dst.entry(`${m}.qweight`).shape, [K, N / 8]);
      t.same(dst.entry(`${m}.qzeros`).shape, [K / 32, N / 8]);
      t.same(dst.entry(`${m}.scales`), { name: `${m}.scales`, dtype: 'F16', shape: [K / 32, N], begin: dst.entry(`${m}.scales`).begin, end: dst.entry(`${m}.scales`).end });
      const deq = dequantizeAwq(dst.readInt32(`${m}.qweight`), dst.readInt32(`${m}.qzeros`), dst.read(`${m}.scales`) as Uint16Array, K, N, 32);
      const want = referenceQuantDequant(w, N, K, 32);
      let diff = 0;
      for (let i = 0; i < want.length; i++) if (deq[i] !== want[i]) diff++;
      t.equal(diff, 0, `${m}: dequantized == reference quantizer`);
      checked++;
    }
  }
  t.equal(checked, 20);
  const ne = dst.read('model.norm.weight') as Uint16Array;
  const ns = src.readFloat32('model.norm.weight');
  t.ok(ne.every((x, i) => x === f32ToF16(ns[i]!)), 'norm kept as f16');

  // the quantized model still predicts the same next tokens for a prompt
  const ids = [1, 403, 407, 261, 378, 432, 383, 286];
  const a = referenceForward(loadReferenceModel(STORIES), ids);
  const b = referenceForward(loadReferenceModel(out), ids);
  const argmax = (x: Float64Array) => x.indexOf(Math.max(...x));
  const agree = a.filter((x, i) => argmax(x) === argmax(b[i]!)).length;
  t.comment(`top-1 agreement F32 vs RTN g32: ${agree}/${ids.length}`);
  t.ok(agree >= ids.length - 1);
});

t.test('stories260K g128: nothing fits, so nothing is written and the error names the linears', async (t) => {
  const out = path.join(root, 'q128');
  t.throws(() => quantizeModel({ model: STORIES, out, groupSize: 128, dtype: 'f32' }),
    { code: 'SHOAL_ERR_GROUP_SIZE', message: /fits none of the linears.*down_proj \(in_features 172, out_features 64\).*Groups that would work: 64/ });
  t.notOk(existsSync(out), 'no output folder');
  const r = quantizeModel({ model: STORIES, out, groupSize: 64, dtype: 'f32' });
  t.equal(r.quantizedLinears, 20, 'q, k, v, o quantized (gate/up have 172 outputs, not a multiple of 8)');
  t.same(r.modulesToNotConvert, ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']);
  t.match(r.note, /does not fit gate_proj, up_proj \(in_features 64, out_features 172\); down_proj \(in_features 172, out_features 64\)/);
  const ck = Checkpoint.open(out);
  t.teardown(() => ck.close());
  t.equal(ck.entry('model.layers.0.mlp.gate_proj.weight').dtype, 'F32', '--dtype f32 keeps f32');
});

t.test('synthetic F32 model: every linear quantized, sharded source, options and errors', async (t) => {
  const src = path.join(root, 'src');
  generateModel({ out: src, shape: 'qwen2-1.5b', overrides: { layers: 2, vocabSize: 200, hiddenSize: 128, intermediateSize: 256, heads: 4, kvHeads: 2 }, dtype: 'f32', seed: 4, maxShardBytes: 300_000 });
  const out = path.join(root, 'q64');
  const r = quantizeModel({ model: src, out, groupSize: 64 });
  t.equal(r.quantizedLinears, 14);
  t.same(r.modulesToNotConvert, []);
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, { modules_to_not_convert?: unknown }>;
  t.equal(cfg.quantization_config!.modules_to_not_convert, null);
  const s = Checkpoint.open(src);
  const d = Checkpoint.open(out);
  t.teardown(() => { s.close(); d.close(); });
  t.equal(d.entry('model.layers.1.self_attn.k_proj.bias').dtype, 'F16');
  const w = s.readFloat32('model.layers.1.mlp.down_proj.weight');
  const ql = quantizeLinear(w, 128, 256, 64);
  t.same(Array.from(d.read('model.layers.1.mlp.down_proj.scales') as Uint16Array), Array.from(ql.scales));
  const want = referenceQuantDequant(w, 128, 256, 64);
  const got = dequantizeAwq(d.readInt32('model.layers.1.mlp.down_proj.qweight'), d.readInt32('model.layers.1.mlp.down_proj.qzeros'), d.read('model.layers.1.mlp.down_proj.scales') as Uint16Array, 256, 128, 64);
  t.same(Array.from(got), Array.from(want));
  // errors
  t.throws(() => quantizeModel({ model: src, out: path.join(root, 'x'), method: 'awq' }), { code: 'SHOAL_ERR_NOT_IMPLEMENTED' });
  t.throws(() => quantizeModel({ model: src, out: path.join(root, 'x'), method: 'gptq' }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => quantizeModel({ model: src, out: path.join(root, 'x'), bits: 3 }), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  t.throws(() => quantizeModel({ model: src, out: path.join(root, 'x'), groupSize: 0 }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => quantizeModel({ model: out, out: path.join(root, 'x') }), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' }, 'already quantized');
  t.throws(() => quantizeModel({ model: path.join(root, 'none'), out: path.join(root, 'x') }), { code: 'SHOAL_ERR_CONFIG' });
  t.throws(() => quantizeModel({ model: src, out }), { code: 'SHOAL_ERR_OUTPUT_EXISTS' });
  t.notOk(existsSync(path.join(root, 'x')));
});
