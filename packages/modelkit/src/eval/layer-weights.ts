// layer-weights.ts — one decoder layer of a checkpoint as f32 arrays, whatever the
// checkpoint's format: plain F32/F16/BF16 weights (including Shoal's
// fake-quantized F32 checkpoints), AutoAWQ gemm (formats/awq.ts) or GPTQ v1/v2
// with g_idx (formats/gptq.ts). Quantized linears are dequantized, w = (q − z)·s,
// with the same format readers the float64 reference forward and the format
// tests use. For `shoal eval layer-error`: the FP model and a quantized one are
// read the same way and run through the same layer forward.
import { ShoalError } from '@shoal/common';
import {
  isNotConverted, LINEAR_KINDS, linearDims, parseModelConfig, type LinearKind, type ModelShape,
} from '../arch/model-shapes.js';
import { dequantizeAwq } from '../formats/awq.js';
import { dequantizeGptq, unpackGptqWeight, unpackGptqZeros } from '../formats/gptq.js';
import { readFolderJson } from '../io/hf-folder.js';
import { Checkpoint } from '../io/safetensors.js';

/** How a checkpoint stores its linears, and what the writer is known to have done. */
export interface WeightFormat {
  /** float: plain weights; awq: AutoAWQ gemm; gptq: GPTQ qweight/qzeros/scales/g_idx */
  kind: 'float' | 'awq' | 'gptq';
  bits: number | null;
  groupSize: number | null;
  /** gptq only: checkpoint_format (gptq: zeros stored minus one; gptq_v2: as they are) */
  checkpointFormat?: 'gptq' | 'gptq_v2';
  descAct?: boolean;
  /** shoal_fake_quantization.method of a fake-quantized F32 checkpoint (rtn, awq), else null */
  fakeQuantMethod: string | null;
  /**
   * Whether the writer may have folded per-channel scales into norms and linears
   * (AWQ: W·diag(s) with the norm ÷ s), so that a quantized linear approximates
   * another matrix than the FP one and only whole-layer outputs are comparable.
   * True for AWQ fake-quant and for the AutoAWQ layout (which RTN and AWQ both write).
   */
  mayFoldScales: boolean;
  modulesToNotConvert: string[];
  /** human-readable, e.g. "gptq w4g128 act-order (gptq v1 zeros)" */
  label: string;
}

export interface LayerTensors {
  attnNorm: Float32Array;
  ffnNorm: Float32Array;
  qNorm: Float32Array | null;
  kNorm: Float32Array | null;
  /** [out, in] row-major, dequantized */
  w: Record<LinearKind, Float32Array>;
  bias: Partial<Record<LinearKind, Float32Array>>;
  /** kinds stored quantized in the checkpoint */
  quantized: LinearKind[];
}

export interface ModelFolder {
  dir: string;
  shape: ModelShape;
  format: WeightFormat;
  ck: Checkpoint;
}

function positive(q: Record<string, unknown>, key: string, where: string, fallback?: number): number {
  const v = q[key] ?? fallback;
  if (typeof v !== 'number' || !Number.isInteger(v) || (v < 1 && v !== -1)) {
    throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: quantization_config.${key} must be a positive integer (or -1), got ${JSON.stringify(q[key])}`);
  }
  return v;
}

/** The weight format a config.json declares. */
export function weightFormat(config: Record<string, unknown>, where: string): WeightFormat {
  const qc = config.quantization_config;
  if (qc === undefined || qc === null) {
    const fq = config.shoal_fake_quantization as Record<string, unknown> | undefined;
    const method = fq && typeof fq.method === 'string' ? fq.method : null;
    const bits = fq && typeof fq.bits === 'number' ? fq.bits : null;
    const group = fq && typeof fq.group_size === 'number' ? fq.group_size : null;
    return {
      kind: 'float', bits, groupSize: group, fakeQuantMethod: method, mayFoldScales: method !== null && method !== 'rtn',
      modulesToNotConvert: [],
      label: method ? `fake-quantized F32 (${method} w${bits ?? '?'}g${group ?? '?'})` : 'unquantized',
    };
  }
  if (typeof qc !== 'object' || Array.isArray(qc)) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: quantization_config must be an object`);
  const q = qc as Record<string, unknown>;
  const mtnc = Array.isArray(q.modules_to_not_convert) ? q.modules_to_not_convert.filter((x): x is string => typeof x === 'string') : [];
  const method = q.quant_method;
  if (method === 'awq') {
    const version = typeof q.version === 'string' ? q.version.toLowerCase() : 'gemm';
    if (version !== 'gemm') throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: AWQ version ${version} is not supported here; layer-error reads the AutoAWQ gemm layout`);
    const bits = positive(q, 'bits', where, typeof q.w_bit === 'number' ? q.w_bit : 4);
    if (bits !== 4) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: ${bits}-bit AWQ gemm is not supported; the layout is 4-bit`);
    const G = positive(q, 'group_size', where, typeof q.q_group_size === 'number' ? q.q_group_size : 128);
    return { kind: 'awq', bits, groupSize: G, fakeQuantMethod: null, mayFoldScales: true, modulesToNotConvert: mtnc, label: `AutoAWQ gemm w${bits}g${G}` };
  }
  if (method === 'gptq') {
    const bits = positive(q, 'bits', where);
    if (![2, 3, 4, 8].includes(bits)) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: ${bits}-bit GPTQ is not supported; use 2, 3, 4 or 8`);
    const G = positive(q, 'group_size', where, -1);
    const cf = q.checkpoint_format ?? 'gptq';
    if (cf !== 'gptq' && cf !== 'gptq_v2') throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: GPTQ checkpoint_format ${JSON.stringify(cf)} is not supported; use gptq or gptq_v2`);
    const descAct = q.desc_act === true;
    return {
      kind: 'gptq', bits, groupSize: G, checkpointFormat: cf, descAct, fakeQuantMethod: null, mayFoldScales: false, modulesToNotConvert: mtnc,
      label: `gptq w${bits}g${G}${descAct ? ' act-order' : ''} (${cf === 'gptq' ? 'v1' : 'v2'} zeros)`,
    };
  }
  throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT',
    `${where}: quant_method ${JSON.stringify(method)} is not supported by layer-error; it reads unquantized, fake-quantized, AutoAWQ gemm and GPTQ checkpoints`);
}

/** Opens a model folder: its shape (config.json), weight format and tensors. Close ck when done. */
export function openModelFolder(dir: string): ModelFolder {
  const { config, gen, cfgPath: where } = readFolderJson(dir);
  const format = weightFormat(config, where);
  // the shape is the same whatever the quantization (parseModelConfig reads AutoAWQ configs only)
  const { shape } = parseModelConfig({ ...config, quantization_config: null }, gen, where);
  const ck = Checkpoint.open(dir);
  return { dir, shape, format, ck };
}

function expectShape(m: ModelFolder, name: string, shape: readonly number[]): void {
  if (!m.ck.has(name)) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${m.dir}: tensor ${name} is missing`);
  const e = m.ck.entry(name);
  if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
    throw new ShoalError('SHOAL_ERR_SHAPE', `${m.dir}: tensor ${name} has shape [${e.shape.join(', ')}], config.json implies [${shape.join(', ')}]`);
  }
}

function readFloat(m: ModelFolder, name: string, shape: readonly number[]): Float32Array {
  expectShape(m, name, shape);
  return m.ck.readFloat32(name);
}

function int32(m: ModelFolder, name: string): Int32Array {
  const a = m.ck.read(name);
  if (!(a instanceof Int32Array)) throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${m.dir}: ${name} is ${m.ck.entry(name).dtype}, expected I32`);
  return a;
}

function dequantAwqLinear(m: ModelFolder, mod: string, N: number, K: number): Float32Array {
  const G = m.format.groupSize!;
  if (K % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `${m.dir}: group size ${G} does not divide in_features ${K} of ${mod}`);
  expectShape(m, `${mod}.qweight`, [K, N / 8]);
  expectShape(m, `${mod}.qzeros`, [K / G, N / 8]);
  expectShape(m, `${mod}.scales`, [K / G, N]);
  if (m.ck.entry(`${mod}.scales`).dtype !== 'F16') throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${m.dir}: ${mod}.scales must be F16 (AutoAWQ gemm)`);
  const w = dequantizeAwq(int32(m, `${mod}.qweight`), int32(m, `${mod}.qzeros`), m.ck.read(`${mod}.scales`) as Uint16Array, K, N, G);
  return Float32Array.from(w);
}

function dequantGptqLinear(m: ModelFolder, mod: string, N: number, K: number): Float32Array {
  const f = m.format;
  const bits = f.bits!;
  const sc = `${mod}.scales`;
  if (!m.ck.has(sc)) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${m.dir}: ${sc} is missing`);
  const ng = m.ck.entry(sc).shape[0]!;
  const G = f.groupSize === -1 ? K : f.groupSize!;
  if (ng < 1 || K % G !== 0 || (!f.descAct && ng !== K / G)) {
    throw new ShoalError('SHOAL_ERR_QUANT_METADATA', `${m.dir}: ${sc} has ${ng} groups; group_size ${f.groupSize} and in_features ${K} imply ${K / G}`);
  }
  expectShape(m, `${mod}.qweight`, [Math.ceil((K * bits) / 32), N]);
  expectShape(m, `${mod}.qzeros`, [ng, Math.ceil((N * bits) / 32)]);
  expectShape(m, sc, [ng, N]);
  if (m.ck.entry(sc).dtype !== 'F16') throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${m.dir}: ${sc} must be F16 (GPTQ)`);
  let gIdx: Int32Array | undefined;
  if (m.ck.has(`${mod}.g_idx`)) {
    expectShape(m, `${mod}.g_idx`, [K]);
    gIdx = int32(m, `${mod}.g_idx`);
    for (let k = 0; k < K; k++) {
      if (gIdx[k]! < 0 || gIdx[k]! >= ng) throw new ShoalError('SHOAL_ERR_QUANT_METADATA', `${m.dir}: ${mod}.g_idx[${k}] = ${gIdx[k]} is outside 0..${ng - 1}`);
    }
  }
  const q = unpackGptqWeight(int32(m, `${mod}.qweight`), K, N, bits);
  let zeros = unpackGptqZeros(int32(m, `${mod}.qzeros`), ng, N, bits);
  // checkpoint_format gptq (v1) stores z − 1
  if (f.checkpointFormat === 'gptq') zeros = zeros.map((v) => (v + 1) & ((1 << bits) - 1));
  const w = dequantizeGptq({ K, N, G: K / ng, q, zeros, scales: m.ck.read(sc) as Uint16Array }, gIdx);
  return Float32Array.from(w);
}

/** Layer l of a model folder, every linear as f32 [out, in] (dequantized when stored quantized). */
export function readLayer(m: ModelFolder, l: number): LayerTensors {
  const s = m.shape;
  const D = s.hiddenSize;
  const p = `model.layers.${l}`;
  const w = {} as Record<LinearKind, Float32Array>;
  const bias: Partial<Record<LinearKind, Float32Array>> = {};
  const quantized: LinearKind[] = [];
  for (const kind of LINEAR_KINDS) {
    const mod = `${p}.${kind}`;
    const d = linearDims(s, kind);
    if (m.ck.has(`${mod}.qweight`)) {
      if (m.format.kind === 'float') throw new ShoalError('SHOAL_ERR_CONFIG', `${m.dir}: ${mod} is quantized but config.json has no quantization_config`);
      if (isNotConverted(mod, m.format.modulesToNotConvert)) throw new ShoalError('SHOAL_ERR_CONFIG', `${m.dir}: ${mod} is quantized but listed in modules_to_not_convert`);
      w[kind] = m.format.kind === 'awq' ? dequantAwqLinear(m, mod, d.out, d.in) : dequantGptqLinear(m, mod, d.out, d.in);
      quantized.push(kind);
    } else {
      w[kind] = readFloat(m, `${mod}.weight`, [d.out, d.in]);
    }
    if (m.ck.has(`${mod}.bias`)) bias[kind] = readFloat(m, `${mod}.bias`, [d.out]);
    else if (d.bias) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${m.dir}: ${mod}.bias is missing (the architecture has biases there)`);
  }
  return {
    attnNorm: readFloat(m, `${p}.input_layernorm.weight`, [D]),
    ffnNorm: readFloat(m, `${p}.post_attention_layernorm.weight`, [D]),
    qNorm: s.qkNorm ? readFloat(m, `${p}.self_attn.q_norm.weight`, [s.headDim]) : null,
    kNorm: s.qkNorm ? readFloat(m, `${p}.self_attn.k_norm.weight`, [s.headDim]) : null,
    w, bias, quantized,
  };
}

/** The token embedding rows of `tokens` [T, D]. */
export function embedTokens(m: ModelFolder, tokens: Int32Array): Float32Array {
  const D = m.shape.hiddenSize;
  const emb = readFloat(m, 'model.embed_tokens.weight', [m.shape.vocabSize, D]);
  const x = new Float32Array(tokens.length * D);
  for (let t = 0; t < tokens.length; t++) x.set(emb.subarray(tokens[t]! * D, (tokens[t]! + 1) * D), t * D);
  return x;
}
