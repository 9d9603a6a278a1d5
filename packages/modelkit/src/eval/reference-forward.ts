// reference-forward.ts — an independent, plain float64 forward pass of a
// LLaMA-family checkpoint in TypeScript (no native code). It is the yardstick
// the native kernels are tested against, so it favours clarity over speed and
// is meant for small models (every weight is held as float64).
//
//   x = embed[token]
//   per layer:  h = rmsnorm(x) * g_attn
//               q, k, v = Wq h + bq, Wk h + bk, Wv h + bv      (biases: Qwen2 / attention_bias)
//               q, k = rope(q, pos), rope(k, pos)              (HF rotate_half layout)
//               a = softmax(q k^T / sqrt(hd), causal) v         (GQA: head h uses kv head h / (H/Hkv))
//               x += Wo a (+ bo)
//               h = rmsnorm(x) * g_ffn
//               x += Wdown (silu(Wgate h) * Wup h)
//   logits = lm_head(rmsnorm(x) * g_final)                    (lm_head = embed when tied)
//
// AWQ linears are dequantized with formats/awq.ts: w = (q - z) * s.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { dequantizeAwq, unpackAwq } from '../formats/awq.js';
import { roundHalfEven } from '../quant/grid.js';
import {
  isNotConverted, LINEAR_KINDS, linearDims, parseModelConfig,
  type LinearKind, type ModelShape, type QuantConfig,
} from '../arch/model-shapes.js';
import { Checkpoint } from '../io/safetensors.js';
import { f16ToF32, f64ToF16 } from '../io/dtypes.js';
import { ShoalError } from '@shoal/common';

export interface RefLinear {
  out: number;
  in: number;
  /** [out, in] row-major */
  w: Float64Array;
  bias: Float64Array | null;
  quantized: boolean;
  /** AWQ only (for EngineNumerics): q*s as [out, in], f16(-s*z) as [out, in/G], and G. */
  qs?: Float64Array;
  szero?: Float64Array;
  group?: number;
}

/**
 * Optional emulation of the native CPU engine's documented approximations for
 * AWQ linears (native/backend/cpu/kernels.h, q4-repack.h), so its output can be
 * checked tightly rather than against the exact math with a loose bound:
 *  - f16ScaledZeros: weights are q*s + f16(-s*z) (the repacked -s*z is f16);
 *  - q8From: at positions >= q8From (decode steps), AWQ linears see int8
 *    activations, x ~ round(x/d)*d with d = max|x|/127 per 32-block, while the
 *    -s*z term uses the exact group sums.
 * Unset = exact float64 math on the checkpoint's values.
 */
export interface EngineNumerics {
  f16ScaledZeros?: boolean;
  q8From?: number;
}

export interface RefLayer {
  attnNorm: Float64Array;
  ffnNorm: Float64Array;
  linears: Record<LinearKind, RefLinear>;
}

export interface ReferenceModel {
  dir: string;
  shape: ModelShape;
  quant: QuantConfig | null;
  /** [V, D] */
  embed: Float64Array;
  layers: RefLayer[];
  finalNorm: Float64Array;
  /** [V, D]; the embedding when tied */
  lmHead: Float64Array;
  /** RoPE inverse frequencies (after scaling), headDim / 2 of them */
  invFreq: Float64Array;
}

function readJson(file: string, required: boolean): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    if (!required && (err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new ShoalError('SHOAL_ERR_CONFIG', `cannot read ${file}: ${(err as Error).message}; the model folder needs a valid config.json`);
  }
}

function expectShape(ck: Checkpoint, name: string, shape: number[]): void {
  const e = ck.entry(name);
  if (e.shape.length !== shape.length || e.shape.some((d, i) => d !== shape[i])) {
    throw new ShoalError('SHOAL_ERR_SHAPE', `${ck.dir}: tensor ${name} has shape [${e.shape}], config.json implies [${shape}]`);
  }
}

function loadFloat(ck: Checkpoint, name: string, shape: number[]): Float64Array {
  expectShape(ck, name, shape);
  return ck.readFloat64(name);
}

function loadLinear(ck: Checkpoint, module: string, kind: LinearKind, shape: ModelShape, quant: QuantConfig | null): RefLinear {
  const d = linearDims(shape, kind);
  const hasBias = ck.has(`${module}.bias`);
  if (d.bias && !hasBias) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${ck.dir}: ${module}.bias is missing (the architecture has q/k/v biases)`);
  const bias = hasBias ? loadFloat(ck, `${module}.bias`, [d.out]) : null;
  if (ck.has(`${module}.qweight`)) {
    if (!quant) throw new ShoalError('SHOAL_ERR_CONFIG', `${ck.dir}: ${module} is quantized but config.json has no quantization_config`);
    if (isNotConverted(module, quant.modulesToNotConvert)) {
      throw new ShoalError('SHOAL_ERR_CONFIG', `${ck.dir}: ${module} is quantized but listed in modules_to_not_convert`);
    }
    const G = quant.groupSize;
    if (d.in % G !== 0) throw new ShoalError('SHOAL_ERR_GROUP_SIZE', `${ck.dir}: group size ${G} does not divide in_features ${d.in} of ${module}`);
    expectShape(ck, `${module}.qweight`, [d.in, d.out / 8]);
    expectShape(ck, `${module}.qzeros`, [d.in / G, d.out / 8]);
    expectShape(ck, `${module}.scales`, [d.in / G, d.out]);
    const se = ck.entry(`${module}.scales`);
    if (se.dtype !== 'F16') throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${ck.dir}: ${module}.scales is ${se.dtype}, AutoAWQ gemm stores F16`);
    const qweight = ck.readInt32(`${module}.qweight`);
    const qzeros = ck.readInt32(`${module}.qzeros`);
    const scales = ck.read(`${module}.scales`) as Uint16Array;
    const w = dequantizeAwq(qweight, qzeros, scales, d.in, d.out, G);
    // q*s and f16(-s*z) for EngineNumerics
    const q = unpackAwq(qweight, d.in, d.out);
    const z = unpackAwq(qzeros, d.in / G, d.out);
    const qs = new Float64Array(d.out * d.in);
    const szero = new Float64Array(d.out * (d.in / G));
    for (let k = 0; k < d.in; k++) {
      const g = Math.floor(k / G);
      for (let n = 0; n < d.out; n++) {
        const sc = f16ToF32(scales[g * d.out + n]!);
        qs[n * d.in + k] = q[k * d.out + n]! * sc;
        if (k % G === 0) szero[n * (d.in / G) + g] = f16ToF32(f64ToF16(-sc * z[g * d.out + n]!));
      }
    }
    return { out: d.out, in: d.in, w, bias, quantized: true, qs, szero, group: G };
  }
  return { out: d.out, in: d.in, w: loadFloat(ck, `${module}.weight`, [d.out, d.in]), bias, quantized: false };
}

/** RoPE inverse frequencies per HF (default, linear, llama3). */
export function ropeInvFreq(shape: ModelShape): Float64Array {
  const d = shape.headDim;
  const half = d / 2;
  const inv = new Float64Array(half);
  for (let i = 0; i < half; i++) inv[i] = 1 / Math.pow(shape.ropeTheta, (2 * i) / d);
  const rs = shape.ropeScaling;
  if (rs?.type === 'linear') {
    for (let i = 0; i < half; i++) inv[i] = inv[i]! / rs.factor;
  } else if (rs?.type === 'llama3') {
    const factor = rs.factor;
    const low = rs.lowFreqFactor ?? 1;
    const high = rs.highFreqFactor ?? 4;
    const oldCtx = rs.originalMaxPositionEmbeddings ?? 8192;
    const lowWavelen = oldCtx / low;
    const highWavelen = oldCtx / high;
    for (let i = 0; i < half; i++) {
      const f = inv[i]!;
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) continue; // high frequency: unchanged
      if (wavelen > lowWavelen) { inv[i] = f / factor; continue; } // low frequency: scaled
      const smooth = (oldCtx / wavelen - low) / (high - low);
      inv[i] = (1 - smooth) * (f / factor) + smooth * f;
    }
  }
  return inv;
}

/** Loads a checkpoint folder into float64 arrays. */
export function loadReferenceModel(dir: string): ReferenceModel {
  const config = readJson(path.join(dir, 'config.json'), true);
  const gen = readJson(path.join(dir, 'generation_config.json'), false);
  const { shape, quant } = parseModelConfig(config, gen, path.join(dir, 'config.json'));
  const ck = Checkpoint.open(dir);
  try {
    const D = shape.hiddenSize;
    const V = shape.vocabSize;
    const embed = loadFloat(ck, 'model.embed_tokens.weight', [V, D]);
    const layers: RefLayer[] = [];
    for (let l = 0; l < shape.layers; l++) {
      const p = `model.layers.${l}`;
      const linears = {} as Record<LinearKind, RefLinear>;
      for (const kind of LINEAR_KINDS) linears[kind] = loadLinear(ck, `${p}.${kind}`, kind, shape, quant);
      layers.push({
        attnNorm: loadFloat(ck, `${p}.input_layernorm.weight`, [D]),
        ffnNorm: loadFloat(ck, `${p}.post_attention_layernorm.weight`, [D]),
        linears,
      });
    }
    const finalNorm = loadFloat(ck, 'model.norm.weight', [D]);
    let lmHead: Float64Array;
    if (ck.has('lm_head.weight') && !shape.tieWordEmbeddings) lmHead = loadFloat(ck, 'lm_head.weight', [V, D]);
    else if (shape.tieWordEmbeddings) lmHead = embed;
    else throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${dir}: lm_head.weight is missing and tie_word_embeddings is false`);
    return { dir, shape, quant, embed, layers, finalNorm, lmHead, invFreq: ropeInvFreq(shape) };
  } finally {
    ck.close();
  }
}

// ---------------------------------------------------------------------------
// math
// ---------------------------------------------------------------------------

function rmsnorm(x: Float64Array, g: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (let i = 0; i < x.length; i++) ss += x[i]! * x[i]!;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = x[i]! * r * g[i]!;
  return out;
}

/** Linear with the engine's approximations (see EngineNumerics) for AWQ weights. */
function matvecNumerics(l: RefLinear, x: Float64Array, f16ScaledZeros: boolean, q8: boolean): Float64Array {
  if (!l.quantized || !l.qs || !l.szero || !l.group || (!f16ScaledZeros && !q8)) return matvec(l, x);
  const K = l.in;
  const G = l.group;
  const ng = K / G;
  let xa = x;
  if (q8) {
    xa = new Float64Array(K);
    for (let b = 0; b < K / 32; b++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[32 * b + j]!));
      const d = Math.fround(amax / 127);
      const id = amax > 0 ? Math.fround(127 / amax) : 0;
      for (let j = 0; j < 32; j++) xa[32 * b + j] = roundHalfEven(Math.fround(x[32 * b + j]! * id)) * d;
    }
  }
  const gsum = new Float64Array(ng);
  for (let g = 0; g < ng; g++) for (let j = 0; j < G; j++) gsum[g] = gsum[g]! + x[g * G + j]!;
  const out = new Float64Array(l.out);
  for (let o = 0; o < l.out; o++) {
    let acc = 0;
    for (let k = 0; k < K; k++) acc += l.qs[o * K + k]! * xa[k]!;
    for (let g = 0; g < ng; g++) acc += l.szero[o * ng + g]! * gsum[g]!;
    out[o] = l.bias ? acc + l.bias[o]! : acc;
  }
  return out;
}

function matvec(l: RefLinear, x: Float64Array): Float64Array {
  const out = new Float64Array(l.out);
  const K = l.in;
  for (let o = 0; o < l.out; o++) {
    let s = 0;
    const row = o * K;
    for (let k = 0; k < K; k++) s += l.w[row + k]! * x[k]!;
    out[o] = l.bias ? s + l.bias[o]! : s;
  }
  return out;
}

/** Applies HF rotate_half RoPE in place to each head of vec (heads * hd). */
export function applyRope(vec: Float32Array | Float64Array, heads: number, hd: number, pos: number, invFreq: ArrayLike<number>): void {
  const half = hd / 2;
  for (let i = 0; i < half; i++) {
    const a = pos * invFreq[i]!;
    const c = Math.cos(a);
    const s = Math.sin(a);
    for (let h = 0; h < heads; h++) {
      const b = h * hd;
      const x0 = vec[b + i]!;
      const x1 = vec[b + i + half]!;
      vec[b + i] = x0 * c - x1 * s;
      vec[b + i + half] = x1 * c + x0 * s;
    }
  }
}

function silu(x: number): number {
  return x / (1 + Math.exp(-x));
}

/**
 * Logits for every position of `tokens` (positions 0..n-1, causal). Returns one
 * Float64Array of vocab values per position.
 */
export function referenceForward(m: ReferenceModel, tokens: readonly number[], numerics: EngineNumerics = {}): Float64Array[] {
  const f16z = numerics.f16ScaledZeros ?? false;
  const q8From = numerics.q8From ?? Infinity;
  const mv = (l: RefLinear, x: Float64Array, p: number) => matvecNumerics(l, x, f16z, p >= q8From);
  const s = m.shape;
  const D = s.hiddenSize;
  const V = s.vocabSize;
  const H = s.heads;
  const Hkv = s.kvHeads;
  const hd = s.headDim;
  const rep = H / Hkv;
  const n = tokens.length;
  const scale = 1 / Math.sqrt(hd);
  for (const t of tokens) {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `token ${t} is outside the vocabulary 0..${V - 1}`);
  }
  const xs: Float64Array[] = tokens.map((t) => m.embed.slice(t * D, (t + 1) * D));
  for (const layer of m.layers) {
    const L = layer.linears;
    const qs: Float64Array[] = [];
    const ks: Float64Array[] = [];
    const vs: Float64Array[] = [];
    for (let p = 0; p < n; p++) {
      const h = rmsnorm(xs[p]!, layer.attnNorm, s.rmsNormEps);
      const q = mv(L['self_attn.q_proj'], h, p);
      const k = mv(L['self_attn.k_proj'], h, p);
      applyRope(q, H, hd, p, m.invFreq);
      applyRope(k, Hkv, hd, p, m.invFreq);
      qs.push(q);
      ks.push(k);
      vs.push(mv(L['self_attn.v_proj'], h, p));
    }
    for (let p = 0; p < n; p++) {
      const att = new Float64Array(H * hd);
      const scores = new Float64Array(p + 1);
      for (let h = 0; h < H; h++) {
        const kvh = Math.floor(h / rep);
        const q = qs[p]!;
        let mx = -Infinity;
        for (let t = 0; t <= p; t++) {
          const k = ks[t]!;
          let dot = 0;
          for (let i = 0; i < hd; i++) dot += q[h * hd + i]! * k[kvh * hd + i]!;
          scores[t] = dot * scale;
          if (scores[t]! > mx) mx = scores[t]!;
        }
        let sum = 0;
        for (let t = 0; t <= p; t++) {
          scores[t] = Math.exp(scores[t]! - mx);
          sum += scores[t]!;
        }
        for (let t = 0; t <= p; t++) {
          const w = scores[t]! / sum;
          const v = vs[t]!;
          for (let i = 0; i < hd; i++) att[h * hd + i] = att[h * hd + i]! + w * v[kvh * hd + i]!;
        }
      }
      const o = mv(L['self_attn.o_proj'], att, p);
      const x = xs[p]!;
      for (let i = 0; i < D; i++) x[i] = x[i]! + o[i]!;
    }
    for (let p = 0; p < n; p++) {
      const x = xs[p]!;
      const h = rmsnorm(x, layer.ffnNorm, s.rmsNormEps);
      const g = mv(L['mlp.gate_proj'], h, p);
      const u = mv(L['mlp.up_proj'], h, p);
      for (let i = 0; i < g.length; i++) g[i] = silu(g[i]!) * u[i]!;
      const dn = mv(L['mlp.down_proj'], g, p);
      for (let i = 0; i < D; i++) x[i] = x[i]! + dn[i]!;
    }
  }
  const head: RefLinear = { out: V, in: D, w: m.lmHead, bias: null, quantized: false };
  return xs.map((x) => matvec(head, rmsnorm(x, m.finalNorm, s.rmsNormEps)));
}

/** Convenience: load a folder and return its logits for tokens. */
export function referenceLogits(dir: string, tokens: readonly number[]): Float64Array[] {
  return referenceForward(loadReferenceModel(dir), tokens);
}

