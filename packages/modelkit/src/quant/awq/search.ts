// awq/search.ts — the two searches of AWQ for one layer: the per-channel scale
// (α grid on the output MSE of the block a group of linears feeds) and the
// per-group clip (shrink of max|w| minimising the output error, evaluated
// exactly as dᵀ C d with the group's input second moments).
import { type LinearKind } from '../../arch/model-shapes.js';
import { applyRope } from '../../eval/reference-forward.js';
import { backendOps, linear, mse, type Precision } from './ops.js';
import { CLIP_STEPS, COARSE_STEP, N_GRID, forEachChunk, type AlphaSearch, type Ctx, type LayerWeights } from './layer.js';
import { ShoalError } from '@shoal/common';

export interface ScaleGroupReport {
  /** e.g. "input_layernorm→q,k,v" */
  name: string;
  alpha: number;
  /** output MSE at the chosen α */
  loss: number;
  /** output MSE at α = 0 (plain RTN of these linears when not duo) */
  lossAlpha0: number;
  /** every α evaluated and its loss, ascending α (all 20 with --alpha-search grid) */
  candidates: Array<{ alpha: number; loss: number }>;
}

// ---------------------------------------------------------------------------
// scale search
// ---------------------------------------------------------------------------

export interface ScaleTarget { kind: LinearKind; w: Float32Array; N: number }

/** Q(W·diag(s))·diag(s)⁻¹, on the host's cores (bit-identical to fake-quant.ts). */
export function qdqScaled(ctx: Ctx, w: Float32Array, N: number, K: number, s: Float64Array | null): Promise<Float32Array> {
  return backendOps().fakeQuant(w, N, K, ctx.G, ctx.bits, s);
}

/** Output loss of one candidate set of weights (one array per ScaleTarget, same order). */
export type CandidateLoss = (ws: Float32Array[]) => Promise<number>;

/**
 * The α grid of AWQ's scale search: s = xMean^α (duo: / wMean^(1−α)), and the α
 * whose candidate weights Q(W·diag(s))·diag(s)⁻¹ give the lowest `loss`.
 * xMean: per-channel mean |x| of the group's input over all calibration tokens.
 */
export async function searchScale(ctx: Ctx, name: string, xMean: Float64Array, K: number, targets: ScaleTarget[],
  loss: CandidateLoss): Promise<{ scales: Float64Array; report: ScaleGroupReport }> {
  let wMean: Float64Array | null = null;
  if (ctx.duo) {
    // column mean of |w| / max|w| of its group, over the rows of all targets (AutoAWQ)
    wMean = new Float64Array(K);
    let rows = 0;
    for (const t of targets) {
      for (let n = 0; n < t.N; n++) {
        const o = n * K;
        for (let g0 = 0; g0 < K; g0 += ctx.G) {
          let mx = 0;
          for (let k = g0; k < g0 + ctx.G; k++) mx = Math.max(mx, Math.abs(t.w[o + k]!));
          const inv = 1 / (mx + 1e-6);
          for (let k = g0; k < g0 + ctx.G; k++) wMean[k] = wMean[k]! + Math.abs(t.w[o + k]!) * inv;
        }
      }
      rows += t.N;
    }
    for (let k = 0; k < K; k++) wMean[k] = wMean[k]! / rows;
  }
  const candidate = async (i: number): Promise<{ loss: number; scales: Float64Array<ArrayBuffer> }> => {
    const alpha = i / N_GRID;
    const s = new Float64Array(K);
    let mx = 0;
    let mn = Infinity;
    for (let k = 0; k < K; k++) {
      let v = Math.pow(xMean[k]!, alpha);
      if (wMean) v = v / (Math.pow(wMean[k]!, 1 - alpha) + 1e-4);
      v = Math.max(v, 1e-4);
      s[k] = v;
      if (v > mx) mx = v;
      if (v < mn) mn = v;
    }
    const norm = Math.sqrt(mx * mn);
    for (let k = 0; k < K; k++) s[k] = s[k]! / norm;
    const ws: Float32Array[] = [];
    for (const t of targets) ws.push(ctx.quantized.has(t.kind) ? await qdqScaled(ctx, t.w, t.N, K, s) : t.w);
    return { loss: await loss(ws), scales: s };
  };
  const scalesOf = new Map<number, Float64Array<ArrayBuffer>>();
  const walk = await walkAlphaGrid(ctx.alphaSearch, async (i) => {
    const c = await candidate(i);
    scalesOf.set(i, c.scales);
    return c.loss;
  });
  if (walk.best < 0) {
    throw new ShoalError('SHOAL_ERR_NUMERIC', `AWQ scale search for ${name} found no finite loss; the model or the calibration activations contain NaN/Inf`);
  }
  const candidates = [...walk.losses.keys()].sort((p, q) => p - q).map((i) => ({ alpha: i / N_GRID, loss: walk.losses.get(i)! }));
  return {
    scales: scalesOf.get(walk.best)!,
    report: { name, alpha: walk.best / N_GRID, loss: walk.loss, lossAlpha0: walk.losses.get(0)!, candidates },
  };
}

/**
 * Walks the α grid i = 0..N_GRID−1 (α = i / N_GRID) with `evaluate(i)` → loss:
 * 'grid' evaluates every i; 'coarse-fine' every COARSE_STEP-th i (0 included),
 * then the i within COARSE_STEP − 1 of the best of those. If the loss is
 * unimodal over the grid its minimum lies strictly between the coarse
 * neighbours of the best coarse point, so both walks pick the same i (5 + ≤ 6
 * instead of 20 evaluations). best: the lowest finite loss, the smallest i on
 * ties (as one ascending pass picks); −1 when no loss is finite.
 */
export async function walkAlphaGrid(mode: AlphaSearch, evaluate: (i: number) => Promise<number>): Promise<{ best: number; loss: number; losses: Map<number, number> }> {
  const losses = new Map<number, number>();
  const pick = () => {
    let best = -1;
    let loss = Infinity;
    for (const i of [...losses.keys()].sort((p, q) => p - q)) {
      if (losses.get(i)! < loss) {
        loss = losses.get(i)!;
        best = i;
      }
    }
    return { best, loss };
  };
  const step = mode === 'coarse-fine' ? COARSE_STEP : 1;
  for (let i = 0; i < N_GRID; i += step) losses.set(i, await evaluate(i));
  if (mode === 'coarse-fine') {
    const c = pick().best;
    if (c >= 0) {
      for (let i = Math.max(0, c - COARSE_STEP + 1); i <= Math.min(N_GRID - 1, c + COARSE_STEP - 1); i++) {
        if (!losses.has(i)) losses.set(i, await evaluate(i));
      }
    }
  }
  return { ...pick(), losses };
}

/**
 * Candidate loss of a block whose output is one linear's output (v→o: o_proj,
 * up→down: down_proj), from the input Gram matrix C = XᵀX / T [K, K] instead of
 * the product over all T tokens: with d_n = ŵ_n − w_n (the bias cancels),
 *   mean_{t,n} (x_t·d_n)² = Σ_n d_n C d_nᵀ / N,
 * the same MSE as mse(X·Ŵᵀ, X·Wᵀ), exactly up to rounding. One backend GEMM
 * D·C [N, K] per candidate (C symmetric), summed in f64.
 */
export function gramLoss(C: Float32Array, w: Float32Array, N: number, K: number, precision: Precision = 'f32'): CandidateLoss {
  return async ([wq]) => {
    const d = new Float32Array(N * K);
    for (let i = 0; i < d.length; i++) d[i] = wq![i]! - w[i]!;
    const E = await backendOps().matmul(d, N, C, K, K, precision);
    let s = 0;
    for (let i = 0; i < d.length; i++) s += E[i]! * d[i]!;
    return s / N;
  };
}

/**
 * Candidate loss by running the block on the search tokens: mse(block(ws), ref)
 * over x [ctx.T, D], chunk by chunk of whole blocks (layer.forEachChunk), so a
 * candidate's [T, F] intermediates are never held for all search tokens at once.
 */
export function forwardLoss(ctx: Ctx, x: Float32Array, ref: Float32Array,
  block: (ctxc: Ctx, xc: Float32Array, ws: Float32Array[]) => Promise<Float32Array>): CandidateLoss {
  const D = ctx.shape.hiddenSize;
  return async (ws) => {
    let se = 0;
    await forEachChunk(ctx, x, async (ctxc, xc, t0) => {
      const out = await block(ctxc, xc, ws);
      se += mse(out, ref.subarray(t0 * D, t0 * D + out.length)) * out.length;
    });
    return se / (ctx.T * D);
  };
}

// ---------------------------------------------------------------------------
// clip search
// ---------------------------------------------------------------------------

/** Indices of the calibration tokens the clip search uses: every ⌊T / clipTokens⌋-th (llm-awq's stride). */
export function clipSampleRows(ctx: Ctx): number[] {
  const step = Math.max(1, Math.floor(ctx.T / ctx.clipTokens));
  const rows: number[] = [];
  for (let t = 0; t < ctx.T; t += step) rows.push(t);
  return rows;
}

/**
 * Second-moment matrix C_g = Σ_r x_rg x_rgᵀ / |rows| of every input group g
 * (G columns) over the given rows of x [*, K]: [K/G] × [G, G]. One backend
 * GEMM per group (X_gᵀ·X_g, inputs pre-scaled by 1/√|rows| so that an f16
 * backend holds the mean, not the sum).
 */
export async function groupGrams(x: Float32Array, K: number, G: number, rows: readonly number[]): Promise<Float32Array[]> {
  const S = rows.length;
  const r = 1 / Math.sqrt(S);
  const xgT = new Float32Array(G * S); // X_gᵀ [G, S]
  const grams: Float32Array[] = [];
  for (let g = 0; g < K / G; g++) {
    rows.forEach((t, i) => {
      const o = t * K + g * G;
      for (let a = 0; a < G; a++) xgT[a * S + i] = x[o + a]! * r;
    });
    grams.push(await backendOps().matmul(xgT, G, xgT, G, S));
  }
  return grams;
}

/**
 * Per output row and group of w [N, K], the clamp max(|w|)·(1 − i/20) that
 * minimises dᵀ C_g d (d = Q(clamp(w)) − w; C_g from groupGrams); clamps w in
 * place and returns the mean shrink.
 */
export async function searchClip(ctx: Ctx, w: Float32Array, N: number, K: number, grams: readonly Float32Array[]): Promise<number> {
  const G = ctx.G;
  const ng = K / G;
  let shrinkSum = 0;
  for (let g = 0; g < ng; g++) {
    const C = grams[g]!;
    // deltas d = Q(clamp(w)) − w for every (row, shrink): [N, CLIP_STEPS, G]
    const Dm = await backendOps().clipDeltas(w, N, K, G, g, ctx.bits, CLIP_STEPS, N_GRID);
    const orgMax = new Float32Array(N);
    for (let n = 0; n < N; n++) {
      const wo = n * K + g * G;
      let m = 0;
      for (let j = 0; j < G; j++) m = Math.max(m, Math.abs(w[wo + j]!));
      orgMax[n] = m;
    }
    const E = await backendOps().matmul(Dm, N * CLIP_STEPS, C, G, G); // D · C (C symmetric)
    for (let n = 0; n < N; n++) {
      let bestI = 0;
      let bestErr = Infinity;
      for (let i = 0; i < CLIP_STEPS; i++) {
        const r = (n * CLIP_STEPS + i) * G;
        let e = 0;
        for (let j = 0; j < G; j++) e += E[r + j]! * Dm[r + j]!;
        if (e < bestErr) {
          bestErr = e;
          bestI = i;
        }
      }
      if (bestI > 0) {
        const mv = orgMax[n]! * (1 - bestI / N_GRID);
        const wo = n * K + g * G;
        for (let j = 0; j < G; j++) w[wo + j] = Math.min(mv, Math.max(-mv, w[wo + j]!));
      }
      shrinkSum += bestI / N_GRID;
    }
  }
  return shrinkSum / (N * ng);
}

/**
 * The inputs of v_proj as o_proj sees them: v's error reaches o_proj only after
 * each query head's attention averaging, ā^q_t = Σ_s p^q_ts x_s (causal, within
 * the token's block of seqlen, RoPE scores scaled by 1/√hd). Returns, per kv head,
 * ā for the given rows and every query head that reads that kv head:
 * [kvHeads] × [rows.length · heads/kvHeads, D].
 * Only the sampled rows' probabilities are formed; each block's P [rows·heads, seqlen]
 * times its inputs X_b [seqlen, D] is one backend GEMM.
 */
export async function attentionAveragedInputs(ctx: Pick<Ctx, 'shape' | 'T' | 'seqlen' | 'invFreq'>, h: Float32Array,
  qk: Pick<LayerWeights, 'w' | 'bias'>, rows: readonly number[]): Promise<Float32Array[]> {
  const s = ctx.shape;
  const D = s.hiddenSize;
  const hd = s.headDim;
  const L = ctx.seqlen;
  const qd = s.heads * hd;
  const kvd = s.kvHeads * hd;
  const perKv = s.heads / s.kvHeads;
  const scale = 1 / Math.sqrt(hd);
  // q of the sampled rows [rows, qd]; k of every row [T, kvd]; both rotated
  const hs = new Float32Array(rows.length * D);
  rows.forEach((t, i) => hs.set(h.subarray(t * D, (t + 1) * D), i * D));
  const q = await linear(hs, rows.length, qk.w['self_attn.q_proj'], qd, D, qk.bias['self_attn.q_proj'] ?? null);
  rows.forEach((t, i) => applyRope(q.subarray(i * qd, (i + 1) * qd), s.heads, hd, t % L, ctx.invFreq));
  const k = await linear(h, ctx.T, qk.w['self_attn.k_proj'], kvd, D, qk.bias['self_attn.k_proj'] ?? null);
  for (let t = 0; t < ctx.T; t++) applyRope(k.subarray(t * kvd, (t + 1) * kvd), s.kvHeads, hd, t % L, ctx.invFreq);

  const out = Array.from({ length: s.kvHeads }, () => new Float32Array(rows.length * perKv * D));
  const xT = new Float32Array(D * L);
  for (let i0 = 0; i0 < rows.length;) {
    // the sampled rows of one block
    const b = Math.floor(rows[i0]! / L);
    let i1 = i0;
    while (i1 < rows.length && Math.floor(rows[i1]! / L) === b) i1++;
    const n = i1 - i0;
    const P = new Float32Array(n * s.heads * L);
    for (let i = i0; i < i1; i++) {
      const pos = rows[i]! % L;
      for (let qh = 0; qh < s.heads; qh++) {
        const pr = ((i - i0) * s.heads + qh) * L;
        const qo = i * qd + qh * hd;
        const ko = Math.floor(qh / perKv) * hd;
        let mx = -Infinity;
        for (let j = 0; j <= pos; j++) {
          const kr = (b * L + j) * kvd + ko;
          let dot = 0;
          for (let c = 0; c < hd; c++) dot += q[qo + c]! * k[kr + c]!;
          P[pr + j] = dot * scale;
          if (P[pr + j]! > mx) mx = P[pr + j]!;
        }
        let z = 0;
        for (let j = 0; j <= pos; j++) {
          const e = Math.exp(P[pr + j]! - mx);
          P[pr + j] = e;
          z += e;
        }
        for (let j = 0; j <= pos; j++) P[pr + j] = P[pr + j]! / z;
      }
    }
    // X_bᵀ [D, L] so that ops.matmul (x·wᵀ) gives P·X_b
    for (let j = 0; j < L; j++) {
      const xo = (b * L + j) * D;
      for (let c = 0; c < D; c++) xT[c * L + j] = h[xo + c]!;
    }
    const M = await backendOps().matmul(P, n * s.heads, xT, D, L); // [n·heads, D]
    for (let i = i0; i < i1; i++) {
      for (let qh = 0; qh < s.heads; qh++) {
        const src = ((i - i0) * s.heads + qh) * D;
        out[Math.floor(qh / perKv)]!.set(M.subarray(src, src + D), (i * perKv + (qh % perKv)) * D);
      }
    }
    i0 = i1;
  }
  return out;
}

