// quant/rtn.ts — round-to-nearest INT4 quantization of an unquantized
// LLaMA-family checkpoint into the AutoAWQ `gemm` layout.
//
// Every decoder linear (q/k/v/o/gate/up/down) whose in_features is a multiple
// of the group size (and out_features a multiple of 8, for packing) becomes
// qweight/qzeros/scales (see formats/awq.ts for the quantizer). Linears that do
// not fit are kept in floating point and listed by kind (e.g. "mlp.down_proj")
// in quantization_config.modules_to_not_convert, which AutoAWQ matches as a
// substring of module names. Embeddings, norms and lm_head stay unquantized.
//
// Storage dtype: like AutoAWQ, the unquantized tensors and the biases are
// written as F16 by default (scales are always F16); --dtype f32 or bf16 keeps
// them in that dtype instead. The source may be F32, F16 or BF16.
//
// The model is processed tensor by tensor (never fully in memory).
import path from 'node:path';
import { dequantizeLinear, packAwq, quantizeLinear } from '../formats/awq.js';
import { readModelFolder, writeModelMetadata } from '../io/hf-folder.js';
import { checkGroupCoverage } from './group-check.js';
import {
  awqCompatible, ST_DTYPE, isNotConverted, planTensors, quantConfigJson, TORCH_DTYPE, unquantizableKinds, type FloatDType, type ModelShape, type QuantConfig,
} from '../arch/model-shapes.js';
import { abortOutputDir, appendCopied, beginOutputDir, CheckpointWriter, commitOutputDir, DEFAULT_MAX_SHARD_BYTES, type TensorSpec } from '../io/safetensors-write.js';
import { Checkpoint } from '../io/safetensors.js';
import { type StDType } from '../io/dtypes.js';
import { ShoalError } from '@shoal/common';

export type QuantMethodName = 'rtn' | 'awq';

export interface QuantizeOptions {
  /** Unquantized Hugging Face model folder. */
  model: string;
  out: string;
  method?: QuantMethodName | string;
  bits?: number;
  groupSize?: number;
  /** Storage dtype of the tensors that stay unquantized (default f16, as AutoAWQ). */
  dtype?: FloatDType;
  force?: boolean;
  maxShardBytes?: number;
  onProgress?: (doneTensors: number, totalTensors: number) => void;
}

export interface QuantizeResult {
  dir: string;
  method: 'rtn';
  bits: number;
  groupSize: number;
  dtype: FloatDType;
  quantizedLinears: number;
  keptLinears: number;
  modulesToNotConvert: string[];
  /** Linears the group does not fit, for the user (null: all quantized). */
  note: string | null;
  /** Mean over quantized linears of ||W - deq(Q(W))|| / ||W||. */
  meanRelativeError: number;
  files: string[];
  bytesIn: number;
  bytesOut: number;
  seconds: number;
}

/** Checks options; returns the validated method/bits/group. */
export function checkQuantizeOptions(opts: Pick<QuantizeOptions, 'method' | 'bits' | 'groupSize' | 'dtype'>): { bits: number; groupSize: number; dtype: FloatDType } {
  const method = opts.method ?? 'rtn';
  if (method === 'awq') {
    throw new ShoalError('SHOAL_ERR_NOT_IMPLEMENTED', 'AWQ scale search (--method awq) is not implemented yet; use --method rtn');
  }
  if (method !== 'rtn') throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --method ${method}; use rtn`);
  const bits = opts.bits ?? 4;
  if (bits !== 4) throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `--bits ${bits} is not supported; the AutoAWQ gemm layout is 4-bit only, use --bits 4`);
  const groupSize = opts.groupSize ?? 128;
  if (!Number.isSafeInteger(groupSize) || groupSize <= 0) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--group ${groupSize} must be a positive integer (32, 64 or 128 are usual)`);
  }
  const dtype = opts.dtype ?? 'f16';
  if (!(dtype in ST_DTYPE)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --dtype ${String(dtype)}; use f16, f32 or bf16`);
  return { bits, groupSize, dtype };
}

interface Job {
  /** source tensor name */
  src: string;
  kind: 'copy' | 'quantize';
  out: TensorSpec[];
  shape: number[];
}

/** Quantizes a model folder with round-to-nearest INT4; see QuantizeOptions. */
/** ‖w − ŵ‖ / ‖w‖ of one tensor (0 for an all-zero tensor). */
export function relativeError(w: ArrayLike<number>, approx: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    const d = w[i]! - approx[i]!;
    num += d * d;
    den += w[i]! * w[i]!;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
}

export function quantizeModel(opts: QuantizeOptions): QuantizeResult {
  const t0 = performance.now();
  const { bits, groupSize: G, dtype } = checkQuantizeOptions(opts);
  const { config, gen, shape, quant: srcQuant } = readModelFolder(opts.model);
  if (srcQuant) {
    throw new ShoalError('SHOAL_ERR_UNSUPPORTED_QUANT', `${opts.model} is already quantized (${srcQuant.method}); point --model at an unquantized F32/F16/BF16 checkpoint`);
  }
  const coverage = checkGroupCoverage(shape, G, awqCompatible, 'the AutoAWQ gemm layout (in_features % group == 0, out_features % 8 == 0)');
  const quant: QuantConfig = {
    method: 'awq', bits, groupSize: G, zeroPoint: true, version: 'gemm', modulesToNotConvert: unquantizableKinds(shape, G),
  };
  const fdt = ST_DTYPE[dtype];
  const ck = Checkpoint.open(opts.model);
  let tmp: string | null = null;
  let writer: CheckpointWriter | null = null;
  try {
    const jobs = planJobs(ck, shape, quant, fdt);
    tmp = beginOutputDir(opts.out, opts.force ?? false);
    const w = new CheckpointWriter(tmp, jobs.flatMap((j) => j.out), opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES);
    writer = w;
    let quantized = 0;
    let relErrSum = 0;
    jobs.forEach((job, idx) => {
      if (job.kind === 'copy') {
        appendCopied(w, ck, job.src, job.out[0]!);
      } else {
        const [N, K] = job.shape as [number, number];
        const wt = ck.readFloat32(job.src);
        const ql = quantizeLinear(wt, N, K, G);
        const module = job.src.slice(0, -'.weight'.length);
        w.append(`${module}.qweight`, packAwq(ql.q, K, N));
        w.append(`${module}.qzeros`, packAwq(ql.zeros, K / G, N));
        w.append(`${module}.scales`, ql.scales);
        relErrSum += relativeError(wt, dequantizeLinear(ql));
        quantized++;
      }
      opts.onProgress?.(idx + 1, jobs.length);
    });
    w.close();
    writer = null;

    const outConfig: Record<string, unknown> = { ...config, torch_dtype: TORCH_DTYPE[dtype], quantization_config: quantConfigJson(quant) };
    const files = [...w.files, ...writeModelMetadata(tmp, outConfig, gen, opts.model)];
    commitOutputDir(tmp, opts.out);
    tmp = null;
    const bytesIn = ck.files.reduce((a, f) => a + f.fileSize, 0);
    const linears = jobs.filter((j) => j.kind === 'quantize').length + jobs.filter((j) => j.kind === 'copy' && /\.(self_attn|mlp)\.[a-z_]+_proj\.weight$/.test(j.src)).length;
    return {
      dir: path.resolve(opts.out),
      method: 'rtn',
      bits,
      groupSize: G,
      dtype,
      quantizedLinears: quantized,
      keptLinears: linears - quantized,
      modulesToNotConvert: quant.modulesToNotConvert,
      note: coverage.note,
      meanRelativeError: quantized > 0 ? relErrSum / quantized : 0,
      files,
      bytesIn,
      bytesOut: w.totalBytes,
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (err) {
    (writer as CheckpointWriter | null)?.abort();
    if (tmp) abortOutputDir(tmp);
    throw err;
  } finally {
    ck.close();
  }
}

/** What to write for each source tensor, in a stable order (planned tensors first). */
function planJobs(ck: Checkpoint, shape: ModelShape, quant: QuantConfig, fdt: StDType): Job[] {
  const jobs: Job[] = [];
  const planned = planTensors(shape);
  const seen = new Set<string>();
  for (const t of planned) {
    if (!ck.has(t.name)) {
      throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${ck.dir}: tensor ${t.name} is missing; the checkpoint does not match config.json`);
    }
    const e = ck.entry(t.name);
    if (e.shape.length !== t.shape.length || e.shape.some((d, i) => d !== t.shape[i])) {
      throw new ShoalError('SHOAL_ERR_SHAPE', `${ck.dir}: tensor ${t.name} has shape [${e.shape}], config.json implies [${t.shape}]`);
    }
    if (e.dtype !== 'F32' && e.dtype !== 'F16' && e.dtype !== 'BF16') {
      throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${ck.dir}: tensor ${t.name} is ${e.dtype}; an unquantized F32/F16/BF16 checkpoint is needed`);
    }
    seen.add(t.name);
    if (t.role === 'linear' && !isNotConverted(t.module!, quant.modulesToNotConvert)) {
      const [N, K] = t.shape as [number, number];
      const G = quant.groupSize;
      jobs.push({
        src: t.name,
        kind: 'quantize',
        shape: t.shape,
        out: [
          { name: `${t.module}.qweight`, dtype: 'I32', shape: [K, N / 8] },
          { name: `${t.module}.qzeros`, dtype: 'I32', shape: [K / G, N / 8] },
          { name: `${t.module}.scales`, dtype: 'F16', shape: [K / G, N] },
        ],
      });
    } else {
      jobs.push({ src: t.name, kind: 'copy', shape: t.shape, out: [{ name: t.name, dtype: fdt, shape: t.shape }] });
    }
  }
  // Anything else in the checkpoint (e.g. attention biases of other layouts) is
  // carried over; legacy rotary caches are recomputed by every loader and dropped.
  for (const name of ck.names().sort()) {
    if (seen.has(name) || name.endsWith('rotary_emb.inv_freq')) continue;
    if (name === 'lm_head.weight' && shape.tieWordEmbeddings) continue;
    const e = ck.entry(name);
    const isFloat = e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16';
    jobs.push({ src: name, kind: 'copy', shape: e.shape, out: [{ name, dtype: isFloat ? fdt : e.dtype, shape: e.shape }] });
  }
  return jobs;
}
