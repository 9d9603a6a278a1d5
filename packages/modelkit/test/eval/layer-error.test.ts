// shoal eval layer-error (eval/layer-error.ts, eval/layer-weights.ts): the FP
// model against itself is exactly 0; one weight perturbed by a known Δ gives the
// error computed here by hand in float64; RTN / GPTQ / AWQ checkpoints of
// stories260K (AutoAWQ gemm, GPTQ v1 and v2, fake-quantized F32) load and give
// finite errors in the expected order; mismatched models and unsupported inputs
// are ShoalErrors with their codes.
import t from 'tap';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HfModelTokenizer } from '@shoal/engine';
import { storiesPath } from '@shoal/testkit';
import { generateModel } from '../../src/synth/gen-model.js';
import { heldOutTokens, measureLayerError, type LayerErrorResult } from '../../src/eval/layer-error.js';
import { ropeInvFreq } from '../../src/eval/reference-forward.js';
import { openModelFolder } from '../../src/eval/layer-weights.js';
import { readCalibDocuments } from '../../src/quant/awq/calib.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { writeSafetensors, type TensorData } from '../../src/io/safetensors-write.js';
import { LINEAR_KINDS, type LinearKind, type ModelShape } from '../../src/arch/model-shapes.js';
import { quantizeModel } from '../../src/quant/rtn.js';
import { quantizeModelGptq } from '../../src/quant/gptq.js';
import { quantizeAwqModel } from '../../src/quant/awq/quantize-awq.js';
import { calibDocs, skipStories, STORIES, STORIES_TXT } from '../quant/helpers.js';
import { runToolCli } from '../helpers/cli.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-layer-error-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

// a small text: 60 paragraphs of simple English (the stories260K tokenizer drives the tiny model)
const TEXT = path.join(root, 'text.txt');
writeFileSync(TEXT, Array.from({ length: 60 }, (_, i) =>
  `Once upon a time there was a little ${['cat', 'dog', 'bird', 'girl'][i % 4]} named ${['Tom', 'Lily', 'Ben', 'Sue', 'Max'][i % 5]}. `
  + `Every day ${i % 2 ? 'she' : 'he'} went to the park to play with a red ball, and ${i} friends came too.`).join('\n\n'));
const SAMPLES = 2;
const SEQLEN = 64;

/** A tiny random model (hidden 384, FFN 640, 6/2 heads of 64, 2 layers) in F32 with the stories260K tokenizer. */
function tinyModel(name: string, overrides: Partial<ModelShape> = {}, tokenizer = true): string {
  const out = path.join(root, name);
  generateModel({ out, shape: 'tiny', overrides: { vocabSize: 512, ...overrides }, dtype: 'f32', seed: 7, ...(tokenizer ? { tokenizerDir: storiesPath() } : {}) });
  return out;
}

/** A copy of a model folder with one F32 tensor value changed by delta, or with a config edit. */
function copyModel(src: string, dst: string, edit: { tensor?: string; index?: number; delta?: number; config?: (c: Record<string, unknown>) => void }): void {
  mkdirSync(dst, { recursive: true });
  for (const f of readdirSync(src)) if (!f.endsWith('.safetensors')) copyFileSync(path.join(src, f), path.join(dst, f));
  const ck = Checkpoint.open(src);
  const tensors: TensorData[] = [];
  try {
    for (const name of ck.names()) {
      const e = ck.entry(name);
      const data = ck.read(name);
      if (name === edit.tensor) {
        const f = data as Float32Array;
        f[edit.index!] = f[edit.index!]! + edit.delta!;
      }
      tensors.push({ name, dtype: e.dtype, shape: e.shape, data } as TensorData);
    }
  } finally {
    ck.close();
  }
  writeSafetensors(path.join(dst, 'model.safetensors'), tensors);
  if (edit.config) {
    const c = JSON.parse(readFileSync(path.join(dst, 'config.json'), 'utf8')) as Record<string, unknown>;
    edit.config(c);
    writeFileSync(path.join(dst, 'config.json'), JSON.stringify(c));
  }
}

// ---------------------------------------------------------------------------
// float64 layer forward, written here from the LLaMA definition (HF rotate_half RoPE,
// causal attention within each block of SEQLEN tokens, GQA)
// ---------------------------------------------------------------------------

interface F64Layer { w: Record<LinearKind, Float64Array>; attnNorm: Float64Array; ffnNorm: Float64Array }

function readF64Layer(dir: string, s: ModelShape, l: number): F64Layer {
  const ck = Checkpoint.open(dir);
  try {
    const w = {} as Record<LinearKind, Float64Array>;
    for (const k of LINEAR_KINDS) w[k] = ck.readFloat64(`model.layers.${l}.${k}.weight`);
    return { w, attnNorm: ck.readFloat64(`model.layers.${l}.input_layernorm.weight`), ffnNorm: ck.readFloat64(`model.layers.${l}.post_attention_layernorm.weight`) };
  } finally {
    ck.close();
  }
}

function matmulT(x: Float64Array, T: number, w: Float64Array, N: number, K: number): Float64Array {
  const y = new Float64Array(T * N);
  for (let t = 0; t < T; t++) for (let n = 0; n < N; n++) {
    let a = 0;
    for (let k = 0; k < K; k++) a += x[t * K + k]! * w[n * K + k]!;
    y[t * N + n] = a;
  }
  return y;
}

function rms(x: Float64Array, T: number, D: number, g: Float64Array, eps: number): Float64Array {
  const y = new Float64Array(T * D);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let i = 0; i < D; i++) ss += x[t * D + i]! ** 2;
    const r = 1 / Math.sqrt(ss / D + eps);
    for (let i = 0; i < D; i++) y[t * D + i] = x[t * D + i]! * r * g[i]!;
  }
  return y;
}

function rope(v: Float64Array, T: number, heads: number, hd: number, inv: Float64Array): void {
  for (let t = 0; t < T; t++) {
    const pos = t % SEQLEN;
    for (let h = 0; h < heads; h++) {
      const b = (t * heads + h) * hd;
      for (let i = 0; i < hd / 2; i++) {
        const c = Math.cos(pos * inv[i]!);
        const sn = Math.sin(pos * inv[i]!);
        const x0 = v[b + i]!;
        const x1 = v[b + i + hd / 2]!;
        v[b + i] = x0 * c - x1 * sn;
        v[b + i + hd / 2] = x1 * c + x0 * sn;
      }
    }
  }
}

/** The layer's output and the input of its down_proj, float64. */
function layerF64(s: ModelShape, lw: F64Layer, x: Float64Array, T: number): { y: Float64Array; m: Float64Array } {
  const D = s.hiddenSize;
  const H = s.heads;
  const Hkv = s.kvHeads;
  const hd = s.headDim;
  const F = s.intermediateSize;
  const inv = ropeInvFreq(s);
  const h = rms(x, T, D, lw.attnNorm, s.rmsNormEps);
  const q = matmulT(h, T, lw.w['self_attn.q_proj'], H * hd, D);
  const k = matmulT(h, T, lw.w['self_attn.k_proj'], Hkv * hd, D);
  const v = matmulT(h, T, lw.w['self_attn.v_proj'], Hkv * hd, D);
  rope(q, T, H, hd, inv);
  rope(k, T, Hkv, hd, inv);
  const a = new Float64Array(T * H * hd);
  for (let t = 0; t < T; t++) {
    const start = t - (t % SEQLEN);
    for (let hh = 0; hh < H; hh++) {
      const kv = Math.floor(hh / (H / Hkv));
      const sc: number[] = [];
      for (let u = start; u <= t; u++) {
        let d = 0;
        for (let i = 0; i < hd; i++) d += q[(t * H + hh) * hd + i]! * k[(u * Hkv + kv) * hd + i]!;
        sc.push(d / Math.sqrt(hd));
      }
      const mx = Math.max(...sc);
      const e = sc.map((z) => Math.exp(z - mx));
      const sum = e.reduce((p, z) => p + z, 0);
      for (let u = start; u <= t; u++) for (let i = 0; i < hd; i++) a[(t * H + hh) * hd + i] = a[(t * H + hh) * hd + i]! + (e[u - start]! / sum) * v[(u * Hkv + kv) * hd + i]!;
    }
  }
  const o = matmulT(a, T, lw.w['self_attn.o_proj'], D, H * hd);
  const x1 = x.map((z, i) => z + o[i]!);
  const h2 = rms(x1, T, D, lw.ffnNorm, s.rmsNormEps);
  const g = matmulT(h2, T, lw.w['mlp.gate_proj'], F, D);
  const up = matmulT(h2, T, lw.w['mlp.up_proj'], F, D);
  const m = g.map((z, i) => (z / (1 + Math.exp(-z))) * up[i]!);
  const d = matmulT(m, T, lw.w['mlp.down_proj'], D, F);
  return { y: x1.map((z, i) => z + d[i]!), m };
}

const close = (got: number, want: number, rel: number) => Math.abs(got - want) <= rel * Math.abs(want);

t.test('the FP model against itself: exactly 0 in every layer and every linear', async (t) => {
  const fp = tinyModel('fp');
  const r = await measureLayerError({ model: fp, reference: fp, text: [TEXT], samples: SAMPLES, seqlen: SEQLEN });
  t.equal(r.layers.length, 2);
  t.equal(r.tokens, SAMPLES * SEQLEN);
  t.equal(r.format.kind, 'float');
  for (const l of r.layers) {
    t.equal(l.errSq, 0, `layer ${l.layer}: ‖ŷ − y‖² = 0`);
    t.equal(l.relError, 0);
    t.ok(l.contributionSq > 0, `layer ${l.layer}: the layer does something (‖y − x‖² ${l.contributionSq.toExponential(2)})`);
    t.same(Object.keys(l.linears ?? {}).sort(), [...LINEAR_KINDS].sort(), 'every linear reported (plain float checkpoint)');
    t.ok(Object.values(l.linears!).every((v) => v === 0), 'every per-linear error is 0');
  }
  t.equal(r.meanRelError, 0);
  t.equal(r.totalRelError, 0);
  // the held-out blocks are the end of the text: whole documents, BOS first
  t.equal(r.documents.first + r.documents.count, r.documents.total);
  t.ok(r.documents.first > 0, `documents ${r.documents.first}.. of ${r.documents.total}`);
});

t.test('one weight of layer 1 down_proj perturbed by Δ: the error computed by hand in float64', async (t) => {
  const fp = tinyModel('fp-delta');
  const folder = openModelFolder(fp);
  folder.ck.close();
  const sh = folder.shape;
  const F = sh.intermediateSize;
  const n0 = 17;
  const k0 = 101;
  const delta = 0.5;
  const q = path.join(root, 'perturbed');
  copyModel(fp, q, { tensor: 'model.layers.1.mlp.down_proj.weight', index: n0 * F + k0, delta });
  const r = await measureLayerError({ model: q, reference: fp, text: [TEXT], samples: SAMPLES, seqlen: SEQLEN });

  // by hand: the same held-out tokens, layer 0 in float64 gives layer 1's input;
  // ŷ − y = Δ·m_k0 e_n0 per token, so ‖ŷ − y‖² = Δ² Σ_t m_k0(t)²
  const tok = (await HfModelTokenizer.load(fp, { bos: sh.bosTokenId, eos: sh.eosTokenIds }))!;
  const held = heldOutTokens(readCalibDocuments([TEXT], /\n\s*\n/), tok, SAMPLES, SEQLEN);
  const T = held.tokens.length;
  const D = sh.hiddenSize;
  const ck = Checkpoint.open(fp);
  const emb = ck.readFloat64('model.embed_tokens.weight');
  ck.close();
  const x0 = new Float64Array(T * D);
  held.tokens.forEach((id, i) => x0.set(emb.subarray(id * D, (id + 1) * D), i * D));
  const l0 = layerF64(sh, readF64Layer(fp, sh, 0), x0, T);
  const lw1 = readF64Layer(fp, sh, 1);
  const l1 = layerF64(sh, lw1, l0.y, T);
  let errSq = 0;
  let contrib = 0;
  let wx = 0;
  for (let i = 0; i < T; i++) errSq += (delta * l1.m[i * F + k0]!) ** 2;
  for (let i = 0; i < T * D; i++) contrib += (l1.y[i]! - l0.y[i]!) ** 2;
  const dOut = matmulT(l1.m, T, lw1.w['mlp.down_proj'], D, F);
  for (const v of dOut) wx += v * v;
  const want = errSq / contrib;

  const [e0, e1] = r.layers;
  t.equal(e0!.errSq, 0, 'layer 0 (not perturbed): exactly 0');
  t.ok(Object.values(e0!.linears!).every((v) => v === 0), 'layer 0: every linear 0');
  t.ok(close(e1!.errSq, errSq, 2e-5), `layer 1 ‖ŷ − y‖² ${e1!.errSq} vs float64 Δ²Σm² ${errSq}`);
  t.ok(close(e1!.contributionSq, contrib, 2e-5), `layer 1 ‖y − x‖² ${e1!.contributionSq} vs float64 ${contrib}`);
  t.ok(close(e1!.relError, want, 2e-5), `layer 1 relative error ${e1!.relError.toExponential(6)} vs float64 ${want.toExponential(6)}`);
  t.ok(close(e1!.linears!['mlp.down_proj']!, errSq / wx, 2e-5), `down_proj ‖(Ŵ−W)X‖²/‖WX‖² ${e1!.linears!['mlp.down_proj']!.toExponential(6)} vs ${(errSq / wx).toExponential(6)}`);
  for (const k of LINEAR_KINDS) if (k !== 'mlp.down_proj') t.equal(e1!.linears![k], 0, `layer 1 ${k}: 0`);
  t.ok(close(r.meanRelError, want / 2, 1e-4), 'mean over the two layers');
});

t.test('mismatched or unusable models are ShoalErrors with stable codes', async (t) => {
  const fp = tinyModel('fp-m');
  const one = tinyModel('fp-1layer', { layers: 1 });
  const opts = { text: [TEXT], samples: SAMPLES, seqlen: SEQLEN };
  await t.rejects(measureLayerError({ ...opts, model: one, reference: fp }), { code: 'SHOAL_ERR_SHAPE', message: /num_hidden_layers 1 vs 2/ }, 'layer count');
  await t.rejects(measureLayerError({ ...opts, model: STORIES, reference: fp }), { code: 'SHOAL_ERR_SHAPE', message: /hidden_size 64 vs 384/ }, 'another model');
  const heads = tinyModel('fp-heads', { heads: 3, kvHeads: 1, headDim: 128 });
  await t.rejects(measureLayerError({ ...opts, model: heads, reference: fp }), { code: 'SHOAL_ERR_SHAPE', message: /num_attention_heads 3 vs 6/ }, 'heads');
  // a tensor whose shape contradicts config.json
  const badTensor = path.join(root, 'bad-tensor');
  copyModel(fp, badTensor, { config: (c) => { c.intermediate_size = 768; } });
  await t.rejects(measureLayerError({ ...opts, model: badTensor, reference: fp }), { code: 'SHOAL_ERR_SHAPE', message: /mlp\.gate_proj\.weight has shape \[640, 384\]/ });
  const eqat = path.join(root, 'eqat');
  copyModel(fp, eqat, { config: (c) => { c.quantization_config = { quant_method: 'efficientqat', bits: 4, group_size: 64 }; } });
  await t.rejects(measureLayerError({ ...opts, model: eqat, reference: fp }), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  const noTok = tinyModel('fp-notok', {}, false);
  await t.rejects(measureLayerError({ ...opts, model: fp, reference: noTok }), { code: 'SHOAL_ERR_TOKENIZER' });
  await t.rejects(measureLayerError({ ...opts, samples: 1000, model: fp, reference: fp }), { code: 'SHOAL_ERR_CALIB_TOO_SHORT' });
  await t.rejects(measureLayerError({ ...opts, seqlen: 4096, model: fp, reference: fp }), { code: 'SHOAL_ERR_INVALID_ARG' });
  await t.rejects(measureLayerError({ ...opts, model: path.join(root, 'nowhere'), reference: fp }), { code: 'SHOAL_ERR_CONFIG' });
  // the command: the same code, and --json
  await t.rejects(runToolCli(['eval', 'layer-error', '--model', one, '--reference', fp, '--text', TEXT, '--samples', '2', '--seqlen', '64']), { code: 'SHOAL_ERR_SHAPE' });
  const out = JSON.parse(await runToolCli(['eval', 'layer-error', '--model', fp, '--reference', fp, '--text', TEXT, '--samples', '2', '--seqlen', '64', '--json'])) as LayerErrorResult;
  t.equal(out.layers.length, 2);
  t.equal(out.meanRelError, 0);
  const text = await runToolCli(['eval', 'layer-error', '--model', fp, '--reference', fp, '--text', TEXT, '--samples', '2', '--seqlen', '64']);
  t.match(text, /layer 1: ‖ŷ−y‖²\/‖y−x‖² 0\.000e\+0/);
});

t.test('stories260K: RTN, GPTQ and AWQ checkpoints load, give finite errors, w4 < w3 < w2', { skip: skipStories }, async (t) => {
  const docs = calibDocs(400);
  const calib = { calibDocs: docs };
  const dir = (n: string) => path.join(root, `s-${n}`);
  const measure = (model: string) => measureLayerError({ model, reference: STORIES, text: [STORIES_TXT], samples: 4, seqlen: 256 });
  const res: Record<string, LayerErrorResult> = {};
  // RTN: AutoAWQ gemm at 4 bits (rtn.ts), fake-quantized F32 at 4, 3, 2 bits
  await quantizeModel({ model: STORIES, out: dir('rtn-gemm4'), bits: 4, groupSize: 64, dtype: 'f32' });
  for (const b of [4, 3, 2]) await quantizeAwqModel({ model: STORIES, out: dir(`rtn${b}`), method: 'rtn', bits: b, groupSize: 64, fakeQuant: true });
  // GPTQ: v2 and v1 zeros at 4 bits, v2 at 3 and 2
  for (const b of [4, 3, 2]) {
    await quantizeModelGptq({ model: STORIES, out: dir(`gptq${b}`), method: 'gptq', bits: b, groupSize: 64, checkpointFormat: 'gptq_v2', dtype: 'f32', ...calib, awqSamples: 8, awqSeqlen: 256 });
  }
  await quantizeModelGptq({ model: STORIES, out: dir('gptq4-v1'), method: 'gptq', bits: 4, groupSize: 64, checkpointFormat: 'gptq', dtype: 'f32', ...calib, awqSamples: 8, awqSeqlen: 256 });
  await quantizeModelGptq({ model: STORIES, out: dir('gptq4-act'), method: 'gptq', bits: 4, groupSize: 64, actOrder: true, checkpointFormat: 'gptq_v2', dtype: 'f32', ...calib, awqSamples: 8, awqSeqlen: 256 });
  // AWQ: gemm at 4 bits, fake-quantized F32 at 3 and 2
  for (const b of [4, 3, 2]) await quantizeAwqModel({ model: STORIES, out: dir(`awq${b}`), bits: b, groupSize: 64, dtype: 'f32', ...calib, samples: 8, seqlen: 256 });
  for (const n of ['rtn-gemm4', 'rtn4', 'rtn3', 'rtn2', 'gptq4', 'gptq4-v1', 'gptq4-act', 'gptq3', 'gptq2', 'awq4', 'awq3', 'awq2']) res[n] = await measure(dir(n));

  for (const [n, r] of Object.entries(res)) {
    t.equal(r.layers.length, 5, `${n}: 5 layers`);
    t.ok(r.layers.every((l) => Number.isFinite(l.relError) && l.relError > 0), `${n} (${r.format.label}): every layer finite and > 0: ${r.layers.map((l) => l.relError.toExponential(2)).join(' ')}`);
    t.ok(r.documents.first > docs.length, `${n}: held-out documents ${r.documents.first}.. lie after the ${docs.length} calibration paragraphs`);
  }
  t.equal(res['rtn-gemm4']!.format.kind, 'awq');
  t.equal(res.gptq4!.format.kind, 'gptq');
  t.equal(res['gptq4-act']!.format.descAct, true);
  t.equal(res.rtn2!.format.fakeQuantMethod, 'rtn');
  for (const m of ['rtn', 'gptq', 'awq']) {
    const [a, b, c] = [4, 3, 2].map((bits) => res[`${m}${bits}`]!);
    t.ok(a!.meanRelError < b!.meanRelError && b!.meanRelError < c!.meanRelError,
      `${m}: w4g64 ${a!.meanRelError.toExponential(3)} < w3g64 ${b!.meanRelError.toExponential(3)} < w2g64 ${c!.meanRelError.toExponential(3)}`);
    for (let l = 0; l < 5; l++) t.ok(a!.layers[l]!.relError < c!.layers[l]!.relError, `${m} layer ${l}: w4 < w2`);
  }
  // v1 stores z − 1: the reader adds it back, so v1 and v2 of the same weights measure the same
  t.same(res['gptq4-v1']!.layers.map((l) => l.relError), res.gptq4!.layers.map((l) => l.relError), 'GPTQ v1 zeros == v2 zeros');
  // act order: g_idx is permuted; read through it, the error is that of GPTQ (a misread g_idx would be far off)
  t.ok(res['gptq4-act']!.meanRelError < 1.5 * res.gptq4!.meanRelError && res['gptq4-act']!.meanRelError > res.gptq4!.meanRelError / 1.5,
    `GPTQ act-order ${res['gptq4-act']!.meanRelError.toExponential(3)} close to GPTQ ${res.gptq4!.meanRelError.toExponential(3)}`);
  // at 2 bits the calibrated methods beat RTN by a wide margin on held-out text
  t.ok(res.gptq2!.meanRelError < res.rtn2!.meanRelError, `w2g64 GPTQ ${res.gptq2!.meanRelError.toExponential(3)} < RTN ${res.rtn2!.meanRelError.toExponential(3)}`);
  t.ok(res.awq2!.meanRelError < res.rtn2!.meanRelError, `w2g64 AWQ ${res.awq2!.meanRelError.toExponential(3)} < RTN ${res.rtn2!.meanRelError.toExponential(3)}`);
  // per-linear numbers only where the writer folds nothing
  for (const n of ['gptq4', 'gptq4-act', 'rtn2']) {
    const l0 = res[n]!.layers[0]!;
    t.equal(l0.linearsNote, null, `${n}: per-linear errors reported`);
    t.ok(Object.values(l0.linears!).every((v) => Number.isFinite(v) && v >= 0), `${n}: per-linear errors finite`);
  }
  // down_proj (172 inputs) is not quantized at group 64: its error is exactly 0
  t.equal(res.rtn2!.layers[0]!.linears!['mlp.down_proj'], 0, 'RTN w2g64: down_proj (kept in F32) 0');
  for (const n of ['rtn-gemm4', 'awq4', 'awq2']) t.equal(res[n]!.layers[0]!.linears, null, `${n}: no per-linear errors (${res[n]!.layers[0]!.linearsNote})`);
  // a zero-padded FFN (--pad-ffn: 172 → 192, so down_proj is quantized too) is compared as a whole layer
  const padded = await quantizeAwqModel({ model: STORIES, out: dir('awq4-pad'), bits: 4, groupSize: 64, padFfn: true, dtype: 'f32', ...calib, samples: 8, seqlen: 256 });
  t.equal(padded.paddedIntermediateSize, 192);
  const rp = await measure(dir('awq4-pad'));
  t.ok(rp.layers.every((l) => Number.isFinite(l.relError) && l.relError > 0 && l.relError < res.awq2!.layers[l.layer]!.relError), `padded AWQ w4g64: ${rp.layers.map((l) => l.relError.toExponential(2)).join(' ')}`);
  t.equal(rp.layers[0]!.quantizedLinears, 7, 'padded: all 7 linears quantized');
  // every linear stored quantized is read as such
  t.equal(res.gptq4!.layers[0]!.quantizedLinears, 6, 'GPTQ: 6 linears quantized per layer (down_proj, 172 inputs, kept)');
  t.equal(res['rtn-gemm4']!.layers[0]!.quantizedLinears, 4, 'AutoAWQ gemm: q, k, v, o (gate/up have 172 outputs, not a multiple of 8)');
});
