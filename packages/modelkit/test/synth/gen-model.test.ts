// gen-model: real shapes in config.json and headers, AWQ layout, determinism, sharding.
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync, existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateModel, resolveShape, syntheticValues } from '../../src/synth/gen-model.js';
import { buildConfigJson, MODEL_SHAPES, planTensors, SHAPE_NAMES, type ModelShape } from '../../src/arch/model-shapes.js';
import { loadReferenceModel, referenceForward } from '../../src/eval/reference-forward.js';
import { Checkpoint, SafetensorsReader } from '../../src/io/safetensors.js';
import { f16ToF32, bf16ToF32, f32ToBf16, f32ToF16 } from '../../src/io/dtypes.js';
import { hasShared, sharedPath } from '@shoal/testkit';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-gen-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
let n = 0;
const outDir = () => path.join(root, `m${n++}`);
const readJson = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>;

function headerOf(dir: string): Map<string, { dtype: string; shape: number[] }> {
  const ck = Checkpoint.open(dir);
  const m = new Map<string, { dtype: string; shape: number[] }>();
  for (const name of ck.names()) m.set(name, { dtype: ck.entry(name).dtype, shape: ck.entry(name).shape });
  ck.close();
  return m;
}

t.test('every named shape: config.json and header match the real architecture (1 layer, vocab 512)', async (t) => {
  for (const name of SHAPE_NAMES) {
    const real = MODEL_SHAPES[name];
    const overrides: Partial<ModelShape> = name === 'tiny' ? {} : { layers: 1, vocabSize: 512 };
    const dir = outDir();
    const r = generateModel({ out: dir, shape: name, overrides, seed: 1 });
    const cfg = readJson(path.join(dir, 'config.json'));
    t.same(cfg.architectures, [real.arch], `${name} arch`);
    t.equal(cfg.hidden_size, real.hiddenSize, `${name} hidden`);
    t.equal(cfg.intermediate_size, real.intermediateSize, `${name} ffn`);
    t.equal(cfg.num_attention_heads, real.heads);
    t.equal(cfg.num_key_value_heads, real.kvHeads);
    t.equal(cfg.head_dim, real.headDim);
    t.equal(cfg.rope_theta, real.ropeTheta);
    t.equal(cfg.max_position_embeddings, real.maxPositionEmbeddings);
    t.equal(cfg.tie_word_embeddings, real.tieWordEmbeddings);
    t.equal(cfg.torch_dtype, 'float16');
    t.equal(cfg.num_hidden_layers, name === 'tiny' ? real.layers : 1);
    t.equal(cfg.quantization_config, undefined);
    // special ids outside a reduced vocabulary become BOS 1 / EOS 2
    const bos = real.bosTokenId! < r.shape.vocabSize ? real.bosTokenId : 1;
    t.equal(readJson(path.join(dir, 'generation_config.json')).bos_token_id, bos, `${name} bos`);
    t.equal(cfg.bos_token_id, bos);
    const h = headerOf(dir);
    const plan = planTensors(r.shape);
    t.same([...h.keys()].sort(), plan.map((p) => p.name).sort(), `${name}: tensor names`);
    for (const p of plan) {
      t.same(h.get(p.name)!.shape, p.shape);
      t.equal(h.get(p.name)!.dtype, 'F16');
    }
    const D = real.hiddenSize;
    t.same(h.get('model.layers.0.self_attn.q_proj.weight')!.shape, [real.heads * real.headDim, D]);
    t.same(h.get('model.layers.0.self_attn.k_proj.weight')!.shape, [real.kvHeads * real.headDim, D]);
    t.same(h.get('model.layers.0.mlp.down_proj.weight')!.shape, [D, real.intermediateSize]);
    t.equal(h.has('lm_head.weight'), !real.tieWordEmbeddings, `${name}: lm_head iff untied`);
    t.equal(h.has('model.layers.0.self_attn.q_proj.bias'), name === 'qwen2-1.5b', `${name}: q bias iff qwen2`);
    rmSync(dir, { recursive: true, force: true });
  }
  // the real full configs (nothing generated)
  t.equal(MODEL_SHAPES['llama-3-8b'].vocabSize, 128256);
  t.same(MODEL_SHAPES['llama-3-8b'].ropeScaling, { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
  t.equal(MODEL_SHAPES['qwen2-1.5b'].vocabSize, 151936);
  t.equal(MODEL_SHAPES['llama-2-7b'].kvHeads, 32);
});

t.test('llama-3 rope_scaling and qwen2 biases in config.json', async (t) => {
  const dir = outDir();
  generateModel({ out: dir, shape: 'llama-3-8b', overrides: { layers: 1, vocabSize: 256, hiddenSize: 256, intermediateSize: 512, heads: 4, kvHeads: 1 } });
  const cfg = readJson(path.join(dir, 'config.json'));
  t.same(cfg.rope_scaling, { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
  t.equal(cfg.rope_theta, 500000);
  t.equal(cfg.head_dim, 64, 'head_dim follows hidden / heads when overridden');
  t.equal(cfg.bos_token_id, 1, 'special ids remapped into the reduced vocabulary');
  t.equal(cfg.eos_token_id, 2);
  const full = buildConfigJson(MODEL_SHAPES['llama-3-8b'], { dtype: 'bf16' });
  t.same(full.eos_token_id, [128001, 128008, 128009]);
  t.equal(full.bos_token_id, 128000);
  t.equal(full.vocab_size, 128256);
  t.equal(full.torch_dtype, 'bfloat16');
  const q = buildConfigJson(MODEL_SHAPES['qwen2-1.5b'], { dtype: 'f16' });
  t.equal(q.tie_word_embeddings, true);
  t.equal(q.model_type, 'qwen2');
  t.equal(q.rms_norm_eps, 1e-6);
});

t.test('AWQ layouts for group sizes 32/64/128', async (t) => {
  for (const G of [32, 64, 128]) {
    const dir = outDir();
    const r = generateModel({ out: dir, shape: 'tiny', quant: `awq-w4g${G}`, seed: 5 });
    const cfg = readJson(path.join(dir, 'config.json'));
    t.same(cfg.quantization_config, { quant_method: 'awq', bits: 4, group_size: G, zero_point: true, version: 'gemm', modules_to_not_convert: null });
    const h = headerOf(dir);
    const s = r.shape;
    const lin = (m: string, out: number, inF: number) => {
      t.same(h.get(`model.layers.1.${m}.qweight`), { dtype: 'I32', shape: [inF, out / 8] }, `${m} qweight G=${G}`);
      t.same(h.get(`model.layers.1.${m}.qzeros`), { dtype: 'I32', shape: [inF / G, out / 8] });
      t.same(h.get(`model.layers.1.${m}.scales`), { dtype: 'F16', shape: [inF / G, out] });
      t.notOk(h.has(`model.layers.1.${m}.weight`));
    };
    lin('self_attn.q_proj', s.heads * s.headDim, s.hiddenSize);
    lin('self_attn.v_proj', s.kvHeads * s.headDim, s.hiddenSize);
    lin('self_attn.o_proj', s.hiddenSize, s.heads * s.headDim);
    lin('mlp.up_proj', s.intermediateSize, s.hiddenSize);
    lin('mlp.down_proj', s.hiddenSize, s.intermediateSize);
    t.same(h.get('model.embed_tokens.weight'), { dtype: 'F16', shape: [s.vocabSize, s.hiddenSize] });
    t.same(h.get('lm_head.weight'), { dtype: 'F16', shape: [s.vocabSize, s.hiddenSize] });
    // dequantized weights are the synthetic values within half a quantization step
    const ref = loadReferenceModel(dir);
    const p = planTensors(s).find((x) => x.name === 'model.layers.1.mlp.down_proj.weight')!;
    const w = syntheticValues(s, p, 5);
    const deq = ref.layers[1]!.linears['mlp.down_proj'].w;
    const ck = Checkpoint.open(dir);
    const scales = ck.read('model.layers.1.mlp.down_proj.scales') as Uint16Array;
    ck.close();
    const [N, K] = p.shape as [number, number];
    let worst = 0;
    for (let o = 0; o < N; o++) {
      for (let k = 0; k < K; k++) {
        const sc = f16ToF32(scales[Math.floor(k / G) * N + o]!);
        worst = Math.max(worst, Math.abs(deq[o * K + k]! - w[o * K + k]!) / sc);
      }
    }
    // half a step, plus the f16 rounding of s (range / s can reach 15 * (1 + 2^-11), so the
    // group maximum may clip by up to 15 * 2^-11 steps)
    t.ok(worst <= 0.5 + 15 * 2 ** -11 + 1e-6, `G=${G}: max |deq - w| = ${worst.toFixed(4)} steps`);
  }
});

t.test('custom dims: hidden 96, ffn 200, GQA 6/2, g32 -> down_proj stays unquantized', async (t) => {
  const dir = outDir();
  const r = generateModel({ out: dir, shape: 'tiny', overrides: { hiddenSize: 96, intermediateSize: 200, heads: 6, kvHeads: 2, vocabSize: 300 }, quant: 32 });
  t.equal(r.shape.headDim, 16);
  t.same(r.modulesToNotConvert, ['mlp.down_proj']);
  const cfg = readJson(path.join(dir, 'config.json'));
  t.same((cfg.quantization_config as { modules_to_not_convert: unknown }).modules_to_not_convert, ['mlp.down_proj']);
  const h = headerOf(dir);
  t.same(h.get('model.layers.0.mlp.down_proj.weight'), { dtype: 'F16', shape: [96, 200] });
  t.same(h.get('model.layers.0.mlp.gate_proj.qweight'), { dtype: 'I32', shape: [96, 25] });
  const logits = referenceForward(loadReferenceModel(dir), [1, 2, 3]);
  t.equal(logits.length, 3);
  t.ok(logits.every((l) => l.length === 300 && l.every(Number.isFinite)));
});

t.test('values: seeded, deterministic, realistic scales; f32/bf16 storage', async (t) => {
  const a = outDir(), b = outDir(), c = outDir(), d32 = outDir(), dbf = outDir();
  generateModel({ out: a, shape: 'tiny', seed: 9 });
  generateModel({ out: b, shape: 'tiny', seed: 9 });
  generateModel({ out: c, shape: 'tiny', seed: 10 });
  t.ok(readFileSync(path.join(a, 'model.safetensors')).equals(readFileSync(path.join(b, 'model.safetensors'))), 'same seed, same bytes');
  t.notOk(readFileSync(path.join(a, 'model.safetensors')).equals(readFileSync(path.join(c, 'model.safetensors'))), 'other seed, other bytes');
  const r32 = generateModel({ out: d32, shape: 'tiny', seed: 9, dtype: 'f32' });
  generateModel({ out: dbf, shape: 'tiny', seed: 9, dtype: 'bf16' });
  t.equal(readJson(path.join(d32, 'config.json')).torch_dtype, 'float32');
  t.equal(readJson(path.join(dbf, 'config.json')).torch_dtype, 'bfloat16');
  const s = r32.shape;
  const ck32 = SafetensorsReader.open(path.join(d32, 'model.safetensors'));
  const ck16 = SafetensorsReader.open(path.join(a, 'model.safetensors'));
  const ckbf = SafetensorsReader.open(path.join(dbf, 'model.safetensors'));
  t.teardown(() => { ck32.close(); ck16.close(); ckbf.close(); });
  for (const p of planTensors(s)) {
    const v = syntheticValues(s, p, 9);
    const f32 = ck32.readFloat32(p.name);
    t.same(Array.from(f32.subarray(0, 64)), Array.from(v.subarray(0, 64)), `${p.name} f32 = synthetic values`);
    const f16 = ck16.read(p.name) as Uint16Array;
    const bf = ckbf.read(p.name) as Uint16Array;
    let bad = 0;
    for (let i = 0; i < v.length; i += 97) {
      if (f16[i] !== f32ToF16(v[i]!) || bf[i] !== f32ToBf16(v[i]!)) bad++;
    }
    t.equal(bad, 0, `${p.name}: f16/bf16 are the rounded values`);
    if (p.role === 'linear' || p.role === 'norm' || p.role === 'embed') {
      let m = 0, m2 = 0;
      for (const x of f32) { m += x; m2 += x * x; }
      m /= f32.length;
      const sd = Math.sqrt(m2 / f32.length - m * m);
      if (p.role === 'linear') t.ok(Math.abs(sd * Math.sqrt(p.shape[1]!) - 1) < 0.05 && Math.abs(m) < 0.01 * sd + 1e-3, `${p.name}: std ${sd.toFixed(4)} ~ 1/sqrt(in)`);
      if (p.role === 'norm') t.ok(Math.abs(m - 1) < 0.02 && sd > 0.02 && sd < 0.08, `${p.name}: gains near 1 (mean ${m.toFixed(3)}, std ${sd.toFixed(3)})`);
      if (p.role === 'embed') t.ok(Math.abs(sd - 0.02) < 0.002, `embedding std ${sd.toFixed(4)} ~ 0.02`);
    }
  }
  t.equal(bf16ToF32(f32ToBf16(1)), 1);
  // logits are not degenerate: spread of order 1 and different per position
  const L = referenceForward(loadReferenceModel(a), [1, 17, 400, 5]);
  for (const l of L) {
    let m = 0, m2 = 0;
    for (const x of l) { m += x; m2 += x * x; }
    const sd = Math.sqrt(m2 / l.length - (m / l.length) ** 2);
    t.ok(sd > 0.3 && sd < 5, `logit std ${sd.toFixed(3)}`);
  }
  t.not(L[1]!.indexOf(Math.max(...L[1]!)), -1);
});

t.test('sharded output reads back identically', async (t) => {
  const single = outDir(), sharded = outDir();
  generateModel({ out: single, shape: 'tiny', quant: 'awq-w4g64', seed: 2 });
  const r = generateModel({ out: sharded, shape: 'tiny', quant: 'awq-w4g64', seed: 2, maxShardBytes: 700_000 });
  t.ok(r.files.includes('model.safetensors.index.json'));
  t.ok(r.files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length >= 3, `${r.files.length} files`);
  t.notOk(existsSync(path.join(sharded, 'model.safetensors')));
  const a = referenceForward(loadReferenceModel(single), [1, 2, 3, 4]);
  const b = referenceForward(loadReferenceModel(sharded), [1, 2, 3, 4]);
  t.same(b.map((x) => Array.from(x)), a.map((x) => Array.from(x)));
});

t.test('tokenizer files, vocab checks and error codes', { skip: hasShared('models', 'stories260K') ? false : 'shared stories260K not found' }, async (t) => {
  const dir = outDir();
  const r = generateModel({ out: dir, shape: 'tiny', tokenizerDir: sharedPath('models', 'stories260K') });
  t.equal(r.shape.vocabSize, 512, 'tiny takes the tokenizer vocabulary');
  for (const f of ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json']) t.ok(existsSync(path.join(dir, f)), f);
  t.throws(() => generateModel({ out: outDir(), shape: 'tiny', overrides: { vocabSize: 100 }, tokenizerDir: sharedPath('models', 'stories260K') }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => generateModel({ out: dir, shape: 'tiny' }), { code: 'SHOAL_ERR_OUTPUT_EXISTS' });
  generateModel({ out: dir, shape: 'tiny', force: true, overrides: { layers: 1 } });
  t.equal(readJson(path.join(dir, 'config.json')).num_hidden_layers, 1, '--force replaces');
  t.throws(() => generateModel({ out: outDir(), shape: 'nope' as 'tiny' }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => generateModel({ out: outDir(), quant: 'awq-w3g128' }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => resolveShape('tiny', { heads: 5, kvHeads: 2 }), { code: 'SHOAL_ERR_CONFIG' });
  t.same(readdirSync(root).filter((f) => f.includes('.tmp-')), [], 'no temporary folders left');
});
