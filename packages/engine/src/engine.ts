// engine.ts — the engine's TypeScript API (types.ts) over the native addon.
// Loading, evaluation and generation run on native worker threads; this file
// adds tokenization, option validation, streaming and cancellation.
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { addon } from './addon.js';
import { resolveExpertCache } from './expert-cache.js';
import { HfModelTokenizer } from './tokenizer.js';
import { KV_CACHE_TYPES, LM_HEAD_MODES, PRECISIONS } from './types.js';
import type { AddonModel, AddonSession } from './addon-types.js';
import { ConstraintCache, serveLoop } from './serve.js';
import { toolFormat, withMarkerToken } from './tool-format.js';
import type { ServeChunk, ServeOptions, ServeStats } from './serve-options.js';
import type {
  GenerateOptions, GenerateStats, GeneratedChunk, LoadOptions, Model, ModelInfo, Session, Tokenizer,
} from './types.js';
import { ShoalError } from '@shoal/common';

export type * from './types.js';

const invalid = (message: string) => new ShoalError('SHOAL_ERR_INVALID_ARG', message);

function checkInt(name: string, v: number | undefined, min: number, max: number): void {
  if (v === undefined) return;
  if (!Number.isInteger(v) || v < min || v > max) throw invalid(`${name} must be an integer in [${min}, ${max}], got ${v}`);
}
function checkNum(name: string, v: number | undefined, min: number, max: number): void {
  if (v === undefined) return;
  if (typeof v !== 'number' || !Number.isFinite(v) || v < min || v > max) throw invalid(`${name} must be a number in [${min}, ${max}], got ${v}`);
}

/** Validates sampling options with exact messages (the native side re-checks cheaply). */
export function validateGenerateOptions(o: GenerateOptions): void {
  checkNum('temperature', o.temperature, 0, 100);
  checkInt('topK', o.topK, 0, 1 << 30);
  checkNum('topP', o.topP, 0, 1);
  checkNum('minP', o.minP, 0, 1);
  checkNum('repeatPenalty', o.repeatPenalty, 0.01, 100);
  checkInt('repeatLastN', o.repeatLastN, -1, 1 << 30);
  checkInt('seed', o.seed, 0, Number.MAX_SAFE_INTEGER);
  checkInt('maxTokens', o.maxTokens, 0, 1 << 30);
}

export async function loadModel(dir: string, opts: LoadOptions = {}): Promise<Model> {
  checkInt('threads', opts.threads, 0, 1024);
  const abs = path.resolve(dir);
  const st = await stat(abs).catch(() => null);
  if (!st?.isDirectory()) throw new ShoalError('SHOAL_ERR_IO', `model directory ${abs} does not exist or is not a directory`);
  if (opts.kvCache !== undefined && !KV_CACHE_TYPES.includes(opts.kvCache))
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `kvCache must be one of ${KV_CACHE_TYPES.join(', ')}, got '${String(opts.kvCache)}'`);
  if (opts.lmHead !== undefined && !LM_HEAD_MODES.includes(opts.lmHead))
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `lmHead must be one of ${LM_HEAD_MODES.join(', ')}, got '${String(opts.lmHead)}'`);
  if (opts.precision !== undefined && !PRECISIONS.includes(opts.precision))
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `precision must be one of ${PRECISIONS.join(', ')}, got '${String(opts.precision)}'`);
  const expertCache = resolveExpertCache(opts.expertCache, abs);
  // a CPU kernel set names the CPU: tests that compare ISAs must not land on a GPU
  const backend = opts.backend ?? (opts.isa && opts.isa !== 'auto' ? 'cpu' : 'auto');
  const native = await addon().loadModel(abs, {
    threads: opts.threads ?? 0, backend, isa: opts.isa ?? 'auto',
    kvCache: opts.kvCache ?? 'f16', lmHead: opts.lmHead ?? 'auto', expertCache, precision: opts.precision ?? 'fast',
  });
  try {
    const ni = native.info();
    const info: ModelInfo = { dir: abs, ...ni };
    const tokenizer = opts.tokenizer === false ? null : await HfModelTokenizer.load(abs, { bos: ni.bosTokenId, eos: ni.eosTokenIds });
    return new EngineModel(native, info, tokenizer);
  } catch (err) {
    native.dispose();
    throw err;
  }
}

class EngineModel implements Model {
  private disposed = false;
  /** Vocabulary trie and constraint masks, shared by the model's sessions. */
  readonly constraints: ConstraintCache | null;
  constructor(private readonly native: AddonModel, readonly info: ModelInfo, readonly tokenizer: Tokenizer | null) {
    const tok = tokenizer;
    this.constraints = tok?.vocabTexts ? new ConstraintCache(() => tok.vocabTexts!(info.vocabSize), info.vocabSize, info.eosTokenIds) : null;
  }

  /** f32 K and V per layer and position (docs/engine.md). */
  kvBytes(contextSize: number): number {
    return 2 * this.info.layers * contextSize * this.info.kvHeads * this.info.headDim * 4;
  }

  createSession(opts: { contextSize?: number } = {}): Session {
    if (this.disposed) throw new ShoalError('SHOAL_ERR_DISPOSED', 'model is disposed');
    checkInt('contextSize', opts.contextSize, 1, this.info.contextLength);
    const A = addon().AddonSession;
    return new EngineSession(new A(this.native, opts.contextSize ?? this.info.contextLength), this);
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.native.dispose();
  }
}

const STOP_REASONS = ['eos', 'max_tokens', 'aborted', 'aborted', 'context_full'] as const;

class EngineSession implements Session {
  private disposed = false;
  private busy = false;
  constructor(private readonly native: AddonSession, private readonly model: EngineModel) {}

  get contextSize(): number { return this.native.contextSize(); }
  get position(): number { return this.native.position(); }

  private enter(): void {
    if (this.disposed) throw new ShoalError('SHOAL_ERR_DISPOSED', 'session is disposed');
    if (this.busy) throw invalid('session is busy: wait for the previous eval or generate to finish');
    this.busy = true;
  }

  async eval(tokens: ArrayLike<number>, opts: { allLogits?: boolean } = {}): Promise<Float32Array> {
    this.enter();
    try {
      return await this.native.eval(Int32Array.from(tokens), opts.allLogits ?? false);
    } finally {
      this.busy = false;
    }
  }

  async *generate(prompt: string | number[], opts: GenerateOptions = {}): AsyncGenerator<GeneratedChunk, GenerateStats, void> {
    validateGenerateOptions(opts);
    const tok = this.model.tokenizer;
    let ids: number[];
    if (typeof prompt === 'string') {
      if (!tok) throw new ShoalError('SHOAL_ERR_TOKENIZER', `${this.model.info.dir} has no tokenizer.json: pass token ids instead of text`);
      ids = tok.encode(prompt);
    } else {
      ids = prompt;
    }
    const room = this.contextSize - this.position;
    if (ids.length > room)
      throw new ShoalError('SHOAL_ERR_CONTEXT_FULL',
        `the prompt has ${ids.length} tokens but only ${room} of the session's ${this.contextSize} positions are free; shorten the prompt or use a larger context`);
    this.enter();
    const decoder = tok?.createStreamDecoder(ids);
    const queue: number[] = [];
    let wake: (() => void) | null = null;
    const started = performance.now();
    let firstAt = 0;
    let lastAt = 0;
    const onAbort = () => this.native.cancel();
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    if (opts.signal?.aborted) this.native.cancel();
    let done = false;
    const finished = this.native
      .generate(Int32Array.from(ids), opts, opts.maxTokens ?? -1, Int32Array.from(opts.stopTokenIds ?? []), (got) => {
        const now = performance.now();
        if (!firstAt) firstAt = now;
        lastAt = now;
        queue.push(...got);
        wake?.();
      })
      .finally(() => { done = true; wake?.(); });
    finished.catch(() => {}); // observed below
    try {
      for (;;) {
        while (queue.length) {
          const token = queue.shift()!;
          yield { token, text: decoder ? decoder.push(token) : '' };
        }
        if (done) break;
        await new Promise<void>((r) => { wake = r; });
        wake = null;
      }
      const r = await finished;
      const tail = decoder?.flush() ?? '';
      if (tail) yield { token: -1, text: tail };
      const decodeSpan = (lastAt - firstAt) / 1000;
      return {
        promptTokens: r.promptTokens,
        generatedTokens: r.generatedTokens,
        stopReason: opts.signal?.aborted ? 'aborted' : STOP_REASONS[r.stopReason] ?? 'eos',
        timeToFirstToken: firstAt ? (firstAt - started) / 1000 : r.prefillSeconds,
        prefillTokensPerSecond: r.prefillSeconds > 0 ? r.promptTokens / r.prefillSeconds : 0,
        decodeTokensPerSecond: r.generatedTokens > 1 && decodeSpan > 0 ? (r.generatedTokens - 1) / decodeSpan : 0,
      };
    } finally {
      opts.signal?.removeEventListener('abort', onAbort);
      if (!done) {
        // the consumer stopped early: stop the native loop and wait for it
        this.native.cancel();
        await finished.catch(() => {});
      }
      this.busy = false;
    }
  }

  async *serve(prompt: number[], opts: ServeOptions & { signal?: AbortSignal }): AsyncGenerator<ServeChunk, ServeStats, void> {
    validateGenerateOptions(opts);
    const tok = this.model.tokenizer;
    if (!tok || !this.model.constraints) throw new ShoalError('SHOAL_ERR_TOKENIZER', `${this.model.info.dir} has no tokenizer.json: serving needs one`);
    this.enter();
    try {
      const native = this.native;
      return yield* serveLoop({
        stepper: { setSampler: (p) => native.setSampler(p), step: (a, b, c) => native.step(a, b, c), cancel: () => native.cancel(),
          position: () => native.position(), contextSize: () => native.contextSize() },
        tokenizer: tok, eosIds: this.model.info.eosTokenIds, vocabSize: this.model.info.vocabSize,
        constraints: this.model.constraints,
        toolFormat: withMarkerToken(toolFormat(tok.chatTemplateText ?? ''), { encode: (t, o) => tok.encode(t, o) }, tok.vocabTexts?.(this.model.info.vocabSize) ?? []),
      }, prompt, opts);
    } finally {
      this.busy = false;
    }
  }

  truncate(keep: number): void {
    checkInt('keep', keep, 0, this.contextSize);
    this.native.truncate(keep);
  }

  reset(): void { this.truncate(0); }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.native.dispose();
  }
}

/**
 * Returns the C heap's free pages to the system (glibc malloc_trim; a no-op elsewhere).
 * Call after releasing a model: glibc otherwise keeps what was freed in its arenas, so RSS
 * stays at its high-water mark. Returns true when some memory was released.
 */
export function trimNativeHeap(): boolean {
  return addon().trimNativeHeap();
}

/** CPU kernel sets compiled in and supported here, e.g. "scalar avx2 avx512". */
export function cpuIsas(): string[] {
  return addon().cpuFeatures().split(/\s+/).filter(Boolean);
}
