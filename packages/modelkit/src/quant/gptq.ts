// quant/gptq.ts — writes real 2-, 3-, 4- and 8-bit checkpoints in the GPTQ
// layout (AutoGPTQ `gptq` or GPTQModel `gptq_v2`) or EfficientQAT's native
// layout (+ shoal-quant.json), from an unquantized LLaMA-family checkpoint.
//
// Methods: "gptq" — the published GPTQ algorithm (quant/gptq/: Hessians from
// calibration activations, layer by layer, error feedback, optional act order);
// "rtn" — group-wise round-to-nearest on the same grid (formats/gptq.ts
// quantizeGptqLinear); "awq" — the AWQ scale search (quant/awq, foldOnly) runs
// first and its folded F32 model is rounded: RTN with AWQ scales.
//
// A linear is quantized when the CPU kernels can run it: in_features % 32 == 0,
// group | in_features, 32 | group (4-bit: group 32 or a multiple of 64). Others
// stay floating point (.weight) and are listed in modules_to_not_convert.
// g_idx is k / G, except with GPTQ act order (desc_act): the group of input k
// in the order GPTQ quantized them.
//
// layout "ct" writes compressed-tensors pack-quantized (llm-compressor's format,
// formats/compressed-tensors.ts) from the same codes: GPTQ's min/max grid is
// compressed-tensors' calculate_qparams grid, and its unsigned codes and zeros are
// the stored q + 2^(b−1) and zp + 2^(b−1). Group −1 is strategy channel; symmetric
// schemes store no zero points; skipped linears and lm_head go in `ignore`.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readModelFolder, writeModelMetadata } from '../io/hf-folder.js';
import { checkGroupCoverage } from './group-check.js';
import { GptqSequential, type GptqLayerReport } from './gptq/sequential.js';
import { loadCalibration } from './awq/calib.js';
import { relativeError } from './rtn.js';
import { quantizeAwqModel } from './awq/quantize-awq.js';
import { CT_BITS, ctQuantConfig, ctScales, ctWeightShape, packCtWeight, packCtZeros } from '../formats/compressed-tensors.js';
import {
  dequantizeGptq, GPTQ_BITS, packEqatWeight, packEqatZeros, packGptqWeight, packGptqZeros, quantizeGptqLinear, trivialGIdx,
  type GptqQuantized,
} from '../formats/gptq.js';
import { ST_DTYPE, LINEAR_KINDS, linearDims, planTensors, TORCH_DTYPE, type FloatDType, type LinearKind, type ModelShape } from '../arch/model-shapes.js';
import {
  abortOutputDir, appendCopied, beginOutputDir, CheckpointWriter, commitOutputDir, DEFAULT_MAX_SHARD_BYTES, forgetOutputDir, trackOutputDir, type TensorSpec,
} from '../io/safetensors-write.js';
import { Checkpoint } from '../io/safetensors.js';
import { writeFileAtomicSync, ShoalError } from '@shoal/common';

export type GptqCheckpointFormat = 'gptq' | 'gptq_v2';
export type LowbitLayout = 'gptq' | 'eqat' | 'ct';

export interface GptqQuantizeOptions {
  model: string;
  out: string;
  /** rtn (default), gptq (the GPTQ algorithm, calibrated) or awq (AWQ scale search, then RTN) */
  method?: 'rtn' | 'gptq' | 'awq' | string;
  bits?: number;
  /** group size; -1 = one group over all inputs (default 128) */
  groupSize?: number;
  /** symmetric (AutoGPTQ sym=True) or asymmetric zero points (default false) */
  sym?: boolean;
  /** gptq (zeros stored minus one) or gptq_v2 (default gptq_v2) */
  checkpointFormat?: GptqCheckpointFormat;
  /** gptq (default), eqat (EfficientQAT native packing + shoal-quant.json) or ct (compressed-tensors pack-quantized, 4 or 8 bits) */
  layout?: LowbitLayout;
  dtype?: FloatDType;
  /** Calibration text files for method awq. */
  calib?: string[];
  /** Calibration samples and their length for methods awq and gptq (default 128 × 512). */
  awqSamples?: number;
  awqSeqlen?: number;
  /** Calibration documents given directly (tests). */
  calibDocs?: string[];
  /** GPTQ: dampening as a fraction of the Hessian's mean diagonal (default 0.01). */
  damp?: number;
  /** GPTQ: quantize inputs in order of decreasing Hessian diagonal and write g_idx (desc_act). */
  actOrder?: boolean;
  /** GPTQ: group grids from the original weights (static_groups). */
  staticGroups?: boolean;
  /** GPTQ: measure every linear's ‖(Ŵ − W)X‖² / ‖WX‖² for GPTQ and for RTN (costs about as much again). */
  layerError?: boolean;
  onStage?: (layer: number, phase: string, layers: number) => void;
  onLayer?: (report: GptqLayerReport, layers: number) => void;
  /** Splits calibration files into documents (BOS before each). */
  calibSep?: RegExp;
  force?: boolean;
  maxShardBytes?: number;
  onProgress?: (doneTensors: number, totalTensors: number) => void;
}

export interface GptqQuantizeResult {
  dir: string;
  method: 'rtn' | 'awq+rtn' | 'gptq';
  bits: number;
  /** GPTQ: act order and static groups as written to quantize_config.json */
  descAct: boolean;
  staticGroups: boolean;
  damp: number | null;
  /** GPTQ: per-layer reports */
  layers: GptqLayerReport[];
  calibration: { samples: number; seqlen: number; documents: number } | null;
  /** Linears the group does not fit, for the user (null: all quantized). */
  note: string | null;
  peakRssBytes: number;
  groupSize: number;
  sym: boolean;
  checkpointFormat: GptqCheckpointFormat;
  layout: LowbitLayout;
  dtype: FloatDType;
  quantizedLinears: number;
  keptLinears: number;
  modulesToNotConvert: string[];
  meanRelativeError: number;
  files: string[];
  bytesIn: number;
  bytesOut: number;
  seconds: number;
}

/** Whether the CPU kernels run a [out, in] linear at bits / group (group -1 = in). */
export function lowbitCompatible(inFeatures: number, bits: number, groupSize: number): boolean {
  const G = groupSize === -1 ? inFeatures : groupSize;
  if (inFeatures % 32 !== 0 || G % 32 !== 0 || inFeatures % G !== 0 || inFeatures / G > 1024) return false;
  return bits !== 4 || G === 32 || G % 64 === 0;
}

export function lowbitUnquantizableKinds(s: ModelShape, bits: number, groupSize: number, layout: LowbitLayout = 'gptq'): LinearKind[] {
  // compressed-tensors channel scales: the loader repeats a row's scale over groups of 32
  const ok = (K: number) => (layout === 'ct' && groupSize === -1 ? K % 32 === 0 : lowbitCompatible(K, bits, groupSize));
  return LINEAR_KINDS.filter((k) => !ok(linearDims(s, k).in));
}

export function checkGptqOptions(o: Pick<GptqQuantizeOptions, 'method' | 'bits' | 'groupSize' | 'dtype' | 'checkpointFormat' | 'layout' | 'damp' | 'actOrder' | 'staticGroups'>): { bits: number; groupSize: number } {
  const method = o.method ?? 'rtn';
  if (method !== 'rtn' && method !== 'awq' && method !== 'gptq') throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --method ${method}; use rtn, gptq or awq`);
  if (o.damp !== undefined && !(o.damp >= 0 && o.damp < 1)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--damp ${o.damp} must be in [0, 1) (a fraction of the Hessian's mean diagonal; 0.01 is usual)`);
  if ((o.actOrder || o.staticGroups) && method !== 'gptq') throw new ShoalError('SHOAL_ERR_INVALID_ARG', '--act-order and --static-groups need --method gptq');
  if (method === 'gptq' && o.layout === 'eqat') throw new ShoalError('SHOAL_ERR_INVALID_ARG', '--method gptq writes the GPTQ layout; use --format gptq or gptq-v1');
  const bits = o.bits ?? 4;
  if (!GPTQ_BITS.includes(bits)) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported by the GPTQ layout; use 2, 3, 4 or 8`);
  const groupSize = o.groupSize ?? 128;
  if (!Number.isSafeInteger(groupSize) || (groupSize <= 0 && groupSize !== -1)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--group ${groupSize} must be a positive integer or -1`);
  }
  if (o.dtype !== undefined && !(o.dtype in ST_DTYPE)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --dtype ${String(o.dtype)}`);
  if (o.checkpointFormat !== undefined && o.checkpointFormat !== 'gptq' && o.checkpointFormat !== 'gptq_v2') {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown checkpoint format ${String(o.checkpointFormat)}; use gptq or gptq_v2`);
  }
  if (o.layout !== undefined && o.layout !== 'gptq' && o.layout !== 'eqat' && o.layout !== 'ct') throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown layout ${String(o.layout)}`);
  if (o.layout === 'ct' && !CT_BITS.includes(bits)) {
    throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported by compressed-tensors pack-quantized here; use 4 (W4A16) or 8 (W8A16)`);
  }
  return { bits, groupSize };
}

/** Folds AWQ scales into a temporary F32 copy of the model (packages/modelkit/src/quant/awq); returns its folder. */
async function awqFold(opts: GptqQuantizeOptions, bits: number, groupSize: number, tmpRoot: string): Promise<string> {
  const folded = path.join(tmpRoot, 'awq-folded');
  await quantizeAwqModel({
    model: opts.model, out: folded, method: 'awq', bits: Math.min(bits, 4), groupSize: groupSize === -1 ? 128 : groupSize,
    foldOnly: true, force: true, ...(opts.calib ? { calib: opts.calib } : {}),
    ...(opts.awqSamples ? { samples: opts.awqSamples } : {}), ...(opts.awqSeqlen ? { seqlen: opts.awqSeqlen } : {}),
  });
  return folded;
}

/** Quantizes a model folder to GPTQ / EfficientQAT tensors; see GptqQuantizeOptions. */
export async function quantizeModelGptq(opts: GptqQuantizeOptions): Promise<GptqQuantizeResult> {
  const t0 = performance.now();
  const { bits, groupSize } = checkGptqOptions(opts);
  const method = opts.method ?? 'rtn';
  let src = opts.model;
  let tmpRoot: string | null = null;
  try {
    if (method === 'awq') {
      tmpRoot = mkdtempSync(path.join(os.tmpdir(), 'shoal-gptq-awq-'));
      trackOutputDir(tmpRoot);
      src = await awqFold(opts, bits, groupSize, tmpRoot);
    }
    if (method !== 'gptq') {
      const steps = folderSteps({ ...opts, model: src }, bits, groupSize, opts.model);
      let st = steps.next();
      while (!st.done) st = steps.next(rtnLinear(st.value, bits, groupSize, opts));
      return { ...st.value, method: method === 'awq' ? 'awq+rtn' : 'rtn', seconds: (performance.now() - t0) / 1000 };
    }
    return await gptqFolder(opts, bits, groupSize, t0);
  } finally {
    if (tmpRoot) {
      forgetOutputDir(tmpRoot);
      rmSync(tmpRoot, { recursive: true, force: true });
    }
  }
}

/** Which linears the low-bit layouts can hold at this width and group (throws when none). */
function lowbitCoverage(shape: ModelShape, bits: number, groupSize: number, layout: LowbitLayout) {
  return checkGroupCoverage(shape, groupSize, (_o, i, g) => lowbitCompatible(i, bits, g),
    `the ${layout === 'eqat' ? 'EfficientQAT' : 'GPTQ'} layout at ${bits} bits (in_features % 32 == 0, group | in_features${bits === 4 ? ', group 32 or a multiple of 64' : ''})`);
}

/** GPTQ proper: calibration first (all checks before any work), then the layers in order. */
async function gptqFolder(opts: GptqQuantizeOptions, bits: number, groupSize: number, t0: number): Promise<GptqQuantizeResult> {
  const { shape } = readModelFolder(opts.model);
  lowbitCoverage(shape, bits, groupSize, 'gptq');
  const samples = opts.awqSamples ?? 128;
  const seqlen = opts.awqSeqlen ?? 512;
  const calib = await loadCalibration({
    model: opts.model, shape, ...(opts.calib ? { calib: opts.calib } : {}), ...(opts.calibDocs ? { calibDocs: opts.calibDocs } : {}),
    ...(opts.calibSep ? { calibSep: opts.calibSep } : {}), samples, seqlen, method: 'gptq',
  });
  const fmt: GptqCheckpointFormat = opts.checkpointFormat ?? 'gptq_v2';
  const skip = new Set(lowbitUnquantizableKinds(shape, bits, groupSize));
  const ck = Checkpoint.open(opts.model);
  try {
    const seq = new GptqSequential({
      ck, shape, tokens: calib.tokens, seqlen, quantize: new Set(LINEAR_KINDS.filter((k) => !skip.has(k))),
      solve: {
        bits, group: groupSize, damp: opts.damp ?? 0.01, actOrder: opts.actOrder ?? false, staticGroups: opts.staticGroups ?? false,
        sym: opts.sym ?? false, minZero: fmt === 'gptq' ? 1 : 0, errors: opts.layerError ?? false,
      },
      ...(opts.onStage ? { onStage: opts.onStage } : {}), ...(opts.onLayer ? { onLayer: opts.onLayer } : {}),
    });
    const steps = folderSteps(opts, bits, groupSize, opts.model);
    let st = steps.next();
    while (!st.done) {
      const req = st.value;
      const r = await seq.linear(req.layer, req.kind);
      st = steps.next({ ql: r.ql, gIdx: opts.actOrder && !opts.staticGroups ? r.gIdx : null, deq: r.deq });
    }
    return {
      ...st.value, method: 'gptq', layers: seq.reports,
      calibration: { samples: calib.samples, seqlen: calib.seqlen, documents: calib.documents },
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    ck.close();
  }
}

/** Synchronous RTN (no AWQ): gen-model's `gptq-w<b>g<G>` names use it. */
export function quantizeModelGptqSync(opts: Omit<GptqQuantizeOptions, 'method' | 'calib'>): GptqQuantizeResult {
  const t0 = performance.now();
  const { bits, groupSize } = checkGptqOptions(opts);
  const steps = folderSteps(opts, bits, groupSize, opts.model);
  let st = steps.next();
  while (!st.done) st = steps.next(rtnLinear(st.value, bits, groupSize, opts));
  return { ...st.value, method: 'rtn', seconds: (performance.now() - t0) / 1000 };
}

/** A linear the folder writer needs quantized. */
interface LinearRequest { wt: Float32Array; N: number; K: number; layer: number; kind: LinearKind; minZero: number }
/** Its codes; gIdx null: k / G. deq: the dequantized weights when already at hand. */
interface LinearAnswer { ql: GptqQuantized; gIdx: Int32Array | null; deq?: Float32Array }

function rtnLinear(req: LinearRequest, bits: number, groupSize: number, opts: GptqQuantizeOptions): LinearAnswer {
  return { ql: quantizeGptqLinear(req.wt, req.N, req.K, bits, groupSize, { sym: opts.sym ?? false, minZero: req.minZero }), gIdx: null };
}

type FolderResult = Omit<GptqQuantizeResult, 'method' | 'seconds'>;

/**
 * Writes the output folder tensor by tensor (atomically: a temporary folder
 * renamed at the end); yields each linear to quantize and takes its codes back,
 * so RTN runs synchronously and GPTQ asynchronously through the same writer.
 */
function* folderSteps(opts: GptqQuantizeOptions, bits: number, groupSize: number, tokenizerFrom: string): Generator<LinearRequest, FolderResult, LinearAnswer> {
  const sym = opts.sym ?? false;
  const fmt: GptqCheckpointFormat = opts.checkpointFormat ?? 'gptq_v2';
  const layout: LowbitLayout = opts.layout ?? 'gptq';
  const dtype: FloatDType = opts.dtype ?? 'f16';
  const isGptq = opts.method === 'gptq';
  const descAct = isGptq && (opts.actOrder ?? false) && !(opts.staticGroups ?? false);
  const { config, gen, shape, quant: srcQuant } = readModelFolder(opts.model);
  if (srcQuant || config.quantization_config) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${opts.model} is already quantized; point --model at an unquantized checkpoint`);
  const coverage = lowbitCoverage(shape, bits, groupSize, layout);
  const skip = lowbitUnquantizableKinds(shape, bits, groupSize, layout);
  const fdt = ST_DTYPE[dtype];
  const ck = Checkpoint.open(opts.model);
  let tmp: string | null = null;
  let writer: CheckpointWriter | null = null;
  try {
    interface Job { src: string; quant: boolean; out: TensorSpec[]; shape: number[]; module?: string }
    const jobs: Job[] = [];
    const seen = new Set<string>();
    for (const t of planTensors(shape)) {
      if (!ck.has(t.name)) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${ck.dir}: tensor ${t.name} is missing; the checkpoint does not match config.json`);
      const e = ck.entry(t.name);
      if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
        throw new ShoalError('SHOAL_ERR_SHAPE', `${ck.dir}: tensor ${t.name} has shape [${e.shape}], config.json implies [${t.shape}]`);
      }
      seen.add(t.name);
      if (t.role === 'linear' && !skip.includes(t.kind!)) {
        const [N, K] = t.shape as [number, number];
        const G = groupSize === -1 ? K : groupSize;
        const ng = K / G;
        const per = Math.floor(32 / bits);
        const pf = 32 / bits;
        const out: TensorSpec[] = layout === 'ct'
          ? [
            { name: `${t.module}.weight_packed`, dtype: 'I32', shape: [N, Math.ceil(K / pf)] },
            { name: `${t.module}.weight_scale`, dtype: 'F16', shape: [N, ng] },
            ...(sym ? [] : [{ name: `${t.module}.weight_zero_point`, dtype: 'I32' as const, shape: [Math.ceil(N / pf), ng] }]),
            { name: `${t.module}.weight_shape`, dtype: 'I64', shape: [2] },
          ]
          : layout === 'gptq'
          ? [
            { name: `${t.module}.qweight`, dtype: 'I32', shape: [Math.ceil((K * bits) / 32), N] },
            { name: `${t.module}.qzeros`, dtype: 'I32', shape: [ng, Math.ceil((N * bits) / 32)] },
            { name: `${t.module}.scales`, dtype: 'F16', shape: [ng, N] },
            { name: `${t.module}.g_idx`, dtype: 'I32', shape: [K] },
          ]
          : [
            { name: `${t.module}.qweight`, dtype: 'I32', shape: [Math.ceil(K / per), N] },
            { name: `${t.module}.qzeros`, dtype: 'I32', shape: [ng, Math.ceil(N / per)] },
            { name: `${t.module}.scales`, dtype: 'F16', shape: [ng, N] },
          ];
        jobs.push({ src: t.name, quant: true, out, shape: t.shape, module: t.module! });
      } else {
        jobs.push({ src: t.name, quant: false, out: [{ name: t.name, dtype: fdt, shape: t.shape }], shape: t.shape });
      }
    }
    for (const name of ck.names().sort()) {
      if (seen.has(name) || name.endsWith('rotary_emb.inv_freq')) continue;
      if (name === 'lm_head.weight' && shape.tieWordEmbeddings) continue;
      const e = ck.entry(name);
      const isFloat = e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16';
      jobs.push({ src: name, quant: false, out: [{ name, dtype: isFloat ? fdt : e.dtype, shape: e.shape }], shape: e.shape });
    }
    tmp = beginOutputDir(opts.out, opts.force ?? false);
    const w = new CheckpointWriter(tmp, jobs.flatMap((j) => j.out), opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
    writer = w;
    let quantized = 0;
    let relErrSum = 0;
    for (let idx = 0; idx < jobs.length; idx++) {
      const job = jobs[idx]!;
      if (!job.quant) {
        appendCopied(w, ck, job.src, job.out[0]!);
      } else {
        const [N, K] = job.shape as [number, number];
        const wt = ck.readFloat32(job.src);
        const m = /^model\.layers\.(\d+)\.(.+)$/.exec(job.module!)!;
        // checkpoint_format gptq stores z − 1: keep asymmetric zeros >= 1
        const ans: LinearAnswer = yield { wt, N, K, layer: Number(m[1]), kind: m[2] as LinearKind, minZero: layout === 'gptq' && fmt === 'gptq' ? 1 : 0 };
        const ql = ans.ql;
        const ng = K / ql.G;
        if (layout === 'ct') {
          w.append(`${job.module}.weight_packed`, packCtWeight(ql.q, K, N, bits));
          w.append(`${job.module}.weight_scale`, ctScales(ql.scales, ng, N));
          if (!sym) w.append(`${job.module}.weight_zero_point`, packCtZeros(ql.zeros, ng, N, bits));
          w.append(`${job.module}.weight_shape`, ctWeightShape(N, K));
        } else if (layout === 'gptq') {
          const stored = fmt === 'gptq' ? ql.zeros.map((z) => z - 1) : ql.zeros;
          w.append(`${job.module}.qweight`, packGptqWeight(ql.q, K, N, bits));
          w.append(`${job.module}.qzeros`, packGptqZeros(stored, ng, N, bits));
          w.append(`${job.module}.scales`, ql.scales);
          w.append(`${job.module}.g_idx`, ans.gIdx ?? trivialGIdx(K, ql.G));
        } else {
          w.append(`${job.module}.qweight`, packEqatWeight(ql.q, K, N, bits));
          w.append(`${job.module}.qzeros`, packEqatZeros(ql.zeros, ng, N, bits));
          w.append(`${job.module}.scales`, ql.scales);
        }
        relErrSum += relativeError(wt, ans.deq ?? dequantizeGptq(ql, ans.gIdx ?? undefined));
        quantized++;
      }
      opts.onProgress?.(idx + 1, jobs.length);
    }
    w.close();
    writer = null;

    // compressed-tensors names skipped modules in full, as llm-compressor's ignore list does
    const ignore = ['lm_head', ...Array.from({ length: shape.layers }, (_, l) => skip.map((k) => `model.layers.${l}.${k}`)).flat()];
    const qc: Record<string, unknown> = layout === 'ct'
      ? ctQuantConfig([{ bits, groupSize, symmetric: sym }], ignore)
      : layout === 'gptq'
      ? {
        quant_method: 'gptq', bits, group_size: groupSize, desc_act: descAct, sym, static_groups: isGptq && (opts.staticGroups ?? false),
        true_sequential: true, damp_percent: isGptq ? (opts.damp ?? 0.01) : 0.01, checkpoint_format: fmt,
        ...(w.files.length === 1 && w.files[0] === 'model.safetensors' ? { model_file_base_name: 'model' } : {}),
        modules_to_not_convert: skip.length ? skip : null,
      }
      : { quant_method: 'efficientqat', bits, group_size: groupSize };
    const outConfig: Record<string, unknown> = { ...config, torch_dtype: TORCH_DTYPE[dtype] };
    const files = [...w.files];
    if (layout === 'ct') {
      outConfig.quantization_config = qc;
    } else if (layout === 'gptq') {
      outConfig.quantization_config = qc;
      writeFileAtomicSync(path.join(tmp, 'quantize_config.json'), JSON.stringify(qc, null, 2) + '\n');
      files.push('quantize_config.json');
    } else {
      // EfficientQAT native checkpoints carry no quantization metadata: the sidecar names it
      writeFileAtomicSync(path.join(tmp, 'shoal-quant.json'), JSON.stringify({ ...qc, modules_not_quantized: skip }, null, 2) + '\n');
      files.push('shoal-quant.json');
    }
    files.push(...writeModelMetadata(tmp, outConfig, gen, tokenizerFrom));
    commitOutputDir(tmp, opts.out);
    tmp = null;
    const linears = jobs.filter((j) => j.quant).length + jobs.filter((j) => !j.quant && /\.(self_attn|mlp)\.[a-z_]+_proj\.weight$/.test(j.src)).length;
    return {
      dir: path.resolve(opts.out), bits, groupSize, sym, checkpointFormat: fmt, layout, dtype,
      quantizedLinears: quantized, keptLinears: linears - quantized, modulesToNotConvert: skip,
      meanRelativeError: quantized > 0 ? relErrSum / quantized : 0,
      descAct, staticGroups: isGptq && (opts.staticGroups ?? false), damp: isGptq ? (opts.damp ?? 0.01) : null,
      layers: [], calibration: null, note: coverage.note, peakRssBytes: process.resourceUsage().maxRSS * 1024,
      files, bytesIn: ck.files.reduce((a, f) => a + f.fileSize, 0), bytesOut: w.totalBytes,
    };
  } catch (err) {
    (writer as CheckpointWriter | null)?.abort();
    if (tmp) abortOutputDir(tmp);
    throw err;
  } finally {
    ck.close();
  }
}
