// One generation queue for local HTTP and remote MQTT requests: priorities
// (HTTP first), bounded depth, per-request deadlines and cancellation through
// AbortSignal, pause/resume around a model swap (queued requests wait).
import type { ChatMessage } from '@shoal/engine';
import type { GenerateResult } from '@shoal/protocol';
import type { ServingModel } from './model/loader.js';
import { ShoalError } from '@shoal/common';

export const PRIORITY_LOCAL = 0;
export const PRIORITY_REMOTE = 1;

export interface GenerateInput {
  prompt?: string;
  messages?: ChatMessage[];
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
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
  onChunk?: (text: string, tokens: number) => void;
}

interface Job extends JobSpec {
  seq: number;
  enqueuedAt: number;
  resolve: (r: GenerateResult) => void;
  reject: (e: unknown) => void;
  timer?: NodeJS.Timeout;
  cleanup?: () => void;
}

export interface SchedulerStats {
  requests: number; errors: number; rejected: number; queueDepth: number; active: number;
  ttftMs: number | null; decodeTokPerSec: number | null;
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

  constructor(private readonly models: ServingModel, private readonly opts: { maxDepth: number; maxConcurrent: number; maxTokens: number }, private readonly hooks: SchedulerHooks = {}) {}

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
      job.timer = setTimeout(() => drop(new ShoalError('DEADLINE_EXCEEDED', `request ${job.id} waited past its deadline in the queue`)), Math.max(0, spec.deadline - Date.now()));
      const onAbort = () => drop(new ShoalError('CANCELLED', `request ${job.id} was cancelled while queued`));
      spec.signal?.addEventListener('abort', onAbort, { once: true });
      job.cleanup = () => { clearTimeout(job.timer); spec.signal?.removeEventListener('abort', onAbort); };
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
    while (!this.paused && this.running.size < this.opts.maxConcurrent && this.queue.length > 0) {
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

  private async run(job: Job): Promise<void> {
    const loaded = this.models.current!;
    const started = Date.now();
    const deadlineCtl = new AbortController();
    const dl = setTimeout(() => deadlineCtl.abort(new ShoalError('DEADLINE_EXCEEDED', `request ${job.id} passed its deadline while generating`)), Math.max(0, job.deadline - Date.now()));
    const signals = [deadlineCtl.signal, ...(job.signal ? [job.signal] : [])];
    const signal = AbortSignal.any(signals);
    let session: ReturnType<typeof loaded.model.createSession> | null = null;
    try {
      const model = loaded.model;
      let prompt: string;
      if (job.input.messages) {
        if (!model.tokenizer) throw new ShoalError('GENERATION_FAILED', 'the active model has no tokenizer; chat messages need one');
        prompt = model.tokenizer.applyChatTemplate(job.input.messages, { addGenerationPrompt: true });
      } else {
        prompt = job.input.prompt ?? '';
      }
      const ctx = this.models.contextSizeFor(model);
      session = model.createSession({ contextSize: ctx });
      const gen = session.generate(prompt, {
        maxTokens: job.input.maxTokens ?? this.opts.maxTokens,
        temperature: job.input.temperature ?? 0,
        ...(job.input.topK !== undefined ? { topK: job.input.topK } : {}),
        ...(job.input.topP !== undefined ? { topP: job.input.topP } : {}),
        ...(job.input.seed !== undefined ? { seed: job.input.seed } : {}),
        signal,
      });
      let text = '';
      let tokens = 0;
      let stats;
      for (;;) {
        const r = await gen.next();
        if (r.done) { stats = r.value; break; }
        tokens++;
        text += r.value.text;
        if (r.value.text) job.onChunk?.(r.value.text, tokens);
      }
      if (signal.aborted || stats.stopReason === 'aborted') {
        throw signal.reason instanceof ShoalError ? signal.reason : new ShoalError('CANCELLED', `request ${job.id} was cancelled`);
      }
      const totalMs = Date.now() - started;
      const result: GenerateResult = {
        text,
        stopReason: stats.stopReason,
        model: loaded.ref,
        usage: { promptTokens: stats.promptTokens, completionTokens: stats.generatedTokens, totalTokens: stats.promptTokens + stats.generatedTokens },
        timings: {
          queueMs: started - job.enqueuedAt,
          ttftMs: stats.generatedTokens > 0 ? stats.timeToFirstToken * 1000 : null,
          totalMs,
          prefillTokPerSec: Number.isFinite(stats.prefillTokensPerSecond) ? stats.prefillTokensPerSecond : null,
          decodeTokPerSec: Number.isFinite(stats.decodeTokensPerSecond) ? stats.decodeTokensPerSecond : null,
        },
      };
      this.stats.requests++;
      this.stats.ttftMs = result.timings.ttftMs;
      this.stats.decodeTokPerSec = result.timings.decodeTokPerSec;
      this.hooks.onFinished?.({ source: job.source, outcome: 'ok', result });
      job.resolve(result);
    } catch (e) {
      let err: unknown = e;
      if (signal.aborted) err = signal.reason instanceof ShoalError ? signal.reason : new ShoalError('CANCELLED', `request ${job.id} was cancelled`);
      else if (!(e instanceof ShoalError)) err = new ShoalError('GENERATION_FAILED', `generation failed: ${(e as Error)?.message ?? e}`);
      const code = (err as ShoalError).code;
      if (code === 'CANCELLED' || code === 'DEADLINE_EXCEEDED') this.stats.rejected++; else this.stats.errors++;
      this.hooks.onFinished?.({ source: job.source, outcome: code === 'CANCELLED' ? 'cancelled' : 'error', code });
      job.reject(err);
    } finally {
      clearTimeout(dl);
      try { session?.dispose(); } catch { /* ignore */ }
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
