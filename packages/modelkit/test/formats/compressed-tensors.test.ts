// compressed-tensors pack-quantized checkpoints (llm-compressor's format) for Llama,
// Qwen2 and Qwen3, built in the test from known integer codes, zero points and f16
// scales and packed by formats/compressed-tensors.ts (written from the format's
// published source, independently of the native loader): W4A16 and W8A16, group and
// channel, symmetric and asymmetric, act-order g_idx, an ignore list by name and by
// pattern. Each loads in the engine on every CPU ISA and is compared with the float64
// reference forward of its dequantized weights (u − zu)·s:
//  - in precision 'exact' (f32 (u − zu)·s, f32 activations, f32 KV cache; docs/engine.md):
//    prefill logits within REL_TOL = 1e-4 of max |logit| (measured ≤ 7.8e-7), the
//    reference's argmax at every position, greedy tokens identical;
//  - in the default precision 'fast' (f16 −s·zu, int8 activations per 32-block): prefill
//    within FAST_VS_EXACT of the exact mode's logits on the same ISA (measured ≤ 8.1e-2;
//    a layout or indexing bug gives order 1), the same argmax except near-ties, and greedy
//    tokens identical to the reference's except a first difference at a near-tie (checkGreedy).
// stories260K re-packed as compressed-tensors (sym and asym, g32, down_proj ignored)
// generates the same greedy text as the float64 forward of the same quantized values
// (precision exact: 40 tokens identical; fast: checkGreedy).
// `shoal quantize --format compressed-tensors` writes what the loader reads.
// Skips the engine parts when the native addon is not built (`make native`).
import t from 'tap';
import { groupIndex, seededRandom } from './random-quant.js';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateModel } from '../../src/synth/gen-model.js';
import {
  ctQuantConfig, ctScales, ctWeightShape, packCtWeight, packCtZeros, unpackCtWeight, unpackCtZeros,
} from '../../src/formats/compressed-tensors.js';
import { quantizeModelGptqSync } from '../../src/quant/gptq.js';
import { loadReferenceModel, referenceForward, referenceLogits } from '../../src/eval/reference-forward.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { f16ToF32, f64ToF16 } from '../../src/io/dtypes.js';
import { writeSafetensors, type TensorData } from '../../src/io/safetensors-write.js';
import type { ShapeName, ModelShape } from '../../src/arch/model-shapes.js';
import type { Model } from '@shoal/engine';
import { execFileSync } from 'node:child_process';
import { CLI_MAIN, compareLogits, describeComparison, engine, engineGreedy, engineSkip, isas, storiesPath } from '@shoal/testkit';

/** Precision exact vs float64 of (u − zu)·s, relative to max |logit| (f32 KV cache). */
const REL_TOL = 1e-4;
/** Precision fast (int8 activations, f16 −s·z) vs exact on the same ISA, relative to max |logit| (as engine/test/native-vs-reference). */
const FAST_VS_EXACT = 1.2e-1;

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-ct-'));
if (!process.env.SHOAL_TEST_KEEP) t.teardown(() => rmSync(root, { recursive: true, force: true }));

const { rnd, rint } = seededRandom(24681357); // deterministic data

interface Arch { name: string; shape: ShapeName; overrides: Partial<ModelShape> }
const ARCHS: Arch[] = [
  { name: 'llama', shape: 'tiny', overrides: { hiddenSize: 128, intermediateSize: 256, heads: 4, kvHeads: 2, headDim: 32, layers: 2, vocabSize: 256 } },
  // tied, q/k/v biases; ffn 192: down_proj in_features not a multiple of 64 or 128
  { name: 'qwen2', shape: 'qwen2-1.5b', overrides: { hiddenSize: 128, intermediateSize: 192, heads: 4, kvHeads: 2, headDim: 32, layers: 2, vocabSize: 256 } },
  // q/k norms; head_dim 64 × 4 heads: q width 256 > hidden 128
  { name: 'qwen3', shape: 'qwen3-0.6b', overrides: { hiddenSize: 128, intermediateSize: 256, heads: 4, kvHeads: 2, headDim: 64, layers: 2, vocabSize: 256 } },
];

interface Case {
  name: string;
  bits: 4 | 8;
  /** -1: strategy channel */
  group: number;
  sym: boolean;
  act?: boolean;
  /** extra ignore entries (names or re: patterns) whose modules stay F32 */
  ignore?: string[];
  /** write the group as the W8A16 preset {"W8A16": ["Linear"]} */
  preset?: boolean;
}
const CASES: Case[] = [
  { name: 'w4a16 sym g32', bits: 4, group: 32, sym: true },
  { name: 'w4a16 asym g64', bits: 4, group: 64, sym: false },
  { name: 'w4a16 asym g32 act-order', bits: 4, group: 32, sym: false, act: true },
  { name: 'w4a16 asym channel', bits: 4, group: -1, sym: false },
  { name: 'w4a16 sym g128, down_proj + lm_head ignored', bits: 4, group: 128, sym: true, ignore: ['lm_head', 're:.*mlp\\.down_proj$'] },
  { name: 'w8a16 preset (sym channel)', bits: 8, group: -1, sym: true, preset: true },
  { name: 'w8a16 asym g64', bits: 8, group: 64, sym: false },
];

function baseModel(a: Arch): string {
  const dir = path.join(root, `base-${a.name}`);
  generateModel({ out: dir, shape: a.shape, dtype: 'f32', seed: 11, overrides: a.overrides, force: true });
  return dir;
}

function isIgnored(module: string, ignore: readonly string[]): boolean {
  return ignore.some((i) => (i.startsWith('re:') ? new RegExp(i.slice(3)).exec(module)?.index === 0 : i === module));
}

/** The compressed-tensors checkpoint and an F32 checkpoint of its exact (u − zu)·s. */
function buildCase(base: string, tag: string, c: Case): { qdir: string; exact: string } {
  const qdir = path.join(root, tag);
  const exact = qdir + '-exact';
  const ck = Checkpoint.open(base);
  const qt: TensorData[] = [];
  const et: TensorData[] = [];
  const ignore = [...(c.ignore ?? [])];
  const maxq = (1 << c.bits) - 1;
  const half = 1 << (c.bits - 1);
  for (const name of ck.names().sort()) {
    const e = ck.entry(name);
    const data = ck.readFloat32(name);
    const m = name.slice(0, -'.weight'.length);
    const linear = /_proj\.weight$/.test(name);
    const [N, K] = e.shape as [number, number];
    const G = c.group === -1 ? K : c.group;
    // modules whose in_features the group does not divide stay unquantized, named in ignore
    if (linear && !isIgnored(m, ignore) && K % G !== 0) ignore.push(m);
    if (!linear || isIgnored(m, ignore)) {
      for (const list of [qt, et]) list.push({ name, dtype: 'F32', shape: e.shape, data });
      continue;
    }
    const ng = K / G;
    const u = new Uint8Array(K * N);
    for (let i = 0; i < u.length; i++) u[i] = rint(maxq + 1);
    const zu = new Uint8Array(ng * N);
    for (let i = 0; i < zu.length; i++) zu[i] = c.sym ? half : rint(maxq + 1);
    const sc = new Uint16Array(ng * N);
    for (let i = 0; i < sc.length; i++) sc[i] = f64ToF16((0.5 + 0.5 * rnd()) * 0.08 / maxq);
    const gIdx = groupIndex(K, G, !!c.act, rint);
    const we = new Float32Array(N * K);
    for (let k = 0; k < K; k++) {
      for (let n = 0; n < N; n++) {
        const g = gIdx[k]!;
        const s = f16ToF32(sc[g * N + n]!);
        we[n * K + k] = (u[k * N + n]! - zu[g * N + n]!) * s; // exact in f32: an f16 scale times an integer < 2^9
      }
    }
    et.push({ name, dtype: 'F32', shape: e.shape, data: we });
    qt.push({ name: `${m}.weight_packed`, dtype: 'I32', shape: [N, Math.ceil(K / (32 / c.bits))], data: packCtWeight(u, K, N, c.bits) });
    qt.push({ name: `${m}.weight_scale`, dtype: 'F16', shape: [N, ng], data: ctScales(sc, ng, N) });
    if (!c.sym) qt.push({ name: `${m}.weight_zero_point`, dtype: 'I32', shape: [Math.ceil(N / (32 / c.bits)), ng], data: packCtZeros(zu, ng, N, c.bits) });
    qt.push({ name: `${m}.weight_shape`, dtype: 'I64', shape: [2], data: ctWeightShape(N, K) });
    if (c.act) qt.push({ name: `${m}.weight_g_idx`, dtype: 'I32', shape: [K], data: gIdx });
  }
  ck.close();
  const cfg = JSON.parse(readFileSync(path.join(base, 'config.json'), 'utf8')) as Record<string, unknown>;
  const gen = readFileSync(path.join(base, 'generation_config.json'), 'utf8');
  for (const [dir, tensors] of [[qdir, qt], [exact, et]] as const) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    writeFileSync(path.join(dir, 'generation_config.json'), gen);
    writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg));
  }
  const qc = ctQuantConfig([{ bits: c.bits, groupSize: c.group, symmetric: c.sym, actorder: !!c.act }], ignore.includes('lm_head') ? ignore : ['lm_head', ...ignore]);
  if (c.preset) qc.config_groups = { W8A16: ['Linear'] };
  writeFileSync(path.join(qdir, 'config.json'), JSON.stringify({ ...cfg, quantization_config: qc }));
  return { qdir, exact };
}

const argmax = (a: ArrayLike<number>) => {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
};

/** Greedy continuation by the float64 reference (full recompute per step), stopping at the
 *  model's EOS, with the gap between the best and second-best logit at each step. */
interface Greedy { tokens: number[]; gaps: number[]; seconds: number[]; logits: Float64Array[] }
function referenceGreedy(dir: string, prompt: number[], steps: number): Greedy {
  const m = loadReferenceModel(dir);
  const eos = m.shape.eosTokenIds;
  const seq = [...prompt];
  const tokens: number[] = [];
  const gaps: number[] = [];
  const seconds: number[] = [];
  const logits: Float64Array[] = [];
  for (let i = 0; i < steps; i++) {
    const row = referenceForward(m, seq).at(-1)!;
    const tok = argmax(row);
    let second = tok === 0 ? 1 : 0;
    for (let j = 0; j < row.length; j++) if (j !== tok && row[j]! > row[second]!) second = j;
    logits.push(row);
    gaps.push(row[tok]! - row[second]!);
    seconds.push(second);
    if (eos.includes(tok)) break;
    tokens.push(tok);
    seq.push(tok);
  }
  return { tokens, gaps, seconds, logits };
}

/**
 * Precision fast: the engine's greedy tokens against the reference's. Decode steps run on
 * int8 activations (docs/engine.md), so the engine's logits there differ from float64 by up
 * to `err` (measured below, per model and ISA); tokens must be identical at every step
 * whose reference margin is above 2·err, and a first difference is accepted only at a
 * near-tie (margin ≤ 2·err) where the engine picked the reference's runner-up; the
 * message reports it. (Precision exact must give the reference's tokens, every one.)
 */
type Asserts = { pass(msg: string): void; ok(v: unknown, msg: string): unknown };
async function checkGreedy(t: Asserts, label: string, model: Model, prompt: number[], ref: Greedy): Promise<void> {
  // decode error along the reference's own path: feed its tokens one at a time
  const s = model.createSession({ contextSize: 128 });
  let row = await s.eval(prompt);
  let err = 0;
  for (let i = 0; i < ref.logits.length; i++) {
    for (let j = 0; j < row.length; j++) err = Math.max(err, Math.abs(row[j]! - ref.logits[i]![j]!));
    if (i < ref.tokens.length) row = await s.eval([ref.tokens[i]!]);
  }
  s.dispose();
  const g = model.createSession({ contextSize: 128 });
  const got: number[] = [];
  for await (const c of g.generate(prompt, { maxTokens: ref.tokens.length, temperature: 0 })) if (c.token >= 0) got.push(c.token);
  g.dispose();
  let i = 0;
  while (i < ref.tokens.length && got[i] === ref.tokens[i]) i++;
  if (i === ref.tokens.length && got.length === ref.tokens.length) {
    t.pass(`${label}: ${got.length} greedy tokens identical (decode error ${err.toExponential(1)})`);
  } else {
    const gap = ref.gaps[i] ?? Infinity;
    t.ok(gap <= 2 * err && got[i] === ref.seconds[i], `${label}: greedy tokens identical for ${i} of ${ref.tokens.length}, then the reference's runner-up `
      + `(${got[i]} for ${ref.tokens[i]}) at a near-tie (margin ${gap.toExponential(1)} <= 2 × decode error ${err.toExponential(1)})`);
  }
}

t.test('pack / unpack round trips and the published bit order', async (t) => {
  // 4-bit: eight values per word, value k at bits 4·(k mod 8); 8-bit: four per word
  const u = Uint8Array.from({ length: 10 * 3 }, (_, i) => (i * 7 + 3) & 15); // K 10, N 3 ([K, N])
  const w = packCtWeight(u, 10, 3, 4);
  t.equal(w.length, 3 * 2, 'ceil(10/8) = 2 words per row');
  t.equal((w[0]! >>> 0) & 15, u[0 * 3 + 0], 'row 0 value 0 in bits 0..3');
  t.equal((w[0]! >>> 28) & 15, u[7 * 3 + 0], 'row 0 value 7 in bits 28..31');
  t.equal(w[1]! >>> 8, 0, 'padding of the last word is zero');
  t.same(Array.from(unpackCtWeight(w, 10, 3, 4)), Array.from(u));
  const u8 = Uint8Array.from({ length: 6 * 2 }, (_, i) => (i * 37) & 255);
  const w8 = packCtWeight(u8, 6, 2, 8);
  t.equal((w8[0]! >>> 24) & 255, u8[3 * 2 + 0], '8-bit: value 3 in bits 24..31');
  t.same(Array.from(unpackCtWeight(w8, 6, 2, 8)), Array.from(u8));
  // zero points packed along the rows: row n of group g at bits 4·(n mod 8) of word [n/8][g]
  const z = Uint8Array.from({ length: 2 * 11 }, (_, i) => (i * 5) & 15); // [groups 2, N 11]
  const pz = packCtZeros(z, 2, 11, 4);
  t.equal(pz.length, 2 * 2, '[ceil(11/8), 2]');
  t.equal((pz[1 * 2 + 1]! >>> 8) & 15, z[1 * 11 + 10], 'row 10 of group 1 in word [1][1] bits 8..11');
  t.same(Array.from(unpackCtZeros(pz, 2, 11, 4)), Array.from(z));
  const sc = Uint16Array.from([1, 2, 3, 4, 5, 6]); // [groups 2, N 3]
  t.same(Array.from(ctScales(sc, 2, 3)), [1, 4, 2, 5, 3, 6], 'weight_scale is [N, groups]');
  t.same(Array.from(ctWeightShape(7, 9)), [7n, 9n]);
});

t.test('compressed-tensors × Llama / Qwen2 / Qwen3 give the dequantized model\'s logits and greedy tokens, every ISA', { skip: engineSkip }, async (t) => {
  const toks = [1, 17, 200, 33, 5, 96, 140, 7, 250, 64, 3, 99];
  const V = 256;
  for (const a of ARCHS) {
    const base = baseModel(a);
    for (const c of CASES) {
      const tag = `${a.name}-${c.name.replace(/[^a-z0-9]+/gi, '-')}`;
      const { qdir, exact } = buildCase(base, tag, c);
      const refExact = referenceLogits(exact, toks);
      const greedy = referenceGreedy(exact, toks.slice(0, 5), 8);
      for (const isa of isas) {
        const xm = await engine!.loadModel(qdir, { isa, threads: 2, kvCache: 'f32', precision: 'exact' });
        let xall!: Float32Array;
        try {
          const s = xm.createSession({ contextSize: 64 });
          xall = await s.eval(toks, { allLogits: true });
          s.dispose();
          const ee = compareLogits(xall, refExact, V);
          t.ok(ee.rel <= REL_TOL && ee.argmaxSame === toks.length, `${a.name} ${c.name} [${isa}] ${xm.info.quant} exact: prefill vs float64 of (u − z)·s: ${describeComparison(ee)} (<= ${REL_TOL}, every argmax)`);
          t.same(await engineGreedy(xm, toks.slice(0, 5), 8), greedy.tokens, `${a.name} ${c.name} [${isa}] exact: ${greedy.tokens.length} greedy tokens = the reference's`);
        } finally {
          xm.dispose();
        }
        const model = await engine!.loadModel(qdir, { isa, threads: 2, kvCache: 'f32' });
        try {
          const s = model.createSession({ contextSize: 64 });
          const all = await s.eval(toks, { allLogits: true });
          s.dispose();
          const fe = compareLogits(all, Array.from({ length: toks.length }, (_, p) => xall.subarray(p * V, (p + 1) * V)), V);
          t.ok(fe.rel <= FAST_VS_EXACT && fe.argmaxWrong === 0, `${a.name} ${c.name} [${isa}] fast vs exact: prefill ${describeComparison(fe)} (<= ${FAST_VS_EXACT}, argmax except near-ties)`);
          await checkGreedy(t, `${a.name} ${c.name} [${isa}] fast`, model, toks.slice(0, 5), greedy);
        } finally {
          model.dispose();
        }
      }
    }
  }
});

t.test('stories260K re-packed as compressed-tensors (g32, down_proj ignored): greedy text of the float64 forward of the same values', { skip: engineSkip }, async (t) => {
  const src = storiesPath();
  const ref = JSON.parse(readFileSync(path.join(src, 'reference_greedy.json'), 'utf8')) as { cases: { prompt: string; input_ids: number[] }[] };
  for (const sym of [true, false]) {
    const out = path.join(root, `stories-ct-${sym ? 'sym' : 'asym'}`);
    const r = quantizeModelGptqSync({ model: src, out, layout: 'ct', bits: 4, groupSize: 32, sym, dtype: 'f32', force: true });
    t.same(r.modulesToNotConvert, ['mlp.down_proj'], 'down_proj (in_features 172) is not quantized');
    const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: { ignore: string[]; config_groups: Record<string, { weights: { symmetric: boolean; group_size: number } }> } };
    t.ok(cfg.quantization_config.ignore.includes('model.layers.4.mlp.down_proj'), 'down_proj named in ignore');
    t.equal(cfg.quantization_config.config_groups.group_0!.weights.symmetric, sym);
    // the same quantized values, dequantized here from the written tensors: an F32 checkpoint
    const deq = out + '-f32';
    const ck = Checkpoint.open(out);
    const tensors: TensorData[] = [];
    for (const name of ck.names()) {
      if (!name.endsWith('.weight_packed') && /\.weight_(scale|zero_point|shape)$/.test(name)) continue;
      if (name.endsWith('.weight_packed')) {
        const m = name.slice(0, -'.weight_packed'.length);
        const [N, K] = Array.from(ck.read(`${m}.weight_shape`) as BigInt64Array, Number) as [number, number];
        const ng = K / 32;
        const u = unpackCtWeight(ck.readInt32(name), K, N, 4);
        const zu = sym ? null : unpackCtZeros(ck.readInt32(`${m}.weight_zero_point`), ng, N, 4);
        const s = ck.read(`${m}.weight_scale`) as Uint16Array; // [N, ng]
        const w = new Float32Array(N * K);
        for (let n = 0; n < N; n++) {
          for (let k = 0; k < K; k++) {
            const g = Math.floor(k / 32);
            const sc = f16ToF32(s[n * ng + g]!);
            const z = zu ? zu[g * N + n]! : 8;
            w[n * K + k] = (u[k * N + n]! - z) * sc; // exact (u − z)·s
          }
        }
        tensors.push({ name: `${m}.weight`, dtype: 'F32', shape: [N, K], data: w });
      } else {
        tensors.push({ name, dtype: 'F32', shape: ck.entry(name).shape, data: ck.readFloat32(name) });
      }
    }
    ck.close();
    mkdirSync(deq, { recursive: true });
    writeSafetensors(path.join(deq, 'model.safetensors'), tensors);
    const qc = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as Record<string, unknown>;
    delete qc.quantization_config;
    writeFileSync(path.join(deq, 'config.json'), JSON.stringify(qc));
    writeFileSync(path.join(deq, 'generation_config.json'), readFileSync(path.join(out, 'generation_config.json')));
    const xm = await engine!.loadModel(out, { threads: 2, kvCache: 'f32', precision: 'exact' });
    const model = await engine!.loadModel(out, { threads: 2, kvCache: 'f32' });
    try {
      t.equal(model.info.quant, `ct-w4g32${sym ? '' : '-asym'}`);
      const label = `stories260K ct ${sym ? 'sym' : 'asym'}`;
      for (const c of ref.cases.slice(1)) {
        const want = referenceGreedy(deq, c.input_ids, 40);
        // prefill over the prompt and the reference's continuation
        const seq = [...c.input_ids, ...want.tokens];
        const refAll = referenceLogits(deq, seq);
        const xs = xm.createSession({ contextSize: 128 });
        const xall = await xs.eval(seq, { allLogits: true });
        xs.dispose();
        const xe = compareLogits(xall, refAll, 512);
        t.ok(xe.rel <= REL_TOL && xe.argmaxSame === seq.length, `${label} '${c.prompt}' exact: prefill of ${seq.length} tokens vs float64: ${describeComparison(xe)} (<= ${REL_TOL}, every argmax)`);
        t.same(await engineGreedy(xm, c.input_ids, 40), want.tokens, `${label} '${c.prompt}' exact: ${want.tokens.length} greedy tokens = the float64 forward's`);
        const ps = model.createSession({ contextSize: 128 });
        const fe = compareLogits(await ps.eval(seq, { allLogits: true }), Array.from({ length: seq.length }, (_, p) => xall.subarray(p * 512, (p + 1) * 512)), 512);
        ps.dispose();
        t.ok(fe.rel <= FAST_VS_EXACT && fe.argmaxWrong === 0, `${label} '${c.prompt}' fast vs exact: prefill ${describeComparison(fe)} (<= ${FAST_VS_EXACT}, argmax except near-ties)`);
        await checkGreedy(t, `${label} '${c.prompt}' fast`, model, c.input_ids, want);
        if (model.tokenizer) t.comment(`float64: ${JSON.stringify(model.tokenizer.decode(want.tokens))}`);
      }
    } finally {
      model.dispose();
      xm.dispose();
    }
  }
});

t.test('shoal quantize --format compressed-tensors writes W8A16 channel checkpoints the engine loads', { skip: engineSkip }, async (t) => {
  const out = path.join(root, 'cli-w8');
  const stdout = execFileSync(process.execPath, [CLI_MAIN, 'quantize', '--format', 'compressed-tensors', '--bits', '8', '--group', '-1', '--sym',
    '--model', storiesPath(), '--out', out, '--dtype', 'f32'], { encoding: 'utf8' });
  t.match(stdout, /rtn compressed-tensors sym w8 channel: 30 linears quantized, 5 kept in f32 \(not quantized: mlp\.down_proj\)/);
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: Record<string, unknown> };
  t.equal(cfg.quantization_config.quant_method, 'compressed-tensors');
  t.equal(cfg.quantization_config.format, 'pack-quantized');
  const model = await engine!.loadModel(out, { threads: 2 });
  try {
    t.equal(model.info.quant, 'ct-w8ch');
    const s = model.createSession({ contextSize: 64 });
    const logits = await s.eval([1, 403, 407, 261, 378]);
    t.ok(logits.every(Number.isFinite), 'finite logits');
  } finally {
    model.dispose();
  }
  // 3 bits is not a compressed-tensors layout Shoal writes
  t.throws(() => execFileSync(process.execPath, [CLI_MAIN, 'quantize', '--format', 'compressed-tensors', '--bits', '3', '--model', storiesPath(), '--out', path.join(root, 'cli-w3')], { stdio: 'pipe' }));
});
