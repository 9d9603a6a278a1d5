// One generation queue for local HTTP and remote MQTT requests: priorities
// (HTTP first), bounded depth, per-request deadlines and cancellation through
// AbortSignal, pause/resume around a model swap (queued requests wait).
import { ShoalError, isDeviceErrorCode } from '@shoal/common';
import {
  KvSlotPool, PromptError, slotsWithinBudget, toolFormat, toolSystemPrompt,
  type ApiChatMessage, type ChatMessage, type Model, type ServeOptions, type ServeStats, type Session, type ToolCallOut,
} from '@shoal/engine';
import type { GenerateResult, TokenLogprob } from '@shoal/protocol';
import type { LoadedModel, ServingModel } from './model/loader.js';
import { atDeadline, type DeadlineTimer } from '@shoal/common';

export const PRIORITY_LOCAL = 0;
export const PRIORITY_REMOTE = 1;

/** One request, whatever the transport: a prompt (text or token ids) or chat messages, and the options. */
export interface GenerateInput extends ServeOptions {
  prompt?: string | number[];
  messages?: Array<ChatMessage | ApiChatMessage>;
  /** The transport's names of the prompt and of maxTokens, for errors (OpenAI: messages / max_tokens ...; MQTT: the defaults). */
  promptParam?: string;
  maxTokensParam?: string;
}

export interface JobSpec {
  id: string;
  source: 'http' | 'mqtt';
  priority: number;
  input: GenerateInput;
  /** Epoch ms. */
  deadline: number;
  /** Aborted by the caller: cancel op, HTTP client gone. */
  signal?: AbortSignal;
  onChunk?: (text: string, tokens: number, logprobs?: TokenLogprob[]) => void;
  /** Each tool call as soon as it is complete (index 0, 1, ... in the answer). */
  onToolCall?: (call: ToolCallOut & { index: number }) => void;
}

interface Job extends JobSpec {
  seq: number;
  enqueuedAt: number;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
  timer?: DeadlineTimer;
  cleanup?: () => void;
}

export interface KvCacheStats {
  slots: number; inUse: number; bytesPerSlot: number; hits: number; reusedTokens: number; evaluatedTokens: number; evictions: number;
}

export interface SchedulerStats {
  requests: number; errors: number; rejected: number; queueDepth: number; active: number;
  ttftMs: number | null; decodeTokPerSec: number | null;
  kvCache?: KvCacheStats;
}

export interface SchedulerOptions {
  maxDepth: number;
  maxConcurrent: number;
  maxTokens: number;
  /** KV slots of the prefix cache (default: maxConcurrent). */
  kvSlots?: number;
  /** Memory for all KV slots; fewer slots are kept when they would not fit. */
  kvMemoryBytes?: number;
  /** false: every request starts from an empty KV cache (A/B tests). */
  prefixCache?: boolean;
}

export interface SchedulerHooks {
  onFinished?: (info: { source: string; outcome: 'ok' | 'error' | 'rejected' | 'cancelled'; result?: GenerateResult; code?: string }) => void;
}

export class Scheduler {
  private queue: Job[] = [];
  private running = new Set<Job>();
  private paused = false;
  private accepting = true;
  private seq = 0;
  private idleWaiters: Array<() => void> = [];
  /** When true, requests wait even without an active model (a model is being installed). */
  swapping = false;
  readonly stats: SchedulerStats = { requests: 0, errors: 0, rejected: 0, queueDepth: 0, active: 0, ttftMs: null, decodeTokPerSec: null };

  private pool: KvSlotPool<Session> | null = null;
  private poolOwner: LoadedModel | null = null;
  private bytesPerSlot = 0;

  constructor(private readonly models: ServingModel, private readonly opts: SchedulerOptions, private readonly hooks: SchedulerHooks = {}) {}

  /** The KV slot pool of the active model (re-created after a model swap). */
  private slots(loaded: LoadedModel): KvSlotPool<Session> {
    if (this.pool && this.poolOwner === loaded) return this.pool;
    this.pool?.dispose();
    const model = loaded.model;
    const ctx = this.models.contextSizeFor(model);
    this.bytesPerSlot = model.kvBytes?.(ctx) ?? 0;
    const wanted = Math.max(this.opts.kvSlots ?? this.opts.maxConcurrent, this.opts.maxConcurrent);
    const n = this.opts.kvMemoryBytes ? slotsWithinBudget(wanted, this.bytesPerSlot, this.opts.kvMemoryBytes) : wanted;
    this.pool = new KvSlotPool<Session>(n, () => model.createSession({ contextSize: ctx }), this.opts.prefixCache !== false);
    this.poolOwner = loaded;
    this.updateKvStats();
    return this.pool;
  }

  private updateKvStats(): void {
    if (!this.pool) return;
    const s = this.pool.stats();
    this.stats.kvCache = { slots: s.slots, inUse: s.inUse, bytesPerSlot: this.bytesPerSlot, hits: s.hits, reusedTokens: s.reusedTokens, evaluatedTokens: s.evaluatedTokens, evictions: s.evictions };
  }

  /** Concurrent generations: never more than there are KV slots. */
  private get concurrency(): number {
    return this.pool ? Math.min(this.opts.maxConcurrent, this.pool.size) : this.opts.maxConcurrent;
  }

  get depth(): number { return this.queue.length; }
  get activeCount(): number { return this.running.size; }

  submit(spec: JobSpec): Promise<GenerateResult> {
    const reject = (code: 'SHUTTING_DOWN' | 'QUEUE_FULL' | 'NO_ACTIVE_MODEL' | 'DEADLINE_EXCEEDED' | 'CANCELLED', msg: string) => {
      this.stats.rejected++;
      this.hooks.onFinished?.({ source: spec.source, outcome: 'rejected', code });
      return Promise.reject(new ShoalError(code, msg));
    };
    if (!this.accepting) return reject('SHUTTING_DOWN', 'the daemon is shutting down and accepts no new requests');
    if (spec.signal?.aborted) return reject('CANCELLED', `request ${spec.id} was cancelled`);
    if (spec.deadline <= Date.now()) return reject('DEADLINE_EXCEEDED', `request ${spec.id} arrived after its deadline`);
    if (!this.models.current && !this.swapping && !this.paused) return reject('NO_ACTIVE_MODEL', 'no model is active on this device yet');
    if (this.queue.length >= this.opts.maxDepth) {
      return reject('QUEUE_FULL', `the request queue is full (${this.queue.length} of ${this.opts.maxDepth} waiting); retry later`);
    }
    return new Promise<GenerateResult>((resolve, rejectP) => {
      const job: Job = { ...spec, seq: this.seq++, enqueuedAt: Date.now(), resolve, reject: rejectP };
      const drop = (err: ShoalError) => {
        const i = this.queue.indexOf(job);
        if (i < 0) return;
        this.queue.splice(i, 1);
        this.updateDepth();
        job.cleanup?.();
        this.stats.rejected++;
        this.hooks.onFinished?.({ source: job.source, outcome: err.code === 'CANCELLED' ? 'cancelled' : 'rejected', code: err.code });
        rejectP(err);
      };
      // atDeadline: a deadline past setTimeout's 2^31-1 ms must not fire at once
      job.timer = atDeadline(spec.deadline, () => drop(new ShoalError('DEADLINE_EXCEEDED', `request ${job.id} waited past its deadline in the queue`)));
      const onAbort = () => drop(new ShoalError('CANCELLED', `request ${job.id} was cancelled while queued`));
      spec.signal?.addEventListener('abort', onAbort, { once: true });
      job.cleanup = () => { job.timer?.clear(); spec.signal?.removeEventListener('abort', onAbort); };
      // insert by priority, FIFO within a priority
      let i = this.queue.length;
      while (i > 0 && this.queue[i - 1]!.priority > job.priority) i--;
      this.queue.splice(i, 0, job);
      this.updateDepth();
      this.pump();
    });
  }

  /** Highest queue depth seen since start. */
  peakDepth = 0;

  private updateDepth(): void {
    this.stats.queueDepth = this.queue.length;
    if (this.queue.length > this.peakDepth) this.peakDepth = this.queue.length;
    this.stats.active = this.running.size;
  }

  private pump(): void {
    while (!this.paused && this.running.size < this.concurrency && this.queue.length > 0) {
      if (!this.models.current) {
        if (this.swapping) return;
        // no model and nothing coming: fail what waits
        for (const j of this.queue.splice(0)) {
          j.cleanup?.();
          this.stats.rejected++;
          j.reject(new ShoalError('NO_ACTIVE_MODEL', 'no model is active on this device'));
        }
        this.updateDepth();
        return;
      }
      const job = this.queue.shift()!;
      job.cleanup?.();
      this.running.add(job);
      this.updateDepth();
      void this.run(job).finally(() => {
        this.running.delete(job);
        this.updateDepth();
        if (this.running.size === 0) for (const w of this.idleWaiters.splice(0)) w();
        this.pump();
      });
    }
  }

  /** Prompt token ids: chat messages through the model's template (BOS once), text through the tokenizer, or ids as given. */
  private promptIds(model: Model, input: GenerateInput): number[] {
    const tok = model.tokenizer;
    if (Array.isArray(input.prompt)) {
      const bad = input.prompt.find((id) => !Number.isInteger(id) || id < 0 || id >= model.info.vocabSize);
      if (bad !== undefined) throw new ShoalError('INVALID_ARGS', `prompt token ${bad} is outside the vocabulary of ${model.info.vocabSize}`, { param: 'prompt' });
      return input.prompt;
    }
    if (!tok) throw new ShoalError('GENERATION_FAILED', 'the active model has no tokenizer.json; send token ids');
    if (input.messages) {
      try {
        const tools = input.tools?.length && input.toolChoice !== 'none' ? input.tools : undefined;
        const fmt = toolFormat(tok.chatTemplateText ?? '');
        let messages = input.messages as ApiChatMessage[];
        if (tools && !fmt.native) messages = [{ role: 'system', content: toolSystemPrompt(tools, fmt, input.parallelToolCalls !== false) }, ...messages];
        return tok.encodeChat(messages, { addGenerationPrompt: true, ...(tools && fmt.native ? { tools } : {}) });
      } catch (e) {
        if (e instanceof PromptError) throw new ShoalError('INVALID_ARGS', e.message, { param: e.param });
        throw e;
      }
    }
    return tok.encode(input.prompt ?? '');
  }

  private async run(job: Job): Promise<void> {
    const loaded = this.models.current!;
    const started = Date.now();
    const deadlineCtl = new AbortController();
    const dl = atDeadline(job.deadline, () => deadlineCtl.abort(new ShoalError('DEADLINE_EXCEEDED', `request ${job.id} passed its deadline while generating`)));
    const signals = [deadlineCtl.signal, ...(job.signal ? [job.signal] : [])];
    const signal = AbortSignal.any(signals);
    const pool = this.slots(loaded);
    let lease: ReturnType<typeof pool.acquire> | null = null;
    let tokens: number[] = [];
    let ok = false;
    try {
      const model = loaded.model;
      const { prompt: _p, messages: _m, promptParam: _pp, maxTokensParam: _mp, ...options } = job.input;
      const ids = this.promptIds(model, job.input);
      if (ids.length === 0) throw new ShoalError('INVALID_ARGS', 'the prompt is empty', { param: 'prompt' });
      const ctx = this.models.contextSizeFor(model);
      const promptParam = job.input.promptParam ?? (job.input.messages ? 'messages' : 'prompt');
      // A prompt that leaves no room, or a maxTokens the prompt leaves no room
      // for, is the client's mistake (400, as OpenAI answers); without
      // maxTokens the answer may use what the context has left.
      if (ids.length >= ctx) {
        throw new ShoalError('CONTEXT_LENGTH_EXCEEDED',
          `the prompt has ${ids.length} tokens but the context holds ${ctx} (at least one must stay free for the answer); shorten the ${promptParam}`,
          { promptTokens: ids.length, maxTokens: 0, contextSize: ctx, promptParam });
      }
      if (options.maxTokens !== undefined && ids.length + options.maxTokens > ctx) {
        const maxTokensParam = job.input.maxTokensParam ?? 'maxTokens';
        throw new ShoalError('CONTEXT_LENGTH_EXCEEDED',
          `the prompt has ${ids.length} tokens and ${maxTokensParam} asks for ${options.maxTokens} more, but the context holds ${ctx}; ` +
          `set ${maxTokensParam} to at most ${ctx - ids.length} or shorten the ${promptParam}`,
          { promptTokens: ids.length, maxTokens: options.maxTokens, contextSize: ctx, promptParam, maxTokensParam });
      }
      const maxTokens = options.maxTokens ?? this.opts.maxTokens;
      lease = pool.acquire(ids);
      this.updateKvStats();
      tokens = ids;
      const texts = model.tokenizer?.vocabTexts?.(model.info.vocabSize);
      const tokenText = (id: number) => texts?.[id] ?? model.tokenizer?.decode([id], { skipSpecialTokens: false }) ?? '';
      const gen = lease.session.serve(ids, { ...options, maxTokens, signal });
      let text = '';
      let n = 0;
      let stats: ServeStats;
      const logprobs: TokenLogprob[] = [];
      for (;;) {
        const r = await gen.next();
        if (r.done) { stats = r.value; break; }
        if (r.value.toolCall) { job.onToolCall?.(r.value.toolCall); continue; }
        let lp: TokenLogprob[] | undefined;
        if (r.value.token >= 0) {
          n++;
          if (r.value.logprob !== undefined) {
            lp = [{ token: r.value.token, text: tokenText(r.value.token), logprob: r.value.logprob, top: (r.value.top ?? []).map((x) => ({ token: x.token, text: tokenText(x.token), logprob: x.logprob })) }];
            logprobs.push(...lp);
          }
        }
        text += r.value.text;
        if (r.value.text || lp) job.onChunk?.(r.value.text, n, lp);
      }
      tokens = stats.tokens;
      if (signal.aborted) {
        throw signal.reason instanceof ShoalError ? signal.reason : new ShoalError('CANCELLED', `request ${job.id} was cancelled`);
      }
      const totalMs = Date.now() - started;
      const STOP = { eos: 'eos', stop_string: 'stop', max_tokens: 'max_tokens', context_full: 'context_full', tool_calls: 'tool_calls' } as const;
      const result: GenerateResult = {
        text,
        stopReason: STOP[stats.reason],
        ...(stats.toolCalls.length ? { toolCalls: stats.toolCalls } : {}),
        ...(options.logprobs ? { logprobs } : {}),
        model: loaded.ref,
        usage: { promptTokens: stats.promptTokens, completionTokens: stats.completionTokens, totalTokens: stats.promptTokens + stats.completionTokens, cachedTokens: stats.cachedTokens },
        timings: {
          queueMs: started - job.enqueuedAt,
          ttftMs: stats.completionTokens > 0 ? stats.timeToFirstToken * 1000 : null,
          totalMs,
          prefillTokPerSec: Number.isFinite(stats.prefillTokensPerSecond) ? stats.prefillTokensPerSecond : null,
          decodeTokPerSec: Number.isFinite(stats.decodeTokensPerSecond) ? stats.decodeTokensPerSecond : null,
        },
      };
      ok = true;
      this.stats.requests++;
      this.stats.ttftMs = result.timings.ttftMs;
      this.stats.decodeTokPerSec = result.timings.decodeTokPerSec;
      this.hooks.onFinished?.({ source: job.source, outcome: 'ok', result });
      job.resolve(result);
    } catch (e) {
      let err: unknown = e;
      const code0 = (e as { code?: string })?.code;
      if (signal.aborted) err = signal.reason instanceof ShoalError ? signal.reason : new ShoalError('CANCELLED', `request ${job.id} was cancelled`);
      else if (code0 === 'SHOAL_ERR_INVALID_ARG') err = new ShoalError('INVALID_ARGS', (e as Error).message);
      else if (code0 === 'SHOAL_ERR_CONTEXT_FULL') err = new ShoalError('CONTEXT_LENGTH_EXCEEDED', (e as Error).message);
      else if (!(e instanceof ShoalError) || !isDeviceErrorCode(e.code)) err = new ShoalError('GENERATION_FAILED', `generation failed: ${(e as Error)?.message ?? e}`);
      const code = (err as ShoalError).code;
      if (code === 'CANCELLED' || code === 'DEADLINE_EXCEEDED') this.stats.rejected++; else this.stats.errors++;
      this.hooks.onFinished?.({ source: job.source, outcome: code === 'CANCELLED' ? 'cancelled' : 'error', code });
      job.reject(err);
    } finally {
      dl.clear();
      if (lease) {
        // what the KV cache holds is known exactly after a finished or cancelled run; after an engine error, forget it
        if (ok || signal.aborted) pool.release(lease, tokens); else pool.discard(lease);
      }
      this.updateKvStats();
    }
  }

  /** Stops dispatching; queued requests wait. */
  pause(): void { this.paused = true; }
  resume(): void { this.paused = false; this.pump(); }

  /** Resolves when nothing is running. */
  idle(): Promise<void> {
    if (this.running.size === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Runs fn with dispatch paused and no generation running (model swap). */
  async exclusive<T>(fn: () => Promise<T> | T): Promise<T> {
    this.pause();
    try {
      await this.idle();
      // the KV slots belong to the model being replaced
      this.pool?.dispose();
      this.pool = null;
      this.poolOwner = null;
      return await fn();
    } finally {
      this.resume();
    }
  }

  /** Stops accepting; waits for queued and running work up to timeoutMs, then aborts the rest. */
  async drain(timeoutMs: number): Promise<boolean> {
    this.accepting = false;
    const until = Date.now() + timeoutMs;
    while ((this.queue.length > 0 || this.running.size > 0) && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const clean = this.queue.length === 0 && this.running.size === 0;
    for (const j of this.queue.splice(0)) {
      j.cleanup?.();
      j.reject(new ShoalError('SHUTTING_DOWN', 'the daemon shut down before this request ran'));
    }
    this.updateDepth();
    return clean;
  }
}
