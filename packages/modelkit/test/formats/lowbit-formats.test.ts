// Low-bit checkpoints (GPTQ v1/v2 incl. act-order, EfficientQAT native, AutoAWQ
// gemv / gemv_fast; 2, 3, 4 and 8 bits) built in the test from known integer
// codes, zero points and f16 scales, packed by formats/gptq.ts (written from the
// format descriptions, independently of the native loader). Each loads in the
// engine and gives the logits of the plain dequantized weights written as an
// F32 checkpoint and run through the float64 reference forward — on every CPU
// ISA: in precision 'exact' (f32 (q − z)·s and activations, f32 KV cache) within
// 1e-4 of max |logit| for prefill and decode, every argmax and the greedy tokens
// the reference's; the default precision 'fast' against exact on the same ISA
// (bounds below). Mixed-up metadata gives its error code through the JS API.
// Skips the engine parts when the native addon is not built (`make native`).
import t from 'tap';
import { groupIndex, seededRandom } from './random-quant.js';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateModel } from '../../src/synth/gen-model.js';
import {
  awqZerosWidth, packAwqGemv, packAwqGemvFast, packEqatWeight, packEqatZeros, packGptqWeight, packGptqZeros,
  unpackGptqWeight, unpackGptqZeros,
} from '../../src/formats/gptq.js';
import { referenceLogits } from '../../src/eval/reference-forward.js';
import { Checkpoint } from '../../src/io/safetensors.js';
import { f16ToF32, f64ToF16 } from '../../src/io/dtypes.js';
import { writeSafetensors, type TensorData } from '../../src/io/safetensors-write.js';
import { compareLogits, describeComparison, engine, engineGreedy, engineSkip, isas, referenceGreedy } from '@shoal/testkit';


const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-lowbit-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const { rnd, rint } = seededRandom(987654321); // deterministic data

type Fmt = 'gptq' | 'eqat' | 'gemv' | 'gemv_fast';
interface Case { name: string; fmt: Fmt; bits: number; group: number; v1?: boolean; act?: boolean }

const CASES: Case[] = [
  { name: 'gptq-v2 w2g32', fmt: 'gptq', bits: 2, group: 32 },
  { name: 'gptq-v1 w3g64', fmt: 'gptq', bits: 3, group: 64, v1: true },
  { name: 'gptq-v2 w3g128', fmt: 'gptq', bits: 3, group: 128 },
  { name: 'gptq-v1 w4g128', fmt: 'gptq', bits: 4, group: 128, v1: true },
  { name: 'gptq-v2 w8g-1', fmt: 'gptq', bits: 8, group: -1 },
  { name: 'gptq-v1 act-order w3g32', fmt: 'gptq', bits: 3, group: 32, v1: true, act: true },
  { name: 'gptq-v2 act-order w4g64', fmt: 'gptq', bits: 4, group: 64, act: true },
  { name: 'gptq-v2 act-order w2g64', fmt: 'gptq', bits: 2, group: 64, act: true },
  { name: 'eqat w2g64', fmt: 'eqat', bits: 2, group: 64 },
  { name: 'eqat w3g128', fmt: 'eqat', bits: 3, group: 128 },
  { name: 'eqat w4g32', fmt: 'eqat', bits: 4, group: 32 },
  { name: 'eqat w8g64', fmt: 'eqat', bits: 8, group: 64 },
  { name: 'awq gemv w4g32', fmt: 'gemv', bits: 4, group: 32 },
  { name: 'awq gemv_fast w4g64', fmt: 'gemv_fast', bits: 4, group: 64 },
];

const base = path.join(root, 'base');
generateModel({
  out: base, shape: 'tiny', dtype: 'f32', seed: 3,
  overrides: { hiddenSize: 128, intermediateSize: 256, heads: 4, kvHeads: 2, headDim: 32, layers: 2, vocabSize: 256 },
});

/** Writes the quantized checkpoint and the F32 checkpoint of its dequantized weights. */
function buildCase(c: Case): { qdir: string; fdir: string } {
  const qdir = path.join(root, c.name.replace(/[^a-z0-9]+/gi, '-'));
  const fdir = qdir + '-f32';
  const ck = Checkpoint.open(base);
  const qt: TensorData[] = [];
  const ft: TensorData[] = [];
  const maxq = (1 << c.bits) - 1;
  for (const name of ck.names().sort()) {
    const e = ck.entry(name);
    const data = ck.readFloat32(name);
    if (!/_proj\.weight$/.test(name)) {
      qt.push({ name, dtype: 'F32', shape: e.shape, data });
      ft.push({ name, dtype: 'F32', shape: e.shape, data });
      continue;
    }
    const m = name.slice(0, -'.weight'.length);
    const [N, K] = e.shape as [number, number];
    const G = c.group === -1 ? K : c.group;
    const ng = K / G;
    const q = new Uint8Array(K * N);
    for (let i = 0; i < q.length; i++) q[i] = rint(maxq + 1);
    const z = new Uint8Array(ng * N); // true zero points
    for (let i = 0; i < z.length; i++) z[i] = c.v1 ? 1 + rint(maxq) : rint(maxq + 1);
    const sc = new Uint16Array(ng * N);
    for (let i = 0; i < sc.length; i++) sc[i] = f64ToF16((0.5 + 0.5 * rnd()) * 0.06 / maxq);
    const gIdx = groupIndex(K, G, !!c.act, rint);
    const w = new Float32Array(N * K);
    const szF16 = new Uint16Array(c.fmt === 'gemv_fast' ? ng * N : 0);
    if (c.fmt === 'gemv_fast') for (let i = 0; i < szF16.length; i++) szF16[i] = f64ToF16(-f16ToF32(sc[i]!) * z[i]!);
    for (let k = 0; k < K; k++) {
      for (let n = 0; n < N; n++) {
        const g = gIdx[k]!;
        const s = f16ToF32(sc[g * N + n]!);
        w[n * K + k] = c.fmt === 'gemv_fast' ? q[k * N + n]! * s + f16ToF32(szF16[g * N + n]!) : (q[k * N + n]! - z[g * N + n]!) * s;
      }
    }
    ft.push({ name, dtype: 'F32', shape: e.shape, data: w });
    if (c.fmt === 'gptq') {
      const stored = c.v1 ? z.map((v) => v - 1) : z;
      qt.push({ name: `${m}.qweight`, dtype: 'I32', shape: [Math.ceil((K * c.bits) / 32), N], data: packGptqWeight(q, K, N, c.bits) });
      qt.push({ name: `${m}.qzeros`, dtype: 'I32', shape: [ng, Math.ceil((N * c.bits) / 32)], data: packGptqZeros(stored, ng, N, c.bits) });
      qt.push({ name: `${m}.scales`, dtype: 'F16', shape: [ng, N], data: sc });
      qt.push({ name: `${m}.g_idx`, dtype: 'I32', shape: [K], data: gIdx });
    } else if (c.fmt === 'eqat') {
      const per = Math.floor(32 / c.bits);
      qt.push({ name: `${m}.qweight`, dtype: 'I32', shape: [Math.ceil(K / per), N], data: packEqatWeight(q, K, N, c.bits) });
      qt.push({ name: `${m}.qzeros`, dtype: 'I32', shape: [ng, Math.ceil(N / per)], data: packEqatZeros(z, ng, N, c.bits) });
      qt.push({ name: `${m}.scales`, dtype: 'F16', shape: [ng, N], data: sc });
    } else if (c.fmt === 'gemv') {
      const p = packAwqGemv(q, z, K, N, G);
      const s2 = new Uint16Array(N * 8 * p.W);
      for (let n = 0; n < N; n++) for (let g = 0; g < ng; g++) s2[n * 8 * p.W + g] = sc[g * N + n]!;
      qt.push({ name: `${m}.qweight`, dtype: 'I32', shape: [N, K / 8], data: p.qweight });
      qt.push({ name: `${m}.qzeros`, dtype: 'I32', shape: [N, p.W], data: p.qzeros });
      qt.push({ name: `${m}.scales`, dtype: 'F16', shape: [N, 8 * p.W], data: s2 });
    } else {
      const W = awqZerosWidth(K, G);
      const s2 = new Uint16Array(8 * W * N);
      const z2 = new Uint16Array(8 * W * N);
      s2.set(sc);
      z2.set(szF16);
      qt.push({ name: `${m}.qweight`, dtype: 'I16', shape: [N / 4, K], data: packAwqGemvFast(q, K, N) });
      qt.push({ name: `${m}.scales`, dtype: 'F16', shape: [8 * W, N], data: s2 });
      qt.push({ name: `${m}.scaled_zeros`, dtype: 'F16', shape: [8 * W, N], data: z2 });
    }
  }
  ck.close();
  const cfg = JSON.parse(readText(path.join(base, 'config.json'))) as Record<string, unknown>;
  const gen = readText(path.join(base, 'generation_config.json'));
  for (const [dir, tensors] of [[qdir, qt], [fdir, ft]] as const) {
    rmSync(dir, { recursive: true, force: true });
    mkdirp(dir);
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
    writeFileSync(path.join(dir, 'generation_config.json'), gen);
  }
  writeFileSync(path.join(fdir, 'config.json'), JSON.stringify(cfg));
  const qcfg = { ...cfg };
  if (c.fmt === 'gptq') {
    const qc = { bits: c.bits, group_size: c.group, desc_act: !!c.act, sym: false, checkpoint_format: c.v1 ? 'gptq' : 'gptq_v2' };
    if (c.v1) writeFileSync(path.join(qdir, 'quantize_config.json'), JSON.stringify(qc)); // AutoGPTQ sidecar (no quant_method)
    else qcfg.quantization_config = { quant_method: 'gptq', ...qc };
  } else if (c.fmt === 'eqat') {
    writeFileSync(path.join(qdir, 'shoal-quant.json'), JSON.stringify({ quant_method: 'efficientqat', bits: c.bits, group_size: c.group }));
  } else {
    qcfg.quantization_config = { quant_method: 'awq', bits: 4, group_size: c.group, zero_point: true, version: c.fmt };
  }
  writeFileSync(path.join(qdir, 'config.json'), JSON.stringify(qcfg));
  return { qdir, fdir };
}

function mkdirp(d: string): void { mkdirSync(d, { recursive: true }); }
function readText(f: string): string { return readFileSync(f, 'utf8'); }

t.test('formats/gptq: 3-bit straddling and round trips', async (t) => {
  // 32 values of 3 bits fill 3 words; value 10 spans words 0/1, value 21 spans words 1/2
  const q = new Uint8Array(32);
  for (let i = 0; i < 32; i++) q[i] = (i * 5 + 3) & 7;
  const w = packGptqWeight(q, 32, 1, 3);
  t.equal(w.length, 3);
  const u = new Uint32Array(w.buffer);
  t.equal(((u[0]! >>> 30) | ((u[1]! & 1) << 2)), q[10]);
  t.equal(((u[1]! >>> 31) | ((u[2]! & 3) << 1)), q[21]);
  t.same(Array.from(unpackGptqWeight(w, 32, 1, 3)), Array.from(q));
  const z = Uint8Array.from({ length: 3 * 40 }, (_, i) => (i * 7) & 3);
  t.same(Array.from(unpackGptqZeros(packGptqZeros(z, 3, 40, 2), 3, 40, 2)), Array.from(z));
});

/** Precision exact vs the float64 reference, relative to max |logit| (measured ≤ 9.0e-7). */
const REL_TOL = 1e-4;
// Precision fast vs exact, relative to max |logit|: int8 activations (decode, and INT4
// prefill) and f16 −s·z, measured up to 9.2e-2 on these random models (a layout bug gives
// ~1); 2/3/8-bit prefill dequantizes to f32 panels (f16 −s·z only): measured ≤ 8.8e-4.
const FAST_VS_EXACT = 1.5e-1;
const FAST_VS_EXACT_F32_PANELS = 5e-3;

t.test('low-bit checkpoints from known integers give the dequantized model\'s logits, every ISA', { skip: engineSkip }, async (t) => {
  const toks = [1, 17, 200, 33, 5, 96, 140, 7, 250, 64, 3, 99];
  const V = 256;
  const rows = (a: Float32Array) => Array.from({ length: toks.length }, (_, p) => a.subarray(p * V, (p + 1) * V));
  for (const c of CASES) {
    const { qdir, fdir } = buildCase(c);
    const ref = referenceLogits(fdir, toks);
    const greedy = referenceGreedy(fdir, toks.slice(0, 5), 8);
    /** one prefill of every token, and a 4-token prefill then one token at a time */
    const run = async (precision: 'fast' | 'exact', isa: (typeof isas)[number]) => {
      // f32 KV cache and the output matrix as stored: the check is on the weights' formats
      const model = await engine!.loadModel(qdir, { isa, threads: 2, kvCache: 'f32', lmHead: 'native', precision });
      try {
        const s = model.createSession({ contextSize: 64 });
        const all = await s.eval(toks, { allLogits: true });
        s.dispose();
        const s2 = model.createSession({ contextSize: 64 });
        const inc = new Float32Array(toks.length * V);
        inc.set(await s2.eval(toks.slice(0, 4), { allLogits: true }), 0);
        for (let p = 4; p < toks.length; p++) inc.set(await s2.eval([toks[p]!]), p * V);
        s2.dispose();
        const tokens = precision === 'exact' ? await engineGreedy(model, toks.slice(0, 5), 8, 64) : [];
        return { all, inc, tokens, quant: model.info.quant };
      } finally {
        model.dispose();
      }
    };
    for (const isa of isas) {
      const x = await run('exact', isa);
      const ep = compareLogits(x.all, ref, V);
      const ed = compareLogits(x.inc, ref, V, 4);
      t.ok(ep.rel <= REL_TOL && ep.argmaxSame === ep.rows, `${c.name} [${isa}] ${x.quant} exact: prefill vs dequantized float64 reference ${describeComparison(ep)} (<= ${REL_TOL}, every argmax)`);
      t.ok(ed.rel <= REL_TOL && ed.argmaxSame === ed.rows, `${c.name} [${isa}] exact: decode vs reference ${describeComparison(ed)} (<= ${REL_TOL}, every argmax)`);
      t.same(x.tokens, greedy, `${c.name} [${isa}] exact: ${greedy.length} greedy tokens = the reference's`);
      const f = await run('fast', isa);
      // INT4 prefill runs the int8-activation GEMM (as decode does); 2/3/8-bit prefill
      // dequantizes to f32 panels and stays tight
      const pb = c.bits === 4 ? FAST_VS_EXACT : FAST_VS_EXACT_F32_PANELS;
      const fp = compareLogits(f.all, rows(x.all), V);
      const fd = compareLogits(f.inc, rows(x.inc), V, 4);
      t.ok(fp.rel <= pb && fp.argmaxWrong === 0, `${c.name} [${isa}] fast vs exact: prefill ${describeComparison(fp)} (<= ${pb}, argmax except near-ties)`);
      t.ok(fd.rel <= FAST_VS_EXACT && fd.argmaxWrong === 0, `${c.name} [${isa}] fast vs exact: int8-activation decode ${describeComparison(fd)} (<= ${FAST_VS_EXACT}, argmax except near-ties)`);
    }
  }
});

t.test('mixed-up low-bit metadata gives error codes, never a crash', { skip: engineSkip }, async (t) => {
  const { qdir } = buildCase({ name: 'bad gptq w4g32', fmt: 'gptq', bits: 4, group: 32 });
  const cfgPath = path.join(qdir, 'config.json');
  const cfg = JSON.parse(readText(cfgPath)) as Record<string, Record<string, unknown>>;
  // bits that do not match the tensor shapes
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, quantization_config: { ...cfg.quantization_config, bits: 3 } }));
  await t.rejects(engine!.loadModel(qdir), { code: 'SHOAL_ERR_SHAPE', message: /qweight has shape .* but gptq-v2-w3g32 \(bits 3, group 32\) implies/ });
  // group size that does not match
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, quantization_config: { ...cfg.quantization_config, group_size: 64 } }));
  await t.rejects(engine!.loadModel(qdir), { code: 'SHOAL_ERR_SHAPE', message: /qzeros has shape|scales has shape|g_idx/ });
  // unsupported bits
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, quantization_config: { ...cfg.quantization_config, bits: 5 } }));
  await t.rejects(engine!.loadModel(qdir), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  // g_idx out of range
  writeFileSync(cfgPath, JSON.stringify(cfg));
  const ck = Checkpoint.open(qdir);
  const tensors: TensorData[] = ck.names().map((n) => {
    const e = ck.entry(n);
    let data = ck.read(n) as unknown as ArrayBufferView;
    if (n === 'model.layers.1.mlp.down_proj.g_idx') {
      const g = Int32Array.from(ck.read(n) as Int32Array);
      g[100] = 99;
      data = g;
    }
    return { name: n, dtype: e.dtype, shape: e.shape, data };
  });
  ck.close();
  writeSafetensors(path.join(qdir, 'model.safetensors'), tensors);
  await t.rejects(engine!.loadModel(qdir), { code: 'SHOAL_ERR_QUANT_METADATA', message: /down_proj\.g_idx\[100\] = 99 is outside \[0, 8\)/ });
});
