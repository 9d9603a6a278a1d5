// gen-model.ts — synthetic random-weight checkpoints with real LLaMA-family
// shapes, unquantized or AutoAWQ INT4 (gemm), in Hugging Face layout.
//
// Weights are streamed tensor by tensor to the file (a 7B model is never held
// in memory). Values come from a seeded xoshiro128** generator; a normal
// variate is approximated by the sum of the 4 bytes of one 32-bit draw
// (Irwin-Hall, 1021 levels, +-3.45 sigma), mapped through a per-tensor table
// that already holds the encoded f16/bf16/f32 value. Each tensor has its own
// stream (seed, name), so the values do not depend on order or sharding.
//
// Scales (chosen to look like trained checkpoints and give non-degenerate logits):
//   linear weights       N(0, 1/in_features)   (~0.02 for hidden 2048..4096)
//   embeddings (untied)  N(0, 0.02^2); tied: N(0, 1/hidden) (they are the lm_head too)
//   lm_head              N(0, 1/hidden)        (logits with std ~1)
//   RMSNorm gains        N(1, 0.05^2)
//   q/k/v biases         N(0, 0.05^2)
import { existsSync, rmSync } from 'node:fs';
import path from 'node:path';
import { packAwq, quantizeLinear } from '../formats/awq.js';
import { ST_DTYPE,
  buildConfigJson, buildGenerationConfigJson, isNotConverted, isShapeName, MODEL_SHAPES, parameterCount,
  planTensors, unquantizableKinds, validateShape,
  type FloatDType, type ModelShape, type PlannedTensor, type QuantConfig, type ShapeName,
} from '../arch/model-shapes.js';
import { abortOutputDir, beginOutputDir, CheckpointWriter, commitOutputDir, DEFAULT_MAX_SHARD_BYTES, type TensorSpec } from '../io/safetensors-write.js';
import { f32BitsToBf16Bits, f32BitsToF16Bits, numel, type StDType } from '../io/dtypes.js';
import { tempSibling, writeFileAtomicSync, ShoalError } from '@shoal/common';
import { quantizeModelGptqSync } from '../quant/gptq.js';
import { copyTokenizerFiles, tokenizerVocabSize } from '../io/hf-folder.js';

// ---------------------------------------------------------------------------
// random numbers
// ---------------------------------------------------------------------------

/** 32-bit string hash (FNV-1a) mixed with a seed. */
function hashName(seed: number, name: string): number {
  let h = (0x811c9dc5 ^ seed) >>> 0;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/** splitmix32 step, used to seed the generator state. */
function splitmix32(x: number): [number, number] {
  const s = (x + 0x9e3779b9) >>> 0;
  let z = s;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
  return [s, (z ^ (z >>> 16)) >>> 0];
}

/** xoshiro128** state for one tensor stream. */
export class Rng {
  a: number; b: number; c: number; d: number;

  constructor(seed: number, stream = '') {
    let s = hashName(seed >>> 0, stream);
    const st: number[] = [];
    for (let i = 0; i < 4; i++) {
      const [ns, v] = splitmix32(s);
      s = ns;
      st.push(v);
    }
    if (!st.some((v) => v !== 0)) st[0] = 1;
    [this.a, this.b, this.c, this.d] = st as [number, number, number, number];
  }

  nextU32(): number {
    const r = Math.imul(rotl(Math.imul(this.b, 5), 7), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a; this.d ^= this.b; this.b ^= this.c; this.a ^= this.d;
    this.c ^= t; this.d = rotl(this.d, 11);
    return r;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Irwin-Hall(4 bytes) levels: sum in 0..1020, mean 510, std sqrt(4 * (256^2 - 1) / 12). */
const IH_LEVELS = 1021;
const IH_MEAN = 510;
const IH_STD = Math.sqrt((4 * (256 * 256 - 1)) / 12);

/** Value of level k of an approximate N(mean, std^2). */
export function normalLevel(k: number, mean: number, std: number): number {
  return mean + ((k - IH_MEAN) / IH_STD) * std;
}

type Table = Uint16Array | Float32Array;

function makeTable(dtype: 'F32' | 'F16' | 'BF16', mean: number, std: number): Table {
  const f = new Float32Array(IH_LEVELS);
  for (let k = 0; k < IH_LEVELS; k++) f[k] = normalLevel(k, mean, std);
  if (dtype === 'F32') return f;
  const u = new Uint32Array(f.buffer);
  const t = new Uint16Array(IH_LEVELS);
  for (let k = 0; k < IH_LEVELS; k++) t[k] = dtype === 'F16' ? f32BitsToF16Bits(u[k]!) : f32BitsToBf16Bits(u[k]!);
  return t;
}

/** Fills out[0..n) with table[IrwinHall(rng)]; the hot loop keeps the state in locals. */
function fillFromTable(rng: Rng, table: Table, out: Table, n: number): void {
  let a = rng.a, b = rng.b, c = rng.c, d = rng.d;
  for (let i = 0; i < n; i++) {
    const x = Math.imul(((Math.imul(b, 5) << 7) | (Math.imul(b, 5) >>> 25)), 9);
    const t = b << 9;
    c ^= a; d ^= b; b ^= c; a ^= d; c ^= t; d = (d << 11) | (d >>> 21);
    out[i] = table[(x & 0xff) + ((x >>> 8) & 0xff) + ((x >>> 16) & 0xff) + (x >>> 24)]!;
  }
  rng.a = a; rng.b = b; rng.c = c; rng.d = d;
}

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

export type QuantName = 'none' | 'awq-w4g32' | 'awq-w4g64' | 'awq-w4g128' | 'gptq-w2g64' | 'gptq-w2g128' | 'gptq-w3g128' | 'gptq-w4g128' | 'gptq-w8g128';
export const QUANT_NAMES: readonly QuantName[] = ['none', 'awq-w4g32', 'awq-w4g64', 'awq-w4g128', 'gptq-w2g64', 'gptq-w2g128', 'gptq-w3g128', 'gptq-w4g128', 'gptq-w8g128'];

/** `gptq-w<b>g<G>`: bits and group of a GPTQ (gptq_v2, RTN) quant name, or null. */
export function parseGptqName(q: unknown): { bits: number; groupSize: number } | null {
  const m = typeof q === 'string' ? /^gptq-w([2348])g(\d+)$/.exec(q) : null;
  return m ? { bits: Number(m[1]), groupSize: Number(m[2]) } : null;
}

/** Group size of a quant name (`awq-w4g<G>`), 0 for none. */
export function parseQuantName(q: string): number {
  if (q === 'none') return 0;
  const m = /^awq-w4g(\d+)$/.exec(q);
  if (!m || Number(m[1]) <= 0) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --quant ${q}; use one of ${QUANT_NAMES.join(', ')}`);
  }
  return Number(m[1]);
}

export interface GenerateModelOptions {
  /** Output folder (created atomically). */
  out: string;
  /** A named shape or a full shape; default 'tiny'. */
  shape?: ShapeName | ModelShape;
  /** Dimension overrides (e.g. layers for tests, custom hidden/heads). When hiddenSize or heads change and headDim is not given, headDim = hidden / heads. */
  overrides?: Partial<ModelShape>;
  /** 'none' | 'awq-w4g<G>' or a group size (0 = none). */
  quant?: QuantName | string | number;
  /** Storage dtype of unquantized tensors (AWQ scales are always f16). Default f16. */
  dtype?: FloatDType;
  seed?: number;
  /** Folder with tokenizer.json (+ tokenizer_config.json, special_tokens_map.json) to copy. */
  tokenizerDir?: string;
  /** Replace a non-empty output folder. */
  force?: boolean;
  /** Split into shards above this many bytes of tensor data (default 4 GiB). */
  maxShardBytes?: number;
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

export interface GenerateModelResult {
  dir: string;
  shape: ModelShape;
  quant: string;
  groupSize: number;
  dtype: FloatDType;
  seed: number;
  modulesToNotConvert: string[];
  files: string[];
  tensors: number;
  parameters: number;
  bytes: number;
  seconds: number;
}

/** Resolves a shape name/object plus overrides into a validated shape. */
export function resolveShape(shape: ShapeName | ModelShape = 'tiny', overrides: Partial<ModelShape> = {}): ModelShape {
  let base: ModelShape;
  if (typeof shape === 'string') {
    if (!isShapeName(shape)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --shape ${shape}; use one of ${Object.keys(MODEL_SHAPES).join(', ')}`);
    base = MODEL_SHAPES[shape];
  } else base = shape;
  const s: ModelShape = { ...base, ...overrides, eosTokenIds: [...(overrides.eosTokenIds ?? base.eosTokenIds)] };
  if (overrides.headDim === undefined && (overrides.hiddenSize !== undefined || overrides.heads !== undefined)) {
    s.headDim = Math.floor(s.hiddenSize / s.heads);
  }
  if (overrides.kvHeads === undefined && overrides.heads !== undefined && s.heads % s.kvHeads !== 0) s.kvHeads = s.heads;
  if (s.modelType === 'qwen2' && overrides.qkvBias === undefined) s.qkvBias = true;
  // a reduced vocabulary keeps the special ids valid: BOS 1, EOS 2 (as Llama-2)
  const V = s.vocabSize;
  if (V >= 3 && ((s.bosTokenId !== null && s.bosTokenId >= V) || s.eosTokenIds.some((e) => e >= V))) {
    if (overrides.bosTokenId === undefined) s.bosTokenId = 1;
    if (overrides.eosTokenIds === undefined) s.eosTokenIds = [2];
  }
  validateShape(s, 'generated model');
  return s;
}

// ---------------------------------------------------------------------------
// generation
// ---------------------------------------------------------------------------

interface OutTensor {
  spec: TensorSpec;
  /** Which logical tensor produces it. */
  source: PlannedTensor;
  part: 'value' | 'qweight' | 'qzeros' | 'scales';
}

/** Stored tensors of a planned checkpoint (AWQ linears become qweight/qzeros/scales). */
function storedTensors(plan: PlannedTensor[], dtype: FloatDType, quant: QuantConfig | null): OutTensor[] {
  const out: OutTensor[] = [];
  const fdt = ST_DTYPE[dtype];
  for (const t of plan) {
    const quantized = quant !== null && t.role === 'linear' && !isNotConverted(t.module!, quant.modulesToNotConvert);
    if (quantized) {
      const [N, K] = t.shape as [number, number];
      const G = quant.groupSize;
      out.push({ spec: { name: `${t.module}.qweight`, dtype: 'I32', shape: [K, N / 8] }, source: t, part: 'qweight' });
      out.push({ spec: { name: `${t.module}.qzeros`, dtype: 'I32', shape: [K / G, N / 8] }, source: t, part: 'qzeros' });
      out.push({ spec: { name: `${t.module}.scales`, dtype: 'F16', shape: [K / G, N] }, source: t, part: 'scales' });
    } else {
      // AutoAWQ keeps biases of quantized linears in f16
      const dt: StDType = quant !== null && t.role === 'bias' && !isNotConverted(t.module!, quant.modulesToNotConvert) ? 'F16' : fdt;
      out.push({ spec: { name: t.name, dtype: dt, shape: t.shape }, source: t, part: 'value' });
    }
  }
  return out;
}

/** Mean and std of a logical tensor's values. */
function tensorStats(shape: ModelShape, t: PlannedTensor): { mean: number; std: number } {
  switch (t.role) {
    case 'embed': return { mean: 0, std: shape.tieWordEmbeddings ? 1 / Math.sqrt(shape.hiddenSize) : 0.02 };
    case 'norm': return { mean: 1, std: 0.05 };
    case 'bias': return { mean: 0, std: 0.05 };
    case 'lm_head': return { mean: 0, std: 1 / Math.sqrt(shape.hiddenSize) };
    case 'linear': return { mean: 0, std: 1 / Math.sqrt(t.shape[1]!) };
  }
}

/**
 * The float values a logical tensor gets (exactly what generateModel writes
 * before f16/bf16 rounding or quantization): for tests and reproducibility.
 */
export function syntheticValues(shape: ModelShape, t: PlannedTensor, seed: number): Float32Array {
  const { mean, std } = tensorStats(shape, t);
  const table = makeTable('F32', mean, std) as Float32Array;
  const out = new Float32Array(numel(t.shape));
  fillFromTable(new Rng(seed, t.name), table, out, out.length);
  return out;
}

const CHUNK = 1 << 20;

/** Writes a synthetic model folder; see GenerateModelOptions. */
export function generateModel(opts: GenerateModelOptions): GenerateModelResult {
  const t0 = performance.now();
  const gptq = parseGptqName(opts.quant);
  if (gptq) {
    // synthetic float weights (f16) in a sibling temp folder, then GPTQ RTN (quant/gptq.ts)
    const tmpFloat = tempSibling(path.resolve(opts.out)) + '-float';
    try {
      const f = generateModel({ ...opts, out: tmpFloat, quant: 'none', force: true });
      const q = quantizeModelGptqSync({
        model: tmpFloat, out: opts.out, bits: gptq.bits, groupSize: gptq.groupSize, dtype: opts.dtype ?? 'f16', force: opts.force ?? false,
        ...(opts.maxShardBytes ? { maxShardBytes: opts.maxShardBytes } : {}),
      });
      return {
        ...f, dir: q.dir, quant: String(opts.quant), groupSize: gptq.groupSize, modulesToNotConvert: q.modulesToNotConvert,
        files: q.files, bytes: q.bytesOut, seconds: (performance.now() - t0) / 1000,
      };
    } finally {
      rmSync(tmpFloat, { recursive: true, force: true });
    }
  }
  const dtype: FloatDType = opts.dtype ?? 'f16';
  if (!(dtype in ST_DTYPE)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --dtype ${String(dtype)}; use f16, f32 or bf16`);
  const seed = opts.seed ?? 0;
  if (!Number.isSafeInteger(seed) || seed < 0) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seed must be a non-negative integer, got ${seed}`);
  const overrides = { ...(opts.overrides ?? {}) };
  let tokVocab: number | null = null;
  if (opts.tokenizerDir) {
    const tj = path.join(opts.tokenizerDir, 'tokenizer.json');
    if (!existsSync(tj)) throw new ShoalError('SHOAL_ERR_IO', `${opts.tokenizerDir} has no tokenizer.json; point --tokenizer at a Hugging Face tokenizer folder`);
    tokVocab = tokenizerVocabSize(tj);
    if (overrides.vocabSize === undefined && (opts.shape ?? 'tiny') === 'tiny') overrides.vocabSize = tokVocab;
  }
  const shape = resolveShape(opts.shape ?? 'tiny', overrides);
  if (tokVocab !== null && tokVocab > shape.vocabSize) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `the tokenizer needs ${tokVocab} vocabulary entries but the model has ${shape.vocabSize}; pass --vocab ${tokVocab} or another tokenizer`);
  }
  const groupSize = typeof opts.quant === 'number' ? opts.quant : parseQuantName(opts.quant ?? 'none');
  if (!Number.isSafeInteger(groupSize) || groupSize < 0) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `invalid group size ${groupSize}`);
  const quant: QuantConfig | null = groupSize > 0 ? {
    method: 'awq', bits: 4, groupSize, zeroPoint: true, version: 'gemm',
    modulesToNotConvert: unquantizableKinds(shape, groupSize),
  } : null;
  const plan = planTensors(shape);
  const stored = storedTensors(plan, dtype, quant);

  const tmp = beginOutputDir(opts.out, opts.force ?? false);
  let writer: CheckpointWriter | null = null;
  try {
    const w = new CheckpointWriter(tmp, stored.map((s) => s.spec), opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
    writer = w;
    const total = w.totalBytes;
    let done = 0;
    const emit = (name: string, data: ArrayBufferView) => {
      w.append(name, data);
      done += data.byteLength;
      opts.onProgress?.(done, total);
    };

    for (const t of plan) {
      const outs = stored.filter((s) => s.source === t);
      if (outs.length === 1 && outs[0]!.part === 'value') {
        const spec = outs[0]!.spec;
        const { mean, std } = tensorStats(shape, t);
        const table = makeTable(spec.dtype as 'F32' | 'F16' | 'BF16', mean, std);
        const rng = new Rng(seed, t.name);
        const count = numel(t.shape);
        const buf: Table = spec.dtype === 'F32' ? new Float32Array(Math.min(CHUNK, count)) : new Uint16Array(Math.min(CHUNK, count));
        for (let off = 0; off < count; off += CHUNK) {
          const m = Math.min(CHUNK, count - off);
          fillFromTable(rng, table, buf, m);
          emit(spec.name, buf.subarray(0, m));
        }
      } else {
        const [N, K] = t.shape as [number, number];
        const weights = syntheticValues(shape, t, seed);
        const ql = quantizeLinear(weights, N, K, quant!.groupSize);
        emit(`${t.module}.qweight`, packAwq(ql.q, K, N));
        emit(`${t.module}.qzeros`, packAwq(ql.zeros, K / ql.groupSize, N));
        emit(`${t.module}.scales`, ql.scales);
      }
    }
    w.close();
    const config = buildConfigJson(shape, { dtype, quant });
    writeFileAtomicSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    writeFileAtomicSync(path.join(tmp, 'generation_config.json'), JSON.stringify(buildGenerationConfigJson(shape), null, 2) + '\n');
    const files = [...w.files, 'config.json', 'generation_config.json'];
    if (opts.tokenizerDir) files.push(...copyTokenizerFiles(opts.tokenizerDir, tmp));
    commitOutputDir(tmp, opts.out);
    return {
      dir: path.resolve(opts.out),
      shape,
      quant: groupSize > 0 ? `awq-w4g${groupSize}` : 'none',
      groupSize,
      dtype,
      seed,
      modulesToNotConvert: quant?.modulesToNotConvert ?? [],
      files,
      tensors: stored.length,
      parameters: parameterCount(shape),
      bytes: w.totalBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (err) {
    (writer as CheckpointWriter | null)?.abort();
    abortOutputDir(tmp);
    throw err;
  }
}
