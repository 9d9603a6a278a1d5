// awq/quantize-awq.ts — activation-aware weight quantization (AWQ, Lin et al.
// 2023, as in llm-awq / AutoAWQ) of an unquantized LLaMA-family checkpoint,
// plus group-wise RTN for the widths and layouts quant/rtn.ts does not
// write (2/3-bit fake quantization, a zero-padded FFN).
//
// Per decoder layer, on calibration activations X [samples·seqlen, D] that are
// the outputs of the already quantized layers before it:
//   1. FP forward of the layer, streamed over chunks of whole blocks (stats.ts):
//      per-channel mean |x| of every linear's input and the input Gram matrices
//      of o_proj / down_proj over all tokens; inputs and reference outputs of the
//      attention block and the MLP on the search blocks; the clip rows.
//   2. Scale search for each group of linears sharing an input
//        input_layernorm → q,k,v   (loss on the attention block output)
//        v → o                     (only when v and o have the same shape: no GQA)
//        post_attention_layernorm → gate,up  (loss on the MLP output)
//        up → down
//      s = mean|x|^α (duo: / (mean|w/max_group|w||^(1−α) + 1e-4)), clamped ≥ 1e-4,
//      normalised by √(max s · min s); α ∈ {0, 0.05, …, 0.95}; the weights are
//      replaced by Q(W·diag(s))·diag(s)⁻¹ and the α with the lowest output MSE wins.
//      v→o and up→down: the MSE of the one linear's output, exact from its input
//      Gram C = XᵀX/T (Σ_n d_n C d_nᵀ / N); q,k,v and gate,up: the block run on a
//      seeded subsample of whole blocks (searchTokens) — AutoAWQ runs all tokens
//      on a GPU, this is the CPU trade-off (docs/quantization.md).
//      All four searches use the FP layer; then the scales are folded into the
//      preceding norm gain or linear rows (the FP function is unchanged).
//   3. Clip search for every quantized linear except q and k: per output
//      channel and group, max|w| shrunk by (1 − i/20), i = 0..9, minimising the
//      group's output error over ~512 sub-sampled calibration tokens (llm-awq
//      auto_clip). The error E = mean_t (x_t·(Q(clamp(w)) − w))² is evaluated
//      exactly as dᵀ C d with the group's input second-moment matrix C, so the
//      candidate errors are one backend GEMM per group. For v_proj the error is
//      measured where it acts, at o_proj's input after each query head's
//      attention averaging (x_t replaced by ā^q_t = Σ_s p^q_ts x_s, per kv head);
//      clipVAttention: false keeps llm-awq's per-token x_t.
//   4. Quantization (AutoAWQ pseudo_quantize: asymmetric, zero point, f16
//      scales), then the quantized layer is run on X to give the next layer's X.
//
// Output: 4 bits → AutoAWQ gemm tensors + quantization_config (formats/awq.ts and
// the CheckpointWriter); 2/3 bits (or fakeQuant) → the quantize-dequantize
// weights as an F32 checkpoint, so quality can be measured before the runtime
// runs those widths. Memory: the weights of one layer, the calibration
// activations x [T, D], the Gram matrices, the search blocks and their FP layer
// output, and one chunk's intermediates (no [T, F] buffer); the embedding table
// only for the first lookup.
import path from 'node:path';
import { dequantizeLinear, packAwq, quantizeLinear } from '../../formats/awq.js';
import { readModelFolder, writeModelMetadata } from '../../io/hf-folder.js';
import { awqCompatible, ST_DTYPE,
  LINEAR_KINDS, linearDims, planTensors, quantConfigJson, TORCH_DTYPE,
  unquantizableKinds, type FloatDType, type LinearKind, type ModelShape, type QuantConfig,
} from '../../arch/model-shapes.js';
import { ropeInvFreq } from '../../eval/reference-forward.js';
import { abortOutputDir, beginOutputDir, CheckpointWriter, commitOutputDir, DEFAULT_MAX_SHARD_BYTES, type TensorSpec } from '../../io/safetensors-write.js';
import { Checkpoint } from '../../io/safetensors.js';
import { encodeFloats } from '../../io/dtypes.js';
import { checkGroupCoverage } from '../group-check.js';
import { loadCalibration } from './calib.js';
import { awqOrRtn, cloneLayer, type FallbackReport } from './fallback.js';
import { SUPPORTED_BITS } from './fake-quant.js';
import { backendOps, divColumnsInPlace, divRowsInPlace, mse, type Precision } from './ops.js';
import { dims, attentionBlock, mlpBlock, forwardLayer, type AlphaSearch, type Ctx, type LayerWeights } from './layer.js';
import { searchScale, clipSampleRows, groupGrams, searchClip, attentionAveragedInputs, qdqScaled, forwardLoss, gramLoss, type ScaleGroupReport } from './search.js';
import { forEachChunk } from './layer.js';
import { layerStats, searchBlocks } from './stats.js';
import { ShoalError } from '@shoal/common';
import { PhaseTimer, type PhaseTimes } from '../phases.js';

export { attentionAveragedInputs, type LayerWeights, type ScaleGroupReport };

export interface AwqQuantizeOptions {
  /** Unquantized Hugging Face model folder (F32/F16/BF16). */
  model: string;
  out: string;
  method?: 'awq' | 'rtn';
  bits?: number;
  groupSize?: number;
  /** Calibration text files (AWQ). */
  calib?: string[];
  /** Calibration documents given directly (instead of or besides files). */
  calibDocs?: string[];
  /** Splits calibration files into documents (BOS before each); default: one document per file. */
  calibSep?: RegExp;
  samples?: number;
  seqlen?: number;
  /** AutoAWQ duo scaling: s = x̄^α / w̄^(1−α). */
  duoScaling?: boolean;
  /** Clip search (default true). */
  clip?: boolean;
  /**
   * Calibration tokens the α candidates of the two scale groups whose loss goes
   * through attention or SiLU (q,k,v and gate,up) are evaluated on: ⌈N / seqlen⌉
   * whole blocks drawn with a fixed seed (default 4096: 8 blocks of 512). The
   * activation statistics, the v→o / up→down losses (exact, from the input Gram
   * over all tokens) and the forward to the next layer use every token.
   */
  searchTokens?: number;
  /**
   * How the α grid of the scale search is walked (default coarse-fine: every
   * 4th α, then the neighbours of the best; 'grid': all 20, as llm-awq). See
   * layer.ts AlphaSearch.
   */
  alphaSearch?: AlphaSearch;
  /**
   * The next layer's calibration input: the FP layer's output (default, as
   * AutoAWQ and llm-awq) or the quantized layer's (one more forward per layer).
   */
  layerInput?: LayerInput;
  /**
   * Products of the calibration forwards, the Gram panels, the candidate losses
   * and the held-out AWQ/RTN check: bf16 inputs with f32 sums (default 'auto':
   * bf16 when the CPU multiplies bf16 natively and the hidden size is ≥
   * AUTO_BF16_MIN_HIDDEN — AutoAWQ runs the same passes in f16 on a GPU) or f32. Sums across blocks, statistics and the clip
   * search stay f32/f64.
   */
  precision?: Precision | 'auto';
  /** Calibration tokens sub-sampled for the clip search (llm-awq n_sample_token). */
  clipTokens?: number;
  /**
   * v_proj's clip error measured after attention averaging, where o_proj sees it
   * (default true; false: per token, as llm-awq). See docs/quantization.md.
   */
  clipVAttention?: boolean;
  /**
   * Linears the clip search runs on (default v_proj, o_proj, gate_proj,
   * up_proj, down_proj, as llm-awq; q_proj and k_proj are never clipped).
   */
  clipLinears?: string[];
  /** Backend of the products (default auto: CUDA when usable, else CPU). */
  backend?: 'auto' | 'cpu' | 'cuda';
  /** Zero-pad the FFN intermediate size to a multiple of the group so down_proj can be quantized. */
  padFfn?: boolean;
  /** Write the quantize-dequantize weights as an F32 checkpoint even at 4 bits. */
  fakeQuant?: boolean;
  /** Tests: fold the AWQ scales only (no clipping, no quantization), written as F32. */
  foldOnly?: boolean;
  /** Also run each layer with RTN weights and report its output error (AWQ). */
  compareRtn?: boolean;
  /**
   * Calibration blocks held out of the searches; each layer keeps AWQ or RTN,
   * whichever has the lower output error on them (default max(1, samples / 8);
   * 0 turns the fallback off). See fallback.ts.
   */
  holdout?: number;
  /** Storage dtype of tensors left unquantized in a 4-bit packed checkpoint (default f16, as AutoAWQ). */
  dtype?: FloatDType;
  force?: boolean;
  maxShardBytes?: number;
  onLayer?: (report: LayerReport, layers: number) => void;
  onStage?: (layer: number, stage: string) => void;
}

export interface LayerReport {
  layer: number;
  seconds: number;
  scales: ScaleGroupReport[];
  /** Mean clip shrink (fraction of max|w| removed) per clipped linear kind. */
  clip: Record<string, number>;
  /**
   * MSE of the quantized layer's output vs the FP layer on the same input, over the
   * search blocks (calibration.searchTokens tokens; null: RTN, no calibration).
   */
  outputMse: number | null;
  /** Same for the RTN-quantized layer, on the same tokens (compareRtn). */
  rtnOutputMse?: number;
  /** AWQ vs RTN on the held-out calibration tokens, and which was written (AWQ with holdout). */
  fallback?: FallbackReport;
  /** wall and CPU seconds per stage of this layer (the stages onStage announces) */
  phases: PhaseTimes;
}

export interface AwqQuantizeResult {
  dir: string;
  method: 'awq' | 'rtn';
  bits: number;
  groupSize: number;
  /** true: quantize-dequantize weights stored as F32 (no packing) */
  fakeQuant: boolean;
  duoScaling: boolean;
  /** how the α grid was searched (null: RTN) */
  alphaSearch: AlphaSearch | null;
  /** the next layer's calibration input (null: RTN) */
  layerInput: LayerInput | null;
  /** products of the forwards and candidate losses, and whether bf16 ran on native instructions (null: RTN) */
  precision: { products: Precision; bf16Native: boolean } | null;
  clip: boolean;
  /** where v_proj's clip error was measured (null: no clip search) */
  vClipError: 'attention' | 'token' | null;
  intermediateSize: number;
  paddedIntermediateSize: number | null;
  quantizedLinears: number;
  keptLinears: number;
  modulesToNotConvert: string[];
  /** Linears the group does not fit, for the user (null: all quantized). */
  note: string | null;
  calibration: {
    samples: number; seqlen: number; tokens: number; documents: number; heldOutTokens: number; heldOutFromSamples: boolean;
    /** tokens (whole blocks) the q,k,v and gate,up scale candidates were evaluated on */
    searchTokens: number;
  } | null;
  /** layers written with RTN because AWQ's held-out error was higher */
  rtnFallbackLayers: number[];
  layers: LayerReport[];
  backend: { backend: string; isa: string; threads: number } | null;
  files: string[];
  bytesOut: number;
  seconds: number;
  /** peak resident set size of this process so far */
  peakRssBytes: number;
}

export type LayerInput = 'fp' | 'quantized';

/** Default --layer-input (see AwqQuantizeOptions.layerInput). */
export const DEFAULT_LAYER_INPUT: LayerInput = 'fp';

/** Hidden size from which --precision auto multiplies in bf16 (see autoBf16). */
export const AUTO_BF16_MIN_HIDDEN = 1024;

/**
 * --precision auto: bf16 only where it pays — a CPU with native bf16 products
 * and layers wide enough for the products to dominate (TinyLlama's 2048 and up).
 * Small models stay f32: they take seconds either way, and their α loss curves
 * are flat enough that bf16 rounding moves the pick (stories260K, hidden 64: the
 * demo's 8 × 128-token calibration then gave repetitive stories).
 */
export function autoBf16(shape: Pick<ModelShape, 'hiddenSize'>, bf16Native: boolean): boolean {
  return bf16Native && shape.hiddenSize >= AUTO_BF16_MIN_HIDDEN;
}

/** Default --alpha-search (see AwqQuantizeOptions.alphaSearch). */
export const DEFAULT_ALPHA_SEARCH: AlphaSearch = 'coarse-fine';

/** Default --search-tokens: 8 blocks of 512 (see AwqQuantizeOptions.searchTokens). */
export const DEFAULT_SEARCH_TOKENS = 4096;

/** Linears the clip search may touch (llm-awq skips q and k: their error acts through the attention scores). */
const CLIPPABLE: readonly string[] = ['v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Checks the options; returns the normalized ones. */
export function checkAwqOptions(o: AwqQuantizeOptions): { method: 'awq' | 'rtn'; bits: number; G: number; samples: number; seqlen: number } {
  const method = o.method ?? 'awq';
  if (method !== 'awq' && method !== 'rtn') throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --method ${String(method)}; use rtn or awq`);
  const bits = o.bits ?? 4;
  if (!SUPPORTED_BITS.includes(bits)) {
    throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported; use 4 (AutoAWQ gemm), or 3 / 2 (written as fake-quantized F32)`);
  }
  const G = o.groupSize ?? 128;
  if (!Number.isSafeInteger(G) || G < 8 || G % 8 !== 0) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--group ${G} must be a positive multiple of 8 (32, 64 or 128 are usual)`);
  }
  const samples = o.samples ?? 128;
  const seqlen = o.seqlen ?? 512;
  if (!Number.isSafeInteger(samples) || samples < 1) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--samples ${samples} must be a positive integer`);
  if (!Number.isSafeInteger(seqlen) || seqlen < 2) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seqlen ${seqlen} must be an integer >= 2`);
  if (o.dtype !== undefined && !(o.dtype in ST_DTYPE)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --dtype ${String(o.dtype)}; use f16, f32 or bf16`);
  if (o.searchTokens !== undefined && (!Number.isSafeInteger(o.searchTokens) || o.searchTokens < 1)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--search-tokens ${String(o.searchTokens)} must be a positive integer (tokens of whole calibration blocks; default ${DEFAULT_SEARCH_TOKENS})`);
  }
  if (o.alphaSearch !== undefined && o.alphaSearch !== 'grid' && o.alphaSearch !== 'coarse-fine') {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --alpha-search ${String(o.alphaSearch)}; use coarse-fine or grid`);
  }
  if (o.layerInput !== undefined && o.layerInput !== 'fp' && o.layerInput !== 'quantized') {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --layer-input ${String(o.layerInput)}; use fp or quantized`);
  }
  if (o.precision !== undefined && !['auto', 'f32', 'bf16'].includes(o.precision)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --precision ${String(o.precision)}; use auto, bf16 or f32`);
  }
  if (o.clipTokens !== undefined && (!Number.isSafeInteger(o.clipTokens) || o.clipTokens < 1)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `clipTokens ${o.clipTokens} must be a positive integer`);
  }
  for (const c of o.clipLinears ?? []) {
    if (!CLIPPABLE.includes(c)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--clip-linears: ${c} is not one of ${CLIPPABLE.join(', ')}`);
  }
  if (o.backend !== undefined && !['auto', 'cpu', 'cuda'].includes(o.backend)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --backend ${String(o.backend)}; use auto, cpu or cuda`);
  }
  if (o.foldOnly && method !== 'awq') throw new ShoalError('SHOAL_ERR_INVALID_ARG', 'foldOnly needs method awq');
  return { method, bits, G, samples, seqlen };
}

// ---------------------------------------------------------------------------
// one layer
// ---------------------------------------------------------------------------

/** The given blocks (of `size` elements each) of x, in order, into a new array. */
function gatherBlocks(x: Float32Array, blocks: readonly number[], size: number): Float32Array {
  const out = new Float32Array(blocks.length * size);
  blocks.forEach((b, i) => out.set(x.subarray(b * size, (b + 1) * size), i * size));
  return out;
}

function divInPlace(v: Float32Array, s: Float64Array): void {
  for (let i = 0; i < v.length; i++) v[i] = v[i]! / s[i]!;
}

function scaleColsInPlace(w: Float32Array, N: number, K: number, s: Float64Array): void {
  for (let n = 0; n < N; n++) {
    const o = n * K;
    for (let k = 0; k < K; k++) w[o + k] = w[o + k]! * s[k]!;
  }
}

/** Divides the activations x [T, K] by s per column, in place (AutoAWQ scales input_feat too). */
function divActs(x: Float32Array, T: number, K: number, s: Float64Array): void {
  divColumnsInPlace(x, T, K, s);
}

/** Quantize-dequantize weights of the quantized linears (RTN on the given weights). */
async function rtnWeights(ctx: Ctx, lw: LayerWeights): Promise<LayerWeights> {
  const w = { ...lw.w };
  for (const kind of LINEAR_KINDS) {
    if (!ctx.quantized.has(kind)) continue;
    const d = dims(ctx, kind);
    w[kind] = await qdqScaled(ctx, lw.w[kind], d.out, d.in, null);
  }
  return { ...lw, w };
}

async function awqLayer(ctx: Ctx, l: number, lw: LayerWeights, x: Float32Array, opts: AwqQuantizeOptions, propagateFp: boolean,
  stage: (s: string) => void): Promise<{ report: Omit<LayerReport, 'seconds' | 'outputMse' | 'phases'>; searchIn: Float32Array; searchOut: Float32Array }> {
  const s = ctx.shape;
  const D = s.hiddenSize;
  const qd = s.heads * s.headDim;
  const kvd = s.kvHeads * s.headDim;
  const q = (k: LinearKind) => ctx.quantized.has(k);
  const reports: ScaleGroupReport[] = [];
  const W = lw.w;
  const clipOn = !opts.foldOnly && opts.clip !== false;
  const clipKind = (kind: LinearKind) => clipOn && q(kind) && (!opts.clipLinears || opts.clipLinears.includes(kind.split('.')[1]!));
  const voGroup = kvd === D && qd === D && q('self_attn.o_proj');

  // FP forward over all tokens, chunk by chunk, reduced to the searches' inputs
  stage('fp forward');
  const st = await layerStats(ctx, lw, x, {
    searchBlocks: ctx.searchBlocks, clipRows: clipOn ? clipSampleRows(ctx) : [],
    gramA: voGroup, gramM: q('mlp.down_proj'), vAvg: clipKind('self_attn.v_proj') && ctx.clipVAttention,
    propagate: propagateFp,
  });
  const sx = st.search;
  const ctxS: Ctx = { ...ctx, T: sx.T };

  // 1. input_layernorm → q, k, v (loss on the attention block output, search blocks)
  let s1: Float64Array | null = null;
  if (q('self_attn.q_proj') || q('self_attn.k_proj') || q('self_attn.v_proj')) {
    stage('scales qkv');
    const r = await searchScale(ctx, 'input_layernorm→q,k,v', st.meanH, D, [
      { kind: 'self_attn.q_proj', w: W['self_attn.q_proj'], N: qd },
      { kind: 'self_attn.k_proj', w: W['self_attn.k_proj'], N: kvd },
      { kind: 'self_attn.v_proj', w: W['self_attn.v_proj'], N: kvd },
    ], forwardLoss(ctxS, sx.h, sx.attnOut, async (c, xc, [wq, wk, wv]) => (await attentionBlock(c, xc, wq!, wk!, wv!, lw)).out));
    s1 = r.scales;
    reports.push(r.report);
  }
  // 2. v → o (only without GQA: same weight shapes); o_proj's output error, exactly, from its input Gram over all tokens
  let s2: Float64Array | null = null;
  if (voGroup) {
    stage('scales v→o');
    const r = await searchScale(ctx, 'v_proj→o_proj', st.meanA, qd, [{ kind: 'self_attn.o_proj', w: W['self_attn.o_proj'], N: D }],
      gramLoss(st.gramA!, W['self_attn.o_proj'], D, qd, ctx.precision));
    s2 = r.scales;
    reports.push(r.report);
  }
  // 3. post_attention_layernorm → gate, up (loss on the MLP output, search blocks)
  let s3: Float64Array | null = null;
  if (q('mlp.gate_proj') || q('mlp.up_proj')) {
    stage('scales gate,up');
    const r = await searchScale(ctx, 'post_attention_layernorm→gate,up', st.meanH2, D, [
      { kind: 'mlp.gate_proj', w: W['mlp.gate_proj'], N: ctx.F },
      { kind: 'mlp.up_proj', w: W['mlp.up_proj'], N: ctx.F },
    ], forwardLoss(ctxS, sx.h2, sx.mlpOut, async (c, xc, [wg, wu]) => (await mlpBlock(c, xc, wg!, wu!, W['mlp.down_proj'])).out));
    s3 = r.scales;
    reports.push(r.report);
  }
  // 4. up → down (down_proj's output error from its input Gram over all tokens)
  let s4: Float64Array | null = null;
  if (q('mlp.down_proj')) {
    stage('scales up→down');
    const r = await searchScale(ctx, 'up_proj→down_proj', st.meanM, ctx.F, [{ kind: 'mlp.down_proj', w: W['mlp.down_proj'], N: D }],
      gramLoss(st.gramM!, W['mlp.down_proj'], D, ctx.F, ctx.precision));
    s4 = r.scales;
    reports.push(r.report);
  }
  const cr = st.clip;
  const R = cr.h.length / D; // the clip rows layerStats gathered (none with the clip search off)

  // fold the scales (AutoAWQ apply_scale): preceding op ÷ s, following columns × s,
  // and the recorded clip inputs ÷ s (attention averages are linear in the inputs)
  if (s1) {
    divInPlace(lw.attnNorm, s1);
    for (const k of ['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'] as const) scaleColsInPlace(W[k], linearN(ctx, k), D, s1);
    divActs(cr.h, R, D, s1);
    for (const v of cr.vAvg ?? []) divActs(v, v.length / D, D, s1);
  }
  if (s2) {
    divRowsInPlace(W['self_attn.v_proj'], kvd, D, s2);
    const vb = lw.bias['self_attn.v_proj'];
    if (vb) divInPlace(vb, s2);
    scaleColsInPlace(W['self_attn.o_proj'], D, qd, s2);
    divActs(cr.a, R, qd, s2);
  }
  if (s3) {
    divInPlace(lw.ffnNorm, s3);
    scaleColsInPlace(W['mlp.gate_proj'], ctx.F, D, s3);
    scaleColsInPlace(W['mlp.up_proj'], ctx.F, D, s3);
    divActs(cr.h2, R, D, s3);
  }
  if (s4) {
    divRowsInPlace(W['mlp.up_proj'], ctx.F, D, s4);
    scaleColsInPlace(W['mlp.down_proj'], D, ctx.F, s4);
    divActs(cr.m, R, ctx.F, s4);
  }

  const clip: Record<string, number> = {};
  if (clipOn) {
    const inputs: Partial<Record<LinearKind, Float32Array>> = {
      'self_attn.v_proj': cr.h, 'self_attn.o_proj': cr.a, 'mlp.gate_proj': cr.h2, 'mlp.up_proj': cr.h2, 'mlp.down_proj': cr.m,
    };
    const all = Array.from({ length: R }, (_, i) => i);
    for (const kind of ['self_attn.v_proj', 'self_attn.o_proj', 'mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj'] as const) {
      if (!clipKind(kind)) continue;
      stage(`clip ${kind.split('.')[1]}`);
      const d = dims(ctx, kind);
      if (kind === 'self_attn.v_proj' && cr.vAvg) {
        // each kv head's rows against the inputs averaged by the query heads that read it
        const hd = s.headDim;
        let shrink = 0;
        for (let kh = 0; kh < s.kvHeads; kh++) {
          const xs = cr.vAvg[kh]!;
          const grams = await groupGrams(xs, D, ctx.G, Array.from({ length: xs.length / D }, (_, i) => i));
          shrink += await searchClip(ctx, W[kind].subarray(kh * hd * D, (kh + 1) * hd * D), hd, D, grams);
        }
        clip[kind.split('.')[1]!] = shrink / s.kvHeads;
        continue;
      }
      clip[kind.split('.')[1]!] = await searchClip(ctx, W[kind], d.out, d.in, await groupGrams(inputs[kind]!, d.in, ctx.G, all));
    }
  }
  return { report: { layer: l, scales: reports, clip }, searchIn: sx.x, searchOut: st.searchOut };
}

function linearN(ctx: Ctx, kind: LinearKind): number {
  return dims(ctx, kind).out;
}

// ---------------------------------------------------------------------------
// the model
// ---------------------------------------------------------------------------

function loadLayer(ck: Checkpoint, l: number, shape0: ModelShape, F: number): LayerWeights {
  const p = `model.layers.${l}`;
  const D = shape0.hiddenSize;
  const F0 = shape0.intermediateSize;
  const w = {} as Record<LinearKind, Float32Array>;
  const bias: Partial<Record<LinearKind, Float32Array>> = {};
  for (const kind of LINEAR_KINDS) {
    let t = ck.readFloat32(`${p}.${kind}.weight`);
    if (F !== F0) {
      if (kind === 'mlp.gate_proj' || kind === 'mlp.up_proj') {
        const padded = new Float32Array(F * D); // rows F0..F stay zero
        padded.set(t);
        t = padded;
      } else if (kind === 'mlp.down_proj') {
        const padded = new Float32Array(D * F); // columns F0..F stay zero
        for (let n = 0; n < D; n++) padded.set(t.subarray(n * F0, (n + 1) * F0), n * F);
        t = padded;
      }
    }
    w[kind] = t;
    if (ck.has(`${p}.${kind}.bias`)) bias[kind] = ck.readFloat32(`${p}.${kind}.bias`);
  }
  return {
    attnNorm: ck.readFloat32(`${p}.input_layernorm.weight`),
    ffnNorm: ck.readFloat32(`${p}.post_attention_layernorm.weight`),
    w,
    bias,
  };
}

/** Quantizes a model folder with AWQ (or group RTN); see AwqQuantizeOptions. */
export async function quantizeAwqModel(opts: AwqQuantizeOptions): Promise<AwqQuantizeResult> {
  const t0 = performance.now();
  const { method, bits, G, samples, seqlen } = checkAwqOptions(opts);
  const { config, gen, shape: shape0, quant: srcQuant } = readModelFolder(opts.model);
  if (srcQuant) {
    throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${opts.model} is already quantized (${srcQuant.method}); point --model at an unquantized F32/F16/BF16 checkpoint`);
  }
  const F0 = shape0.intermediateSize;
  const F = opts.padFfn ? Math.ceil(F0 / G) * G : F0;
  const shape: ModelShape = { ...shape0, intermediateSize: F };
  const fake = bits !== 4 || (opts.fakeQuant ?? false) || (opts.foldOnly ?? false);
  const dtype: FloatDType = fake ? 'f32' : (opts.dtype ?? 'f16');
  const fdt = ST_DTYPE[dtype];
  // Linears that can be quantized: the packed layout needs in % G == 0 and
  // out % 8 == 0 (as RTN); fake quantization only needs whole groups. The
  // searches treat these as quantized; fold-only writes them unquantized.
  const cannot = fake
    ? LINEAR_KINDS.filter((k) => linearDims(shape, k).in % G !== 0)
    : unquantizableKinds(shape, G);
  const coverage = opts.foldOnly ? null : checkGroupCoverage(shape, G, fake ? (_o, i, g) => i % g === 0 : awqCompatible,
    fake ? 'fake quantization (in_features % group == 0)' : 'the AutoAWQ gemm layout (in_features % group == 0, out_features % 8 == 0)');
  const quantizable = new Set(LINEAR_KINDS.filter((k) => !cannot.includes(k)));
  const notConvertKinds: LinearKind[] = opts.foldOnly ? [...LINEAR_KINDS] : cannot;
  const quantized = new Set(LINEAR_KINDS.filter((k) => !notConvertKinds.includes(k)));
  const quant: QuantConfig = { method: 'awq', bits, groupSize: G, zeroPoint: true, version: 'gemm', modulesToNotConvert: notConvertKinds };

  const layerInput: LayerInput = opts.layerInput ?? DEFAULT_LAYER_INPUT;
  const ck = Checkpoint.open(opts.model);
  let tmp: string | null = null;
  let writer: CheckpointWriter | null = null;
  try {
    // validate the source against config.json
    const planned0 = planTensors(shape0);
    for (const t of planned0) {
      if (!ck.has(t.name)) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${ck.dir}: tensor ${t.name} is missing; the checkpoint does not match config.json`);
      const e = ck.entry(t.name);
      if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
        throw new ShoalError('SHOAL_ERR_SHAPE', `${ck.dir}: tensor ${t.name} has shape [${e.shape}], config.json implies [${t.shape}]`);
      }
      if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
        throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${ck.dir}: tensor ${t.name} is ${e.dtype}; an unquantized F32/F16/BF16 checkpoint is needed`);
      }
    }
    if (method === 'awq') backendOps().init(opts.backend ?? 'auto');
    const precision: Precision = opts.precision === 'f32' || opts.precision === 'bf16' ? opts.precision
      : method === 'awq' && autoBf16(shape0, backendOps().info().bf16Native) ? 'bf16' : 'f32';

    // calibration (AWQ only), checked before any work
    const calib = method === 'awq'
      ? await loadCalibration({ model: opts.model, shape: shape0, ...(opts.calib ? { calib: opts.calib } : {}), ...(opts.calibDocs ? { calibDocs: opts.calibDocs } : {}), ...(opts.calibSep ? { calibSep: opts.calibSep } : {}), samples, seqlen, method,
        holdout: opts.foldOnly ? 0 : (opts.holdout ?? Math.max(1, Math.floor(samples / 8))) })
      : null;

    // output plan, in HF order (the writer appends in this order)
    const specs: TensorSpec[] = [];
    const planned = planTensors(shape);
    const plannedNames = new Set(planned.map((t) => t.name));
    for (const t of planned) {
      if (t.role === 'linear' && !fake && quantized.has(t.kind!)) {
        const [N, K] = t.shape as [number, number];
        specs.push({ name: `${t.module}.qweight`, dtype: 'I32', shape: [K, N / 8] });
        specs.push({ name: `${t.module}.qzeros`, dtype: 'I32', shape: [K / G, N / 8] });
        specs.push({ name: `${t.module}.scales`, dtype: 'F16', shape: [K / G, N] });
      } else {
        specs.push({ name: t.name, dtype: fdt, shape: t.shape });
      }
    }
    const extras: string[] = [];
    for (const name of ck.names().sort()) {
      if (plannedNames.has(name) || name.endsWith('rotary_emb.inv_freq')) continue;
      if (name === 'lm_head.weight' && shape.tieWordEmbeddings) continue;
      if (/^model\.layers\.\d+\.mlp\./.test(name) && F !== F0) {
        throw new ShoalError('SHOAL_ERR_UNSUPPORTED_ARCH', `${ck.dir}: ${name} is an MLP tensor this tool does not know how to pad; quantize without --pad-ffn`);
      }
      const e = ck.entry(name);
      const isFloat = e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16';
      specs.push({ name, dtype: isFloat ? fdt : e.dtype, shape: e.shape });
      extras.push(name);
    }

    tmp = beginOutputDir(opts.out, opts.force ?? false);
    const w = new CheckpointWriter(tmp, specs, opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
    writer = w;
    const putFloat = (name: string, v: Float32Array) => w.append(name, encodeFloats(v, fdt));

    let embed: Float32Array | null = ck.readFloat32('model.embed_tokens.weight');
    putFloat('model.embed_tokens.weight', embed);
    const D = shape.hiddenSize;
    const ctx: Ctx = {
      shape, F, T: calib ? calib.samples * calib.seqlen : 0, seqlen, bits, G,
      invFreq: Float32Array.from(ropeInvFreq(shape)), quantized: quantizable, duo: opts.duoScaling ?? false, alphaSearch: opts.alphaSearch ?? DEFAULT_ALPHA_SEARCH, precision, clipTokens: opts.clipTokens ?? 512, clipVAttention: opts.clipVAttention ?? true,
      searchBlocks: calib ? searchBlocks(calib.samples, seqlen, opts.searchTokens ?? DEFAULT_SEARCH_TOKENS) : [],
    };
    let x: Float32Array | null = null;
    const propagateFp = layerInput === 'fp';
    if (calib) {
      x = new Float32Array(ctx.T * D);
      for (let t = 0; t < ctx.T; t++) x.set(embed!.subarray(calib.tokens[t]! * D, (calib.tokens[t]! + 1) * D), t * D);
    }
    const reports: LayerReport[] = [];
    const rtnFallbackLayers: number[] = [];
    let nQuantized = 0;
    let xHeld: Float32Array | null = null;
    if (calib?.heldOut) {
      xHeld = new Float32Array(calib.heldOut.length * D);
      calib.heldOut.forEach((tk, t) => xHeld!.set(embed!.subarray(tk * D, (tk + 1) * D), t * D));
    }
    embed = null; // written and looked up: not needed during the layers
    for (let l = 0; l < shape.layers; l++) {
      const tl = performance.now();
      const timer = new PhaseTimer();
      const stage = (st: string) => {
        timer.start(st);
        opts.onStage?.(l, st);
      };
      stage('load');
      let lw = loadLayer(ck, l, shape0, F);
      const original = xHeld ? cloneLayer(lw) : null;
      let report: LayerReport;
      let searchOut: Float32Array | null = null;
      let searchIn: Float32Array | null = null;
      let rtnOutputMse: number | undefined;
      if (method === 'awq') {
        if (opts.compareRtn) {
          stage('rtn reference');
          // on the search blocks, as the AWQ output MSE
          const rtnW = await rtnWeights(ctx, lw);
          const xs = gatherBlocks(x!, ctx.searchBlocks, ctx.seqlen * D);
          const ctxS = { ...ctx, T: xs.length / D };
          let se = 0;
          await forEachChunk(ctxS, xs, async (ctxc, xc) => {
            const fpRef = (await forwardLayer(ctxc, lw, xc)).out;
            se += mse((await forwardLayer(ctxc, rtnW, xc)).out, fpRef) * fpRef.length;
          });
          rtnOutputMse = se / xs.length;
        }
        const r = await awqLayer(ctx, l, lw, x!, opts, propagateFp, stage);
        searchOut = r.searchOut;
        searchIn = r.searchIn;
        report = { ...r.report, seconds: 0, outputMse: 0, phases: {} };
        if (original && xHeld) {
          stage('held-out check');
          const ctxH: Ctx = { ...ctx, T: xHeld.length / D };
          const d = await awqOrRtn(async (lwx, xx) => (await forwardLayer(ctxH, lwx, xx)).out, (lwx) => rtnWeights(ctx, lwx), original, lw, xHeld);
          report.fallback = d.report;
          xHeld = propagateFp ? d.fp : d.out;
          if (d.report.choice === 'rtn') {
            lw = original;
            rtnFallbackLayers.push(l);
          }
        }
      } else {
        report = { layer: l, scales: [], clip: {}, seconds: 0, outputMse: null, phases: {} };
      }
      // quantize and write in plan order
      stage('quantize');
      const p = `model.layers.${l}`;
      const deq = {} as Record<LinearKind, Float32Array>;
      for (const t of planned) {
        if (!t.name.startsWith(`${p}.`)) continue;
        if (t.role === 'norm') {
          putFloat(t.name, t.name.endsWith('input_layernorm.weight') ? lw.attnNorm : lw.ffnNorm);
        } else if (t.role === 'bias') {
          putFloat(t.name, lw.bias[t.kind!]!);
        } else if (t.role === 'linear') {
          const kind = t.kind!;
          const [N, K] = t.shape as [number, number];
          const wt = lw.w[kind];
          if (!quantized.has(kind)) {
            deq[kind] = wt;
            putFloat(t.name, wt);
          } else if (fake) {
            deq[kind] = await backendOps().fakeQuant(wt, N, K, G, bits, null);
            putFloat(t.name, deq[kind]);
            nQuantized++;
          } else {
            const ql = quantizeLinear(wt, N, K, G);
            w.append(`${t.module}.qweight`, packAwq(ql.q, K, N));
            w.append(`${t.module}.qzeros`, packAwq(ql.zeros, K / G, N));
            w.append(`${t.module}.scales`, ql.scales);
            deq[kind] = Float32Array.from(dequantizeLinear(ql));
            nQuantized++;
          }
        }
      }
      if (method === 'awq') {
        const qlw = { ...lw, w: deq };
        const fpo = searchOut!;
        const L = ctx.seqlen;
        let se = 0;
        if (propagateFp) {
          // x already holds the FP layer's output (layerStats); the report's
          // output MSE: the quantized layer on the search blocks' inputs
          stage('output error');
          const ctxS = { ...ctx, T: searchIn!.length / D };
          await forEachChunk(ctxS, searchIn!, async (ctxc, xc, t0) => {
            const qo = (await forwardLayer(ctxc, qlw, xc)).out;
            se += mse(qo, fpo.subarray(t0 * D, t0 * D + qo.length)) * qo.length;
          });
        } else {
          // the next layer sees the outputs of this quantized layer
          // (chunk by chunk, in place: a chunk's output depends on its own blocks only)
          // (the report's output MSE: on the search blocks, against the FP output kept for them)
          stage('quantized forward');
          await forEachChunk(ctx, x!, async (ctxc, xc, t0) => {
            const qo = (await forwardLayer(ctxc, qlw, xc)).out;
            ctx.searchBlocks.forEach((b, i) => {
              const bt = b * L;
              if (bt < t0 || bt >= t0 + ctxc.T) return;
              const q = qo.subarray((bt - t0) * D, (bt - t0 + L) * D);
              se += mse(q, fpo.subarray(i * L * D, (i + 1) * L * D)) * q.length;
            });
            xc.set(qo);
          });
        }
        searchOut = null;
        searchIn = null;
        report.outputMse = se / fpo.length;
        if (rtnOutputMse !== undefined) report.rtnOutputMse = rtnOutputMse;
      }
      report.seconds = (performance.now() - tl) / 1000;
      report.phases = timer.finish();
      reports.push(report);
      opts.onLayer?.(report, shape.layers);
    }
    putFloat('model.norm.weight', ck.readFloat32('model.norm.weight'));
    if (!shape.tieWordEmbeddings) putFloat('lm_head.weight', ck.readFloat32('lm_head.weight'));
    for (const name of extras) {
      const e = ck.entry(name);
      const isFloat = e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16';
      w.append(name, isFloat ? encodeFloats(ck.readFloat32(name), fdt) : ck.read(name));
    }
    w.close();
    writer = null;

    const outConfig: Record<string, unknown> = { ...config, intermediate_size: F, torch_dtype: TORCH_DTYPE[dtype] };
    delete outConfig.quantization_config;
    if (!fake) outConfig.quantization_config = quantConfigJson(quant);
    else if (!opts.foldOnly) {
      // provenance only: the weights are plain floats that the quantizer's grid represents exactly
      outConfig.shoal_fake_quantization = { ...quantConfigJson(quant), method };
    }
    const files = [...w.files, ...writeModelMetadata(tmp, outConfig, gen, opts.model)];
    commitOutputDir(tmp, opts.out);
    tmp = null;
    const linears = shape.layers * LINEAR_KINDS.length;
    const clipped = method === 'awq' && !opts.foldOnly && opts.clip !== false;
    return {
      dir: path.resolve(opts.out),
      method,
      bits,
      groupSize: G,
      fakeQuant: fake,
      duoScaling: ctx.duo,
      alphaSearch: method === 'awq' ? ctx.alphaSearch : null,
      layerInput: method === 'awq' ? layerInput : null,
      precision: method === 'awq' ? { products: ctx.precision, bf16Native: backendOps().info().bf16Native } : null,
      clip: clipped,
      vClipError: clipped ? (ctx.clipVAttention ? 'attention' : 'token') : null,
      intermediateSize: F0,
      paddedIntermediateSize: F !== F0 ? F : null,
      quantizedLinears: nQuantized,
      keptLinears: linears - nQuantized,
      modulesToNotConvert: notConvertKinds,
      note: coverage?.note ?? null,
      calibration: calib ? {
        samples: calib.samples, seqlen: calib.seqlen, tokens: calib.tokens.length, documents: calib.documents,
        heldOutTokens: calib.heldOut?.length ?? 0, heldOutFromSamples: calib.heldOutFromSamples,
        searchTokens: ctx.searchBlocks.length * seqlen,
      } : null,
      rtnFallbackLayers,
      layers: reports,
      backend: method === 'awq' ? backendOps().info() : null,
      files,
      bytesOut: w.totalBytes,
      seconds: (performance.now() - t0) / 1000,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    };
  } catch (err) {
    (writer as CheckpointWriter | null)?.abort();
    if (tmp) abortOutputDir(tmp);
    throw err;
  } finally {
    ck.close();
  }
}

