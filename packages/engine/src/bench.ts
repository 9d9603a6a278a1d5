// bench.ts — end-to-end model benchmark: load, prefill, decode, time to first
// token, peak RSS, and decode speed as a fraction of the memory roofline
// (bandwidth ÷ weight bytes read per token), with the bandwidth measured here.
import { execFileSync } from 'node:child_process';
import { addonPath } from './addon.js';
import { loadModel } from './engine.js';
import { ShoalError } from '@shoal/common';
import type { LoadOptions, ModelInfo } from './types.js';

export interface BenchOptions extends LoadOptions {
  /** Default 512, or what fits the model's context beside the decoded tokens. */
  promptTokens?: number;
  /** Default 128, or a quarter of the model's context when that is smaller. */
  decodeTokens?: number;
  /** Skip the bandwidth measurement and use this value (GB/s). */
  bandwidthGBs?: number;
  onPhase?: (phase: string) => void;
}

export interface BenchResult {
  model: Pick<ModelInfo, 'dir' | 'arch' | 'quant' | 'dtype' | 'backend' | 'isa' | 'threads' | 'parameters' | 'weightBytes' | 'bytesPerToken'>;
  loadSeconds: number;
  repackSeconds: number;
  promptTokens: number;
  prefillTokensPerSecond: number;
  prefillGflops: number;
  timeToFirstTokenSeconds: number;
  decodeTokens: number;
  decodeTokensPerSecond: number;
  decodeEffectiveGBs: number;
  memoryBandwidthGBs: number;
  rooflineTokensPerSecond: number;
  rooflineFraction: number;
  kvCache: string;          // KV cache element type
  kvCacheBytes: number;
  peakRssBytes: number;
  peakRssBudgetBytes: number; // 1.15 × weights + KV cache + 150 MB
}

/**
 * Memory read bandwidth in GB/s, measured in a child process so its 1 GiB
 * buffer does not count toward this process's peak RSS.
 */
export function measureBandwidth(threads = 0): number {
  const script = 'console.log(require(process.argv[1]).measureBandwidth(Number(process.argv[2]), 2 ** 30, 5))';
  const out = execFileSync(process.execPath, ['-e', script, addonPath(), String(threads)], { encoding: 'utf8' });
  return Number(out.trim());
}

/** Deterministic pseudo-random token ids (prompts for synthetic models). */
export function benchPrompt(n: number, vocab: number, seed = 1): number[] {
  let s = seed >>> 0;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out.push(3 + (s % Math.max(1, vocab - 3)));
  }
  return out;
}

/**
 * Prompt and decode lengths for a model with `contextLength` positions:
 * defaults shrink to fit (stories260K has 512), explicit values that cannot
 * fit are refused — a benchmark that decodes nothing would report 0 tok/s.
 */
export function benchSizes(contextLength: number, promptTokens?: number, decodeTokens?: number): { prompt: number; decode: number } {
  const decode = decodeTokens ?? Math.max(1, Math.min(128, Math.floor(contextLength / 4)));
  const prompt = promptTokens ?? Math.min(512, contextLength - decode);
  if (prompt < 1 || decode < 1 || prompt + decode > contextLength) {
    const what = [promptTokens !== undefined ? `--prompt-tokens ${prompt}` : `${prompt} prompt tokens`,
      decodeTokens !== undefined ? `--decode-tokens ${decode}` : `${decode} decoded tokens`].join(' + ');
    throw new ShoalError('SHOAL_ERR_INVALID_ARG',
      `${what} do not fit in the model's context of ${contextLength} positions; ` +
      `use at most ${Math.max(1, contextLength - decode)} prompt tokens with ${decode} decoded (or fewer decoded tokens)`);
  }
  return { prompt, decode };
}

export async function runBench(dir: string, o: BenchOptions = {}): Promise<BenchResult> {
  o.onPhase?.('measuring memory bandwidth');
  const bandwidth = o.bandwidthGBs ?? measureBandwidth(o.threads ?? 0);
  o.onPhase?.('loading model');
  const model = await loadModel(dir, { ...o, tokenizer: false });
  try {
    const info = model.info;
    if (info.backendNote) o.onPhase?.(info.backendNote);
    const { prompt: nPrompt, decode: nDecode } = benchSizes(info.contextLength, o.promptTokens, o.decodeTokens);
    const ctx = Math.min(info.contextLength, nPrompt + nDecode + 8);
    const prompt = benchPrompt(nPrompt, info.vocabSize);

    // Prefill: one eval of the whole prompt (chunked natively).
    o.onPhase?.(`prefill ${nPrompt} tokens`);
    const s1 = model.createSession({ contextSize: ctx });
    const t0 = performance.now();
    await s1.eval(prompt);
    const prefillSeconds = (performance.now() - t0) / 1000;
    s1.dispose();

    // Decode: greedy generation after the same prompt; TTFT includes prefill.
    o.onPhase?.(`decode ${nDecode} tokens`);
    const s2 = model.createSession({ contextSize: ctx });
    const gen = s2.generate(prompt, { maxTokens: nDecode, temperature: 0, stopTokenIds: [] });
    let stats;
    for (;;) {
      const r = await gen.next();
      if (r.done) { stats = r.value; break; }
    }
    s2.dispose();

    const decodeTps = stats.decodeTokensPerSecond;
    const linearFlops = 2 * (info.parameters - info.vocabSize * info.hiddenSize * (info.tiedEmbeddings ? 1 : 2)) + 2 * info.vocabSize * info.hiddenSize;
    const kvBytes = info.kvBytesPerPosition * ctx;
    const peakRss = process.resourceUsage().maxRSS * 1024;
    const roofline = (bandwidth * 1e9) / info.bytesPerToken;
    return {
      model: {
        dir: info.dir, arch: info.arch, quant: info.quant, dtype: info.dtype, backend: info.backend, isa: info.isa,
        threads: info.threads, parameters: info.parameters, weightBytes: info.weightBytes, bytesPerToken: info.bytesPerToken,
      },
      loadSeconds: info.loadSeconds,
      repackSeconds: info.repackSeconds,
      promptTokens: nPrompt,
      prefillTokensPerSecond: nPrompt / prefillSeconds,
      prefillGflops: (nPrompt * linearFlops) / prefillSeconds / 1e9,
      timeToFirstTokenSeconds: stats.timeToFirstToken,
      decodeTokens: stats.generatedTokens,
      decodeTokensPerSecond: decodeTps,
      decodeEffectiveGBs: (decodeTps * info.bytesPerToken) / 1e9,
      memoryBandwidthGBs: bandwidth,
      rooflineTokensPerSecond: roofline,
      rooflineFraction: decodeTps / roofline,
      kvCache: info.kvCache,
      kvCacheBytes: kvBytes,
      peakRssBytes: peakRss,
      peakRssBudgetBytes: 1.15 * info.weightBytes + kvBytes + 150e6,
    };
  } finally {
    model.dispose();
  }
}
