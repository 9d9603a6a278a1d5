// model-shapes.ts — the LLaMA-family architecture description shared by the
// model tools: named real shapes, config.json parsing/writing, and the list of
// tensors a checkpoint holds.
import { ShoalError } from '@shoal/common';

export type Arch = 'LlamaForCausalLM' | 'MistralForCausalLM' | 'Qwen2ForCausalLM';

export interface RopeScalingConfig {
  type: 'linear' | 'llama3';
  factor: number;
  /** llama3 only */
  lowFreqFactor?: number;
  highFreqFactor?: number;
  originalMaxPositionEmbeddings?: number;
}

export interface QuantConfig {
  method: 'awq';
  bits: number;
  groupSize: number;
  zeroPoint: boolean;
  version: string;
  /** Substring match on linear module names (AutoAWQ semantics). */
  modulesToNotConvert: string[];
}

/** A normalized LLaMA-family model description (what config.json says). */
export interface ModelShape {
  arch: Arch;
  modelType: 'llama' | 'mistral' | 'qwen2';
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScalingConfig | null;
  tieWordEmbeddings: boolean;
  /** q/k/v projections have biases (Qwen2; Llama with attention_bias). */
  qkvBias: boolean;
  /** o_proj has a bias (Llama attention_bias). */
  oBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
}

export type ShapeName = 'tinyllama-1.1b' | 'llama-2-7b' | 'llama-3-8b' | 'mistral-7b' | 'qwen2-1.5b' | 'tiny';

export const SHAPE_NAMES: readonly ShapeName[] = ['tinyllama-1.1b', 'llama-2-7b', 'llama-3-8b', 'mistral-7b', 'qwen2-1.5b', 'tiny'];

const LLAMA_BASE = {
  arch: 'LlamaForCausalLM' as const,
  modelType: 'llama' as const,
  rmsNormEps: 1e-5,
  ropeTheta: 10000,
  ropeScaling: null,
  tieWordEmbeddings: false,
  qkvBias: false,
  oBias: false,
  bosTokenId: 1,
  eosTokenIds: [2],
};

/** Real shapes (from the published config.json files). */
export const MODEL_SHAPES: Record<ShapeName, ModelShape> = {
  'tinyllama-1.1b': {
    ...LLAMA_BASE, vocabSize: 32000, hiddenSize: 2048, intermediateSize: 5632, layers: 22,
    heads: 32, kvHeads: 4, headDim: 64, maxPositionEmbeddings: 2048,
  },
  'llama-2-7b': {
    ...LLAMA_BASE, vocabSize: 32000, hiddenSize: 4096, intermediateSize: 11008, layers: 32,
    heads: 32, kvHeads: 32, headDim: 128, maxPositionEmbeddings: 4096,
  },
  // Llama-3.1-8B: 128k context through llama3 rope scaling.
  'llama-3-8b': {
    ...LLAMA_BASE, vocabSize: 128256, hiddenSize: 4096, intermediateSize: 14336, layers: 32,
    heads: 32, kvHeads: 8, headDim: 128, maxPositionEmbeddings: 131072, ropeTheta: 500000,
    ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
    bosTokenId: 128000, eosTokenIds: [128001, 128008, 128009],
  },
  // Mistral-7B-v0.2/v0.3 style: rope_theta 1e6, no sliding window.
  'mistral-7b': {
    ...LLAMA_BASE, arch: 'MistralForCausalLM', modelType: 'mistral', vocabSize: 32000, hiddenSize: 4096,
    intermediateSize: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128,
    maxPositionEmbeddings: 32768, ropeTheta: 1000000,
  },
  'qwen2-1.5b': {
    ...LLAMA_BASE, arch: 'Qwen2ForCausalLM', modelType: 'qwen2', vocabSize: 151936, hiddenSize: 1536,
    intermediateSize: 8960, layers: 28, heads: 12, kvHeads: 2, headDim: 128,
    maxPositionEmbeddings: 32768, rmsNormEps: 1e-6, ropeTheta: 1000000, tieWordEmbeddings: true,
    qkvBias: true, bosTokenId: 151643, eosTokenIds: [151643],
  },
  // Small test shape: dims are multiples of 128 (every group size applies) but
  // not powers of two; GQA 3:1; head_dim 64.
  tiny: {
    ...LLAMA_BASE, vocabSize: 1000, hiddenSize: 384, intermediateSize: 640, layers: 2,
    heads: 6, kvHeads: 2, headDim: 64, maxPositionEmbeddings: 1024,
  },
};

export function isShapeName(s: string): s is ShapeName {
  return (SHAPE_NAMES as readonly string[]).includes(s);
}

/** Checks the dims of a shape are consistent; throws SHOAL_ERR_CONFIG naming the problem. */
export function validateShape(s: ModelShape, where = 'model shape'): void {
  const pos = (k: keyof ModelShape) => {
    const v = s[k];
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v <= 0) {
      throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: ${String(k)} must be a positive integer, got ${String(v)}`);
    }
  };
  for (const k of ['vocabSize', 'hiddenSize', 'intermediateSize', 'layers', 'heads', 'kvHeads', 'headDim', 'maxPositionEmbeddings'] as const) pos(k);
  if (s.heads % s.kvHeads !== 0) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: num_attention_heads ${s.heads} is not a multiple of num_key_value_heads ${s.kvHeads}`);
  if (s.headDim % 2 !== 0) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: head_dim ${s.headDim} must be even for RoPE`);
  if (!(s.rmsNormEps > 0)) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: rms_norm_eps must be positive`);
  if (!(s.ropeTheta > 0)) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: rope_theta must be positive`);
}

// ---------------------------------------------------------------------------
// config.json
// ---------------------------------------------------------------------------

export type FloatDType = 'f32' | 'f16' | 'bf16';

/** Safetensors dtype of each storage dtype. */
export const ST_DTYPE: Record<FloatDType, 'F32' | 'F16' | 'BF16'> = { f32: 'F32', f16: 'F16', bf16: 'BF16' };
export const TORCH_DTYPE: Record<FloatDType, string> = { f32: 'float32', f16: 'float16', bf16: 'bfloat16' };

/** The config.json object for a shape (Hugging Face field names). */
export function buildConfigJson(s: ModelShape, opts: { dtype: FloatDType; quant?: QuantConfig | null }): Record<string, unknown> {
  const cfg: Record<string, unknown> = {
    architectures: [s.arch],
    model_type: s.modelType,
    vocab_size: s.vocabSize,
    hidden_size: s.hiddenSize,
    intermediate_size: s.intermediateSize,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.kvHeads,
    head_dim: s.headDim,
    hidden_act: 'silu',
    max_position_embeddings: s.maxPositionEmbeddings,
    rms_norm_eps: s.rmsNormEps,
    rope_theta: s.ropeTheta,
    rope_scaling: s.ropeScaling === null ? null
      : s.ropeScaling.type === 'linear'
        ? { type: 'linear', rope_type: 'linear', factor: s.ropeScaling.factor }
        : {
          rope_type: 'llama3',
          factor: s.ropeScaling.factor,
          low_freq_factor: s.ropeScaling.lowFreqFactor ?? 1,
          high_freq_factor: s.ropeScaling.highFreqFactor ?? 4,
          original_max_position_embeddings: s.ropeScaling.originalMaxPositionEmbeddings ?? 8192,
        },
    tie_word_embeddings: s.tieWordEmbeddings,
    bos_token_id: s.bosTokenId,
    eos_token_id: s.eosTokenIds.length === 1 ? s.eosTokenIds[0] : s.eosTokenIds,
    initializer_range: 0.02,
    use_cache: true,
    torch_dtype: TORCH_DTYPE[opts.dtype],
  };
  if (s.modelType === 'llama') {
    cfg.attention_bias = s.qkvBias;
    cfg.mlp_bias = false;
  }
  if (s.modelType === 'qwen2') {
    cfg.use_sliding_window = false;
    cfg.sliding_window = null;
    cfg.max_window_layers = s.layers;
  }
  if (s.modelType === 'mistral') cfg.sliding_window = null;
  if (opts.quant) cfg.quantization_config = quantConfigJson(opts.quant);
  return cfg;
}

export function quantConfigJson(q: QuantConfig): Record<string, unknown> {
  return {
    quant_method: q.method,
    bits: q.bits,
    group_size: q.groupSize,
    zero_point: q.zeroPoint,
    version: q.version,
    modules_to_not_convert: q.modulesToNotConvert.length > 0 ? q.modulesToNotConvert : null,
  };
}

export function buildGenerationConfigJson(s: ModelShape): Record<string, unknown> {
  const g: Record<string, unknown> = {};
  if (s.bosTokenId !== null) g.bos_token_id = s.bosTokenId;
  g.eos_token_id = s.eosTokenIds.length === 1 ? s.eosTokenIds[0] : s.eosTokenIds;
  return g;
}

function num(obj: Record<string, unknown>, key: string, where: string, dflt?: number): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (dflt !== undefined) return dflt;
    throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: missing ${key}`);
  }
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: ${key} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function ids(v: unknown): number[] {
  if (typeof v === 'number') return [v];
  if (Array.isArray(v)) return v.filter((x): x is number => typeof x === 'number');
  return [];
}

/** Parses config.json (and optionally generation_config.json) into a ModelShape and quant config. */
export function parseModelConfig(config: unknown, generation: unknown = null, where = 'config.json'): { shape: ModelShape; quant: QuantConfig | null; torchDtype: string | null } {
  if (typeof config !== 'object' || config === null) throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: not a JSON object`);
  const c = config as Record<string, unknown>;
  const archs = c.architectures;
  const arch = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : null;
  if (arch !== 'LlamaForCausalLM' && arch !== 'MistralForCausalLM' && arch !== 'Qwen2ForCausalLM') {
    throw new ShoalError('SHOAL_ERR_UNSUPPORTED_ARCH', `${where}: architectures ${JSON.stringify(archs)} is not supported; use a LlamaForCausalLM, MistralForCausalLM or Qwen2ForCausalLM model`);
  }
  const hidden = num(c, 'hidden_size', where);
  const heads = num(c, 'num_attention_heads', where);
  let ropeScaling: RopeScalingConfig | null = null;
  const rs = c.rope_scaling;
  if (rs !== undefined && rs !== null) {
    if (typeof rs !== 'object') throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: rope_scaling must be an object or null`);
    const r = rs as Record<string, unknown>;
    const type = (r.rope_type ?? r.type) as unknown;
    if (type === 'linear') ropeScaling = { type: 'linear', factor: num(r, 'factor', `${where} rope_scaling`) };
    else if (type === 'llama3') {
      ropeScaling = {
        type: 'llama3',
        factor: num(r, 'factor', `${where} rope_scaling`),
        lowFreqFactor: num(r, 'low_freq_factor', `${where} rope_scaling`, 1),
        highFreqFactor: num(r, 'high_freq_factor', `${where} rope_scaling`, 4),
        originalMaxPositionEmbeddings: num(r, 'original_max_position_embeddings', `${where} rope_scaling`, 8192),
      };
    } else if (type === 'default' || type === undefined) ropeScaling = null;
    else throw new ShoalError('SHOAL_ERR_CONFIG', `${where}: rope_scaling type ${JSON.stringify(type)} is not supported (use linear or llama3)`);
  }
  const modelType = arch === 'Qwen2ForCausalLM' ? 'qwen2' : arch === 'MistralForCausalLM' ? 'mistral' : 'llama';
  const attnBias = c.attention_bias === true;
  const g = (generation ?? {}) as Record<string, unknown>;
  const eos = ids(g.eos_token_id ?? c.eos_token_id);
  const bosRaw = g.bos_token_id ?? c.bos_token_id;
  const shape: ModelShape = {
    arch,
    modelType,
    vocabSize: num(c, 'vocab_size', where),
    hiddenSize: hidden,
    intermediateSize: num(c, 'intermediate_size', where),
    layers: num(c, 'num_hidden_layers', where),
    heads,
    kvHeads: num(c, 'num_key_value_heads', where, heads),
    headDim: num(c, 'head_dim', where, Math.floor(hidden / heads)),
    maxPositionEmbeddings: num(c, 'max_position_embeddings', where, 2048),
    rmsNormEps: num(c, 'rms_norm_eps', where, 1e-6),
    ropeTheta: num(c, 'rope_theta', where, 10000),
    ropeScaling,
    tieWordEmbeddings: c.tie_word_embeddings === true,
    qkvBias: modelType === 'qwen2' || attnBias,
    oBias: modelType === 'llama' && attnBias,
    bosTokenId: typeof bosRaw === 'number' ? bosRaw : null,
    eosTokenIds: eos,
  };
  validateShape(shape, where);
  let quant: QuantConfig | null = null;
  const qc = c.quantization_config;
  if (qc !== undefined && qc !== null) {
    const q = qc as Record<string, unknown>;
    const method = q.quant_method;
    if (method !== 'awq') {
      throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: quant_method ${JSON.stringify(method)} is not supported; only AutoAWQ (awq) checkpoints are`);
    }
    const version = typeof q.version === 'string' ? q.version.toLowerCase() : 'gemm';
    if (version !== 'gemm') throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: AWQ version ${version} is not supported; use version gemm`);
    const bits = num(q, 'bits', where, num(q, 'w_bit', where, 4));
    if (bits !== 4) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: ${bits}-bit AWQ is not supported; use 4-bit`);
    const mtnc = q.modules_to_not_convert;
    quant = {
      method: 'awq',
      bits,
      groupSize: num(q, 'group_size', where, num(q, 'q_group_size', where, 128)),
      zeroPoint: q.zero_point !== false,
      version,
      modulesToNotConvert: Array.isArray(mtnc) ? mtnc.filter((x): x is string => typeof x === 'string') : [],
    };
    if (!quant.zeroPoint) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${where}: AWQ without zero points is not supported`);
  }
  return { shape, quant, torchDtype: typeof c.torch_dtype === 'string' ? c.torch_dtype : null };
}

// ---------------------------------------------------------------------------
// tensors
// ---------------------------------------------------------------------------

export type LinearKind = 'self_attn.q_proj' | 'self_attn.k_proj' | 'self_attn.v_proj' | 'self_attn.o_proj' | 'mlp.gate_proj' | 'mlp.up_proj' | 'mlp.down_proj';

export const LINEAR_KINDS: readonly LinearKind[] = [
  'self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj',
];

/** [out_features, in_features] and bias presence of a decoder linear. */
export function linearDims(s: ModelShape, kind: LinearKind): { out: number; in: number; bias: boolean } {
  const qd = s.heads * s.headDim;
  const kvd = s.kvHeads * s.headDim;
  switch (kind) {
    case 'self_attn.q_proj': return { out: qd, in: s.hiddenSize, bias: s.qkvBias };
    case 'self_attn.k_proj': return { out: kvd, in: s.hiddenSize, bias: s.qkvBias };
    case 'self_attn.v_proj': return { out: kvd, in: s.hiddenSize, bias: s.qkvBias };
    case 'self_attn.o_proj': return { out: s.hiddenSize, in: qd, bias: s.oBias };
    case 'mlp.gate_proj': return { out: s.intermediateSize, in: s.hiddenSize, bias: false };
    case 'mlp.up_proj': return { out: s.intermediateSize, in: s.hiddenSize, bias: false };
    case 'mlp.down_proj': return { out: s.hiddenSize, in: s.intermediateSize, bias: false };
  }
}

/** True when a linear can be stored in the AutoAWQ gemm layout with group G. */
export function awqCompatible(out: number, inFeatures: number, groupSize: number): boolean {
  return inFeatures % groupSize === 0 && out % 8 === 0;
}

/** Linear kinds that cannot be quantized at group size G (listed in modules_to_not_convert). */
export function unquantizableKinds(s: ModelShape, groupSize: number): LinearKind[] {
  return LINEAR_KINDS.filter((k) => {
    const d = linearDims(s, k);
    return !awqCompatible(d.out, d.in, groupSize);
  });
}

/** AutoAWQ semantics: a module is skipped when any listed string is a substring of its name. */
export function isNotConverted(moduleName: string, modulesToNotConvert: readonly string[]): boolean {
  return modulesToNotConvert.some((m) => moduleName.includes(m));
}

export type TensorRole = 'embed' | 'norm' | 'linear' | 'bias' | 'lm_head';

export interface PlannedTensor {
  /** Logical HF name of the weight (linear weights: the `.weight` name). */
  name: string;
  role: TensorRole;
  shape: number[];
  /** For linears: the module name (no `.weight`) and kind. */
  module?: string;
  kind?: LinearKind;
}

/** Every logical tensor of an (unquantized) checkpoint, in HF order. */
export function planTensors(s: ModelShape): PlannedTensor[] {
  const t: PlannedTensor[] = [];
  t.push({ name: 'model.embed_tokens.weight', role: 'embed', shape: [s.vocabSize, s.hiddenSize] });
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    t.push({ name: `${p}.input_layernorm.weight`, role: 'norm', shape: [s.hiddenSize] });
    for (const kind of LINEAR_KINDS) {
      if (kind === 'mlp.gate_proj') t.push({ name: `${p}.post_attention_layernorm.weight`, role: 'norm', shape: [s.hiddenSize] });
      const d = linearDims(s, kind);
      const module = `${p}.${kind}`;
      t.push({ name: `${module}.weight`, role: 'linear', shape: [d.out, d.in], module, kind });
      if (d.bias) t.push({ name: `${module}.bias`, role: 'bias', shape: [d.out], module, kind });
    }
  }
  t.push({ name: 'model.norm.weight', role: 'norm', shape: [s.hiddenSize] });
  if (!s.tieWordEmbeddings) t.push({ name: 'lm_head.weight', role: 'lm_head', shape: [s.vocabSize, s.hiddenSize] });
  return t;
}

/** Parameter count (INT4 weights counted unpacked). */
export function parameterCount(s: ModelShape): number {
  return planTensors(s).reduce((a, t) => a + t.shape.reduce((x, y) => x * y, 1), 0);
}
