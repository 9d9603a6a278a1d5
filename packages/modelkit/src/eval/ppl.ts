// eval/ppl.ts — perplexity of a model on a text, with sliding windows.
//
// The text is tokenized without special tokens. Windows hold up to ctx
// positions: BOS (when the model has one) followed by ctx - 1 text tokens, or
// ctx text tokens without BOS. Window starts advance by `stride` text tokens
// (1..ctx-1); each window scores only the tokens no earlier window scored
// (Hugging Face's sliding-window recipe). With BOS every text token is scored
// exactly once (the first one is predicted from BOS alone); without BOS every
// token but the first is (windows overlap by at least one token).
// NLL = -log_softmax(logits)[target], summed in float64; perplexity = exp(mean NLL).
import type { Model } from '@shoal/engine';
import { ShoalError } from '@shoal/common';

export interface PerplexityOptions {
  /** Positions per window, BOS included (default min(512, context length)). */
  ctx?: number;
  /** Text tokens between window starts, 1..ctx-1 (default ctx - 1: with BOS no overlap, without BOS one token). */
  stride?: number;
  /** BOS id to put at the start of every window; default the model's; null = none. */
  bos?: number | null;
  onProgress?: (scoredTokens: number, totalTokens: number) => void;
  signal?: AbortSignal;
}

export interface PerplexityResult {
  ppl: number;
  /** mean negative log-likelihood (nats per token) */
  nll: number;
  /** tokens scored */
  tokens: number;
  windows: number;
  ctx: number;
  stride: number;
  seconds: number;
  tokensPerSecond: number;
}

/** log-softmax of row[target] in float64. */
export function logProb(row: ArrayLike<number>, target: number): number {
  let mx = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > mx) mx = row[i]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - mx);
  return row[target]! - mx - Math.log(sum);
}

/** Window plan: [begin, end) text ranges and how many leading tokens of each are context only. */
export function planWindows(n: number, ctx: number, stride: number, withBos: boolean): Array<{ begin: number; end: number; scoreFrom: number }> {
  const span = withBos ? ctx - 1 : ctx;
  const out: Array<{ begin: number; end: number; scoreFrom: number }> = [];
  let prevEnd = 0;
  for (let begin = 0; ; begin += stride) {
    const end = Math.min(begin + span, n);
    // without BOS the first token of the text has no prediction
    const scoreFrom = Math.max(prevEnd, withBos ? begin : begin + 1);
    if (end > scoreFrom) out.push({ begin, end, scoreFrom });
    prevEnd = end;
    if (end >= n) break;
  }
  return out;
}

/** Perplexity of `ids` (text tokens, no BOS) under `model`. */
export async function evaluatePerplexity(model: Model, ids: readonly number[], opts: PerplexityOptions = {}): Promise<PerplexityResult> {
  const t0 = performance.now();
  const info = model.info;
  const bos = opts.bos === undefined ? info.bosTokenId : opts.bos;
  const withBos = bos !== null && bos !== undefined && bos >= 0;
  const ctx = opts.ctx ?? Math.min(512, info.contextLength);
  if (!Number.isSafeInteger(ctx) || ctx < 2) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--ctx ${ctx} must be an integer >= 2`);
  if (ctx > info.contextLength) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--ctx ${ctx} is larger than the model's context length ${info.contextLength}; use --ctx ${info.contextLength} or less`);
  }
  const stride = opts.stride ?? ctx - 1;
  if (!Number.isSafeInteger(stride) || stride < 1 || stride > ctx - 1) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--stride ${stride} must be between 1 and ctx - 1 = ${ctx - 1}`);
  }
  const minTokens = withBos ? 1 : 2;
  if (ids.length < minTokens) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `the text has ${ids.length} tokens; perplexity needs at least ${minTokens}`);
  const V = info.vocabSize;
  for (const t of ids) {
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `token id ${t} is outside the model's vocabulary (0..${V - 1}); use the model's own tokenizer`);
  }
  const windows = planWindows(ids.length, ctx, stride, withBos);
  const total = windows.reduce((a, w) => a + (w.end - w.scoreFrom), 0);
  const session = model.createSession({ contextSize: ctx });
  let nllSum = 0;
  let scored = 0;
  try {
    for (const w of windows) {
      if (opts.signal?.aborted) throw new ShoalError('SHOAL_ERR_CANCELLED', 'perplexity evaluation cancelled');
      session.reset();
      const input = withBos ? [bos!, ...ids.slice(w.begin, w.end)] : ids.slice(w.begin, w.end);
      const logits = await session.eval(input, { allLogits: true });
      if (logits.length !== input.length * V) {
        throw new ShoalError('SHOAL_ERR_INTERNAL', `eval returned ${logits.length} logits for ${input.length} tokens x ${V}`);
      }
      const off = withBos ? 1 : 0; // input position of text token `begin`
      for (let t = w.scoreFrom; t < w.end; t++) {
        const predictor = t - w.begin + off - 1; // the row that predicts token t
        nllSum -= logProb(logits.subarray(predictor * V, (predictor + 1) * V), ids[t]!);
        scored++;
      }
      opts.onProgress?.(scored, total);
    }
  } finally {
    session.dispose();
  }
  const seconds = (performance.now() - t0) / 1000;
  const nll = nllSum / scored;
  return { ppl: Math.exp(nll), nll, tokens: scored, windows: windows.length, ctx, stride, seconds, tokensPerSecond: scored / seconds };
}

/** Formats the final line printed by `shoal eval ppl`. */
export function formatPplLine(r: PerplexityResult): string {
  return `ppl ${r.ppl.toFixed(3)} over ${r.tokens} tokens`;
}
