// quant/gptq.ts / `shoal quantize --format gptq|gptq-v1|eqat` / gen-model
// `gptq-w<b>g<G>`: the files written, their metadata, the stored codes (read
// back with the unpackers) and the engine loading them (when the addon is built).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateModel } from '../../src/synth/gen-model.js';
import { dequantizeGptq, quantizeGptqLinear, unpackGptqWeight, unpackGptqZeros } from '../../src/formats/gptq.js';
import { checkGptqOptions, lowbitCompatible, quantizeModelGptq } from '../../src/quant/gptq.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import type { LoadOptions, Model } from '@shoal/engine';
import { CLI_MAIN, hasShared, repoRoot, sharedPath } from '@shoal/testkit';

type Engine = { loadModel(dir: string, o?: LoadOptions): Promise<Model> };
const addonPath = path.join(repoRoot, 'native', 'build', 'Release', 'shoal.node');
const engine: Engine | null = existsSync(addonPath) ? ((await import('@shoal/engine')) as unknown as Engine) : null;
const engineSkip = engine ? false : 'native addon not built (run `make native`)';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-qgptq-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));
const base = path.join(root, 'base');
generateModel({ out: base, shape: 'tiny', dtype: 'f32', seed: 5, overrides: { hiddenSize: 128, intermediateSize: 320, heads: 4, kvHeads: 2, headDim: 32, layers: 2, vocabSize: 300 } });

t.test('options and compatibility', async (t) => {
  t.throws(() => checkGptqOptions({ bits: 5 }), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  t.throws(() => checkGptqOptions({ bits: 4, groupSize: 0 }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.throws(() => checkGptqOptions({ method: 'gptq-hessian' }), { code: 'SHOAL_ERR_INVALID_ARG' });
  t.same(checkGptqOptions({ bits: 3, groupSize: -1 }), { bits: 3, groupSize: -1 });
  t.ok(lowbitCompatible(320, 3, 32) && !lowbitCompatible(192, 4, 96) && lowbitCompatible(192, 3, 96) && lowbitCompatible(128, 4, -1) && !lowbitCompatible(172, 2, 32));
});

t.test('RTN quantizer: codes in range, asym zero, sym zero, error shrinks with bits', async (t) => {
  const N = 8;
  const K = 64;
  const w = Float32Array.from({ length: N * K }, (_, i) => Math.sin(i * 1.7) * 0.1 + 0.02);
  let prev = Infinity;
  for (const bits of [2, 3, 4, 8]) {
    const ql = quantizeGptqLinear(w, N, K, bits, 32);
    t.ok(ql.q.every((v) => v <= (1 << bits) - 1), `w${bits}: codes < 2^b`);
    const dq = dequantizeGptq(ql);
    let e = 0;
    for (let i = 0; i < w.length; i++) e = Math.max(e, Math.abs(dq[i]! - w[i]!));
    t.ok(e < prev, `w${bits}: max error ${e.toExponential(2)} below the narrower width's`);
    prev = e;
    const sym = quantizeGptqLinear(w, N, K, bits, 32, { sym: true });
    t.ok(sym.zeros.every((z) => z === 1 << (bits - 1)), `w${bits} sym: zero = 2^(b-1)`);
  }
  const v1 = quantizeGptqLinear(Float32Array.from({ length: 64 }, (_, i) => i / 64), 1, 64, 3, 64, { minZero: 1 });
  t.ok(v1.zeros[0]! >= 1, 'minZero keeps an all-positive group storable as z - 1');
});

t.test('quantize --format gptq writes GPTQ tensors and metadata', async (t) => {
  for (const [fmt, v1] of [['gptq_v2', false], ['gptq', true]] as const) {
    const out = path.join(root, `q3-${fmt}`);
    const r = await quantizeModelGptq({ model: base, out, bits: 3, groupSize: 32, checkpointFormat: fmt, dtype: 'f32' });
    t.equal(r.quantizedLinears, 14);
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: Record<string, unknown> };
    t.match(cfg.quantization_config, { quant_method: 'gptq', bits: 3, group_size: 32, desc_act: false, sym: false, checkpoint_format: fmt });
    t.ok(existsSync(path.join(out, 'quantize_config.json')));
    const ck = Checkpoint.open(out);
    const src = Checkpoint.open(base);
    const m = 'model.layers.1.mlp.down_proj';
    t.same(ck.entry(`${m}.qweight`).shape, [320 * 3 / 32, 128]);
    t.same(ck.entry(`${m}.qzeros`).shape, [10, 12]);
    t.same(ck.entry(`${m}.g_idx`).shape, [320]);
    const ql = quantizeGptqLinear(src.readFloat32(`${m}.weight`), 128, 320, 3, 32, { minZero: v1 ? 1 : 0 });
    t.same(Array.from(unpackGptqWeight(ck.readInt32(`${m}.qweight`), 320, 128, 3)), Array.from(ql.q), 'stored codes');
    const zs = unpackGptqZeros(ck.readInt32(`${m}.qzeros`), 10, 128, 3);
    t.same(Array.from(zs), Array.from(ql.zeros).map((z) => (v1 ? z - 1 : z)), v1 ? 'zeros stored minus one' : 'zeros as is');
    ck.close();
    src.close();
  }
});

t.test('CLI quantize --format eqat and gen-model gptq names load in the engine', { skip: engineSkip }, async (t) => {
  const out = path.join(root, 'eqat-w2g64');
  const cli = CLI_MAIN;
  const txt = execFileSync(process.execPath, [cli, 'quantize', '--format', 'eqat', '--bits', '2', '--group', '64', '--model', base, '--out', out], { encoding: 'utf8' });
  t.match(txt, /rtn efficientqat w2g64: 14 linears quantized/);
  t.ok(existsSync(path.join(out, 'shoal-quant.json')));
  const m = await engine!.loadModel(out, { threads: 1 });
  t.equal(m.info.quant, 'eqat-w2g64');
  m.dispose();
  for (const q of ['gptq-w2g64', 'gptq-w3g128', 'gptq-w4g128', 'gptq-w8g128'] as const) {
    const d = path.join(root, q);
    const r = generateModel({ out: d, shape: 'tiny', quant: q, overrides: { layers: 1, vocabSize: 512 } });
    t.equal(r.quant, q);
    const mm = await engine!.loadModel(d, { threads: 2 });
    try {
      t.match(mm.info.quant, new RegExp(`^gptq-v2-${q.slice(5)}$`));
      const s = mm.createSession({ contextSize: 16 });
      const logits = await s.eval([1, 2, 3]);
      t.ok(logits.every(Number.isFinite), `${q}: finite logits`);
    } finally {
      mm.dispose();
    }
  }
});

t.test('quantize --format gptq --method awq: AWQ scales (packages/modelkit/src/quant/awq), then RTN', {
  skip: engineSkip || (hasShared('models', 'stories260K', 'model.safetensors') && hasShared('data', 'tinystories-valid-sample', 'tinystories_val.txt') ? false : 'shared stories260K / TinyStories not found'),
}, async (t) => {
  const calib = path.join(root, 'calib.txt');
  writeFileSync(calib, readFileSync(sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt'), 'utf8').slice(-100_000));
  const out = path.join(root, 'awq-w3g32');
  const cli = CLI_MAIN;
  const txt = execFileSync(process.execPath, [cli, 'quantize', '--format', 'gptq', '--method', 'awq', '--bits', '3', '--group', '32',
    '--model', sharedPath('models', 'stories260K'), '--out', out, '--calib', calib, '--samples', '8', '--seqlen', '128', '--dtype', 'f32'], { encoding: 'utf8' });
  t.match(txt, /awq\+rtn gptq_v2 w3g32: 30 linears quantized/);
  const m = await engine!.loadModel(out, { threads: 2 });
  try {
    t.equal(m.info.quant, 'gptq-v2-w3g32');
    const logits = await m.createSession({ contextSize: 16 }).eval([1, 50, 60]);
    t.ok(logits.every(Number.isFinite));
  } finally {
    m.dispose();
  }
});
