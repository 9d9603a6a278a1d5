// layer-error.ts — `shoal eval layer-error`: how far each decoder layer of a
// quantized checkpoint is from the FP layer, measured the same way whatever the
// method (RTN, GPTQ, AWQ) and the format (AutoAWQ gemm, GPTQ, fake-quantized F32).
//
// For layer l, x = the FP model's input to that layer (the FP forward of layers
// 0..l-1) on held-out tokens; y = FP layer(x), ŷ = quantized layer(x), the
// quantized layer with its dequantized weights and its own norms and biases (AWQ
// folds scales into the norms and the linears before them, so only whole-layer
// outputs can be compared). The layer's relative error is
//
//     ‖ŷ − y‖² / ‖y − x‖²
//
// over all tokens: the error against the layer's own contribution to the residual
// stream (the residual x itself would only dilute it). Per linear, where that is
// well defined (the writer folds nothing: GPTQ, RTN fake-quant, plain float
// checkpoints, and the layer's norms and biases equal the FP ones),
// ‖(Ŵ − W)X‖² / ‖WX‖² with X the FP layer's input to the linear.
//
// The forward is the quantizers' (gptq/sequential.ts): products and attention
// through the backend ops (quant/awq/ops.ts), in chunks of whole blocks; sums in
// float64.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { HfModelTokenizer, type Tokenizer } from '@shoal/engine';
import { ShoalError } from '@shoal/common';
import { LINEAR_KINDS, type LinearKind, type ModelShape } from '../arch/model-shapes.js';
import { readCalibDocuments } from '../quant/awq/calib.js';
import { add, backendOps, linear, rmsnorm } from '../quant/awq/ops.js';
import { ropeInvFreq } from './reference-forward.js';
import { embedTokens, openModelFolder, readLayer, type LayerTensors, type ModelFolder, type WeightFormat } from './layer-weights.js';

export interface LayerErrorOptions {
  /** the quantized model folder */
  model: string;
  /** the FP model folder it was made from (its tokenizer tokenizes the text) */
  reference: string;
  /** UTF-8 text files; the held-out blocks are cut from their end */
  text: readonly string[];
  /** split the text into documents at this regex (BOS before each); default blank lines */
  sep?: RegExp;
  samples: number;
  seqlen: number;
  onLayer?: (r: LayerErrorReport, layers: number) => void;
}

export interface LayerErrorReport {
  layer: number;
  /** ‖ŷ − y‖² / ‖y − x‖² */
  relError: number;
  /** ‖ŷ − y‖² and ‖y − x‖², summed over tokens and channels */
  errSq: number;
  contributionSq: number;
  /** ‖ŷ − y‖² / (T·D) */
  outputMse: number;
  /** per linear ‖(Ŵ − W)X‖² / ‖WX‖², null when not well defined (see linearsNote) */
  linears: Partial<Record<LinearKind, number>> | null;
  linearsNote: string | null;
  quantizedLinears: number;
  seconds: number;
}

export interface LayerErrorResult {
  model: string;
  reference: string;
  format: WeightFormat;
  samples: number;
  seqlen: number;
  tokens: number;
  /** where the held-out tokens come from: documents [first, first + count) of `total`, the last ones of the text */
  documents: { first: number; count: number; total: number };
  layers: LayerErrorReport[];
  /** mean of the per-layer relative errors */
  meanRelError: number;
  /** Σ‖ŷ − y‖² / Σ‖y − x‖² over all layers */
  totalRelError: number;
  seconds: number;
}

/** Tokens per chunk of the forward (whole blocks): a [1024, F] MLP buffer stays small. */
const CHUNK_TOKENS = 1024;

/**
 * The last samples × seqlen tokens' worth of whole documents of the text: documents
 * are taken from the end until there are enough tokens (BOS before each), then the
 * first samples × seqlen tokens from the earliest of them are kept, so the first
 * block starts at a document start. Calibration (quant/awq/calib.ts) takes its
 * blocks from the start of the text, so with the same file the two do not overlap
 * as long as the text has more tokens than both together (the result says which
 * documents were used).
 */
export function heldOutTokens(docs: readonly string[], tok: Tokenizer, samples: number, seqlen: number): { tokens: Int32Array; first: number; count: number } {
  const need = samples * seqlen;
  const parts: number[][] = [];
  let have = 0;
  let i = docs.length;
  while (have < need && i > 0) {
    i--;
    const ids = tok.encode(docs[i]!, { addSpecialTokens: false });
    if (tok.bosTokenId !== null) ids.unshift(tok.bosTokenId);
    parts.unshift(ids);
    have += ids.length;
  }
  if (have < need) {
    throw new ShoalError('SHOAL_ERR_CALIB_TOO_SHORT', `the text gives ${have} tokens but ${samples} samples × ${seqlen} tokens = ${need} are needed; pass more --text or lower --samples/--seqlen`);
  }
  const flat = new Int32Array(need);
  let o = 0;
  for (const p of parts) {
    const n = Math.min(p.length, need - o);
    flat.set(p.slice(0, n), o);
    o += n;
    if (o === need) break;
  }
  return { tokens: flat, first: i, count: docs.length - i };
}

/** What must be equal in the two models: the name users know it by (config.json) and the ModelShape field. */
const SAME_FIELDS: ReadonlyArray<readonly [string, keyof ModelShape]> = [
  ['architecture', 'arch'], ['num_hidden_layers', 'layers'], ['hidden_size', 'hiddenSize'],
  ['num_attention_heads', 'heads'], ['num_key_value_heads', 'kvHeads'], ['head_dim', 'headDim'],
  ['vocab_size', 'vocabSize'], ['rms_norm_eps', 'rmsNormEps'], ['rope_theta', 'ropeTheta'],
  ['rope_scaling', 'ropeScaling'], ['q/k/v biases', 'qkvBias'], ['o_proj bias', 'oBias'],
];

/** The two models must have the same architecture and layer shapes (FFN: the quantized one may be zero-padded). */
export function checkSameArchitecture(q: ModelShape, fp: ModelShape, qDir: string, fpDir: string): void {
  const diffs: string[] = [];
  const same = (name: string, a: unknown, b: unknown) => {
    if (JSON.stringify(a) !== JSON.stringify(b)) diffs.push(`${name} ${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
  };
  for (const [name, key] of SAME_FIELDS) same(name, q[key], fp[key]);
  if (q.intermediateSize < fp.intermediateSize) diffs.push(`intermediate_size ${q.intermediateSize} vs ${fp.intermediateSize}`);
  if (diffs.length > 0) {
    throw new ShoalError('SHOAL_ERR_SHAPE',
      `${qDir} and ${fpDir} are not the same model architecture (quantized vs reference: ${diffs.join('; ')}); pass the FP model the checkpoint was quantized from as --reference`);
  }
}

interface LayerOut {
  /** the layer output [T, D] */
  y: Float32Array;
  /** inputs and outputs of the linears (FP pass only) */
  acts?: { h: Float32Array; a: Float32Array; h2: Float32Array; m: Float32Array; out: Record<LinearKind, Float32Array> };
}

/** One decoder layer on x [T, D] (whole blocks of seqlen), as gptq/sequential.ts runs it. */
async function forwardLayer(s: ModelShape, F: number, lw: LayerTensors, x: Float32Array, T: number, seqlen: number,
  invFreq: Float32Array, keep: boolean): Promise<LayerOut> {
  const D = s.hiddenSize;
  const qd = s.heads * s.headDim;
  const kvd = s.kvHeads * s.headDim;
  const eps = s.rmsNormEps;
  const b = (k: LinearKind) => lw.bias[k] ?? null;
  const h = rmsnorm(x, T, D, lw.attnNorm, eps);
  const q = await linear(h, T, lw.w['self_attn.q_proj'], qd, D, b('self_attn.q_proj'));
  const k = await linear(h, T, lw.w['self_attn.k_proj'], kvd, D, b('self_attn.k_proj'));
  const v = await linear(h, T, lw.w['self_attn.v_proj'], kvd, D, b('self_attn.v_proj'));
  // copies of the linears' outputs for the per-linear errors (attention may rotate q, k in place)
  const qIn = keep ? q.slice() : q;
  const kIn = keep ? k.slice() : k;
  const vIn = keep ? v.slice() : v;
  // Qwen3 q_norm / k_norm: RMSNorm of every head's hd values (rows of hd)
  const qk = lw.qNorm && lw.kNorm;
  const qa = qk ? rmsnorm(q, T * s.heads, s.headDim, lw.qNorm!, eps) : q;
  const ka = qk ? rmsnorm(k, T * s.kvHeads, s.headDim, lw.kNorm!, eps) : k;
  const a = await backendOps().attention(qa, ka, v, T, seqlen, s.heads, s.kvHeads, s.headDim, invFreq);
  const o = await linear(a, T, lw.w['self_attn.o_proj'], D, qd, b('self_attn.o_proj'));
  const x1 = add(x, o);
  const h2 = rmsnorm(x1, T, D, lw.ffnNorm, eps);
  const g = await linear(h2, T, lw.w['mlp.gate_proj'], F, D);
  const u = await linear(h2, T, lw.w['mlp.up_proj'], F, D);
  const gateOut = keep ? g.slice() : g;
  await backendOps().siluMul(g, u);
  const d = await linear(g, T, lw.w['mlp.down_proj'], D, F);
  const y = x1;
  for (let i = 0; i < y.length; i++) y[i] = y[i]! + d[i]!;
  if (!keep) return { y };
  return {
    y,
    acts: {
      h, a, h2, m: g,
      out: {
        'self_attn.q_proj': qIn, 'self_attn.k_proj': kIn, 'self_attn.v_proj': vIn, 'self_attn.o_proj': o,
        'mlp.gate_proj': gateOut, 'mlp.up_proj': u, 'mlp.down_proj': d,
      },
    },
  };
}

function sameArray(a: Float32Array | null | undefined, b: Float32Array | null | undefined): boolean {
  if (!a || !b) return !a && !b;
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Why per-linear errors are not defined for this layer, or null when they are. */
function perLinearBlocker(q: ModelFolder, fp: ModelFolder, ql: LayerTensors, fl: LayerTensors): string | null {
  if (q.format.mayFoldScales) {
    return q.format.kind === 'awq'
      ? 'AutoAWQ layout: the writer may have folded AWQ scales into norms and linears, so only the whole layer is comparable'
      : 'AWQ: scales are folded into norms and linears, so only the whole layer is comparable';
  }
  if (q.shape.intermediateSize !== fp.shape.intermediateSize) return 'the FFN is padded: only the whole layer is comparable';
  if (!sameArray(ql.attnNorm, fl.attnNorm) || !sameArray(ql.ffnNorm, fl.ffnNorm) || !sameArray(ql.qNorm, fl.qNorm) || !sameArray(ql.kNorm, fl.kNorm)) {
    return 'the layer\'s norm weights differ from the FP model\'s: only the whole layer is comparable';
  }
  for (const k of LINEAR_KINDS) if (!sameArray(ql.bias[k], fl.bias[k])) return `${k} bias differs from the FP model's: only the whole layer is comparable`;
  return null;
}

function sumSqDiff(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s;
}

function sumSq(a: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * a[i]!;
  return s;
}

async function loadTokenizer(dir: string, shape: ModelShape): Promise<Tokenizer> {
  if (!existsSync(path.join(dir, 'tokenizer.json'))) {
    throw new ShoalError('SHOAL_ERR_TOKENIZER', `${dir} has no tokenizer.json; layer-error tokenizes --text with the reference model's tokenizer`);
  }
  const tok = await HfModelTokenizer.load(dir, { bos: shape.bosTokenId, eos: shape.eosTokenIds });
  if (!tok) throw new ShoalError('SHOAL_ERR_TOKENIZER', `${dir} has no usable tokenizer.json`);
  return tok;
}

/** Measures every decoder layer of opts.model against opts.reference (see the file comment). */
export async function measureLayerError(opts: LayerErrorOptions): Promise<LayerErrorResult> {
  const t0 = performance.now();
  const { samples, seqlen } = opts;
  if (!Number.isSafeInteger(samples) || samples < 1) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--samples ${samples} must be a positive integer`);
  if (!Number.isSafeInteger(seqlen) || seqlen < 1) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seqlen ${seqlen} must be a positive integer`);
  const fp = openModelFolder(opts.reference);
  let q: ModelFolder | null = null;
  try {
    q = openModelFolder(opts.model);
    checkSameArchitecture(q.shape, fp.shape, opts.model, opts.reference);
    const s = fp.shape;
    if (seqlen > s.maxPositionEmbeddings) {
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seqlen ${seqlen} is longer than the model's context (${s.maxPositionEmbeddings})`);
    }
    const docs = readCalibDocuments(opts.text, opts.sep ?? /\n\s*\n/);
    const tok = await loadTokenizer(opts.reference, s);
    const held = heldOutTokens(docs, tok, samples, seqlen);
    for (const t of held.tokens) {
      if (t < 0 || t >= s.vocabSize) throw new ShoalError('SHOAL_ERR_TOKENIZER', `the tokenizer produced id ${t}, outside the model's vocabulary 0..${s.vocabSize - 1}`);
    }
    const T = held.tokens.length;
    const D = s.hiddenSize;
    const invFreq = Float32Array.from(ropeInvFreq(s));
    const step = Math.max(1, Math.floor(CHUNK_TOKENS / seqlen)) * seqlen;
    const x = embedTokens(fp, held.tokens);
    const layers: LayerErrorReport[] = [];
    for (let l = 0; l < s.layers; l++) {
      const tl = performance.now();
      const fl = readLayer(fp, l);
      const ql = readLayer(q, l);
      const blocker = perLinearBlocker(q, fp, ql, fl);
      const lin = new Map<LinearKind, { err: number; ref: number }>();
      let errSq = 0;
      let contributionSq = 0;
      for (let c0 = 0; c0 < T; c0 += step) {
        const n = Math.min(step, T - c0);
        const xc = x.subarray(c0 * D, (c0 + n) * D);
        const f = await forwardLayer(s, s.intermediateSize, fl, xc, n, seqlen, invFreq, blocker === null);
        const qo = await forwardLayer(q.shape, q.shape.intermediateSize, ql, xc, n, seqlen, invFreq, false);
        errSq += sumSqDiff(qo.y, f.y);
        contributionSq += sumSqDiff(f.y, xc);
        if (f.acts) {
          const A = f.acts;
          const inputs: Record<LinearKind, { x: Float32Array; K: number }> = {
            'self_attn.q_proj': { x: A.h, K: D }, 'self_attn.k_proj': { x: A.h, K: D }, 'self_attn.v_proj': { x: A.h, K: D },
            'self_attn.o_proj': { x: A.a, K: s.heads * s.headDim },
            'mlp.gate_proj': { x: A.h2, K: D }, 'mlp.up_proj': { x: A.h2, K: D }, 'mlp.down_proj': { x: A.m, K: s.intermediateSize },
          };
          for (const kind of ql.quantized.length > 0 ? ql.quantized : LINEAR_KINDS) {
            const N = fl.w[kind].length / inputs[kind].K;
            // ŴX + b − (WX + b) = (Ŵ − W)X: the biases are equal here
            const yq = await linear(inputs[kind].x, n, ql.w[kind], N, inputs[kind].K, fl.bias[kind] ?? null);
            const acc = lin.get(kind) ?? { err: 0, ref: 0 };
            acc.err += sumSqDiff(yq, A.out[kind]);
            const ref = A.out[kind];
            const bias = fl.bias[kind];
            if (bias) {
              // ‖WX‖²: without the bias
              for (let r = 0; r < n; r++) for (let j = 0; j < N; j++) acc.ref += (ref[r * N + j]! - bias[j]!) ** 2;
            } else acc.ref += sumSq(ref);
            lin.set(kind, acc);
          }
        }
        xc.set(f.y); // the next layer's input is the FP output
      }
      const linears: Partial<Record<LinearKind, number>> | null = blocker === null ? {} : null;
      if (linears) for (const [k, v] of lin) linears[k] = v.ref > 0 ? v.err / v.ref : (v.err === 0 ? 0 : Infinity);
      const report: LayerErrorReport = {
        layer: l,
        relError: contributionSq > 0 ? errSq / contributionSq : (errSq === 0 ? 0 : Infinity),
        errSq, contributionSq, outputMse: errSq / (T * D),
        linears, linearsNote: blocker, quantizedLinears: ql.quantized.length,
        seconds: (performance.now() - tl) / 1000,
      };
      if (!Number.isFinite(report.relError)) throw new ShoalError('SHOAL_ERR_NUMERIC', `layer ${l}: the layer error is not finite (${report.relError}); the quantized weights hold NaN or Inf, or the FP layer does nothing on this text`);
      layers.push(report);
      opts.onLayer?.(report, s.layers);
    }
    const totErr = layers.reduce((a, r) => a + r.errSq, 0);
    const totRef = layers.reduce((a, r) => a + r.contributionSq, 0);
    return {
      model: opts.model, reference: opts.reference, format: q.format, samples, seqlen, tokens: T,
      documents: { first: held.first, count: held.count, total: docs.length },
      layers,
      meanRelError: layers.reduce((a, r) => a + r.relError, 0) / layers.length,
      totalRelError: totRef > 0 ? totErr / totRef : 0,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    q?.ck.close();
    fp.ck.close();
  }
}

const SHORT: Record<LinearKind, string> = {
  'self_attn.q_proj': 'q', 'self_attn.k_proj': 'k', 'self_attn.v_proj': 'v', 'self_attn.o_proj': 'o',
  'mlp.gate_proj': 'gate', 'mlp.up_proj': 'up', 'mlp.down_proj': 'down',
};

/** One line per layer for the terminal. */
export function formatLayerErrorLine(r: LayerErrorReport): string {
  const lin = r.linears
    ? `; per linear ‖(Ŵ−W)X‖²/‖WX‖²: ${Object.entries(r.linears).map(([k, v]) => `${SHORT[k as LinearKind]} ${v.toExponential(2)}`).join(' ')}`
    : '';
  return `layer ${r.layer}: ‖ŷ−y‖²/‖y−x‖² ${r.relError.toExponential(3)} (output mse ${r.outputMse.toExponential(2)}, ${r.quantizedLinears} linears quantized)${lin}`;
}
