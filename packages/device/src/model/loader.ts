// Loads model versions from the store and health-checks them (a few tokens
// within a deadline). Holds no model: model/active-model.ts owns the one that
// serves. The engine is injected as a loadModel function so the daemon logic
// does not depend on the native addon.
import type { LoadOptions, Model } from '@shoal/engine';
import type { ModelRef } from '@shoal/protocol';
import path from 'node:path';
import { ShoalError } from '@shoal/common';

/** The expert cache inside a version folder: store GC removes it with the version; dense models never write it. */
export const EXPERT_CACHE_FILE = '.shoal-expert-cache';

export type LoadModelFn = (dir: string, opts?: LoadOptions) => Promise<Model>;

export interface LoadedModel { ref: ModelRef; dir: string; model: Model }

export interface ModelLoaderOptions {
  threads: number;
  backend: 'auto' | 'cpu' | 'cuda';
  kvCache?: 'f16' | 'f32' | 'q8';
  lmHead?: 'auto' | 'native' | 'q8';
  /** MoE: keep the repacked experts in EXPERT_CACHE_FILE inside the version folder (default true). */
  expertCache?: boolean;
  contextSize: number;
  health: { timeoutSec: number; tokens: number; prompt: string };
}

/** Loads the engine (@shoal/engine) at run time, so tests can run the daemon logic without the addon. */
export async function loadRealEngine(): Promise<{ loadModel: LoadModelFn; trimNativeHeap: () => boolean }> {
  const mod = (await import('@shoal/engine')) as { loadModel?: LoadModelFn; trimNativeHeap?: () => boolean };
  if (typeof mod.loadModel !== 'function' || typeof mod.trimNativeHeap !== 'function') throw new ShoalError('INTERNAL', '@shoal/engine does not export loadModel and trimNativeHeap');
  return { loadModel: mod.loadModel, trimNativeHeap: mod.trimNativeHeap };
}

/** The model requests run on, and the context size a session of it gets (the scheduler's view). */
export interface ServingModel {
  readonly current: LoadedModel | null;
  contextSizeFor(model: Model): number;
}

export class ModelLoader {
  constructor(private readonly loadModel: LoadModelFn, readonly opts: ModelLoaderOptions) {}

  async load(ref: ModelRef, dir: string): Promise<LoadedModel> {
    const model = await this.loadModel(dir, {
      threads: this.opts.threads, backend: this.opts.backend, kvCache: this.opts.kvCache, lmHead: this.opts.lmHead,
      expertCache: this.opts.expertCache === false ? 'off' : path.join(dir, EXPERT_CACHE_FILE),
    });
    return { ref, dir, model };
  }

  contextSizeFor(model: Model): number {
    return Math.max(16, Math.min(this.opts.contextSize, model.info.contextLength || this.opts.contextSize));
  }

  /** Loads a model and checks it generates tokens within the deadline; throws HEALTH_CHECK_FAILED. */
  async loadAndCheck(ref: ModelRef, dir: string): Promise<{ loaded: LoadedModel; tokens: number; ms: number }> {
    const t0 = performance.now();
    const deadline = AbortSignal.timeout(this.opts.health.timeoutSec * 1000);
    let loaded: LoadedModel | null = null;
    try {
      loaded = await raceSignal(this.load(ref, dir), deadline, (l) => l.model.dispose());
      const session = loaded.model.createSession({ contextSize: this.contextSizeFor(loaded.model) });
      let tokens = 0;
      let text = '';
      try {
        const gen = session.generate(this.opts.health.prompt, { maxTokens: this.opts.health.tokens, temperature: 0, signal: deadline });
        for (;;) {
          const r = await gen.next();
          if (r.done) {
            if (r.value.stopReason === 'aborted') throw new Error(`generation did not finish within ${this.opts.health.timeoutSec} s`);
            break;
          }
          tokens++;
          text += r.value.text;
        }
      } finally {
        session.dispose();
      }
      if (tokens === 0) throw new Error('the model generated no tokens');
      if (deadline.aborted) throw new Error(`health check exceeded ${this.opts.health.timeoutSec} s`);
      return { loaded, tokens, ms: performance.now() - t0 };
    } catch (e) {
      if (loaded) { try { loaded.model.dispose(); } catch { /* already gone */ } }
      const msg = deadline.aborted ? `health check exceeded ${this.opts.health.timeoutSec} s` : (e as Error).message;
      throw new ShoalError('HEALTH_CHECK_FAILED', `${ref.name}@${ref.version} failed its health check: ${msg}`);
    }
  }
}

async function raceSignal<T>(p: Promise<T>, signal: AbortSignal, onLate: (v: T) => void): Promise<T> {
  if (signal.aborted) throw new Error('deadline passed');
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = () => { if (!settled) { settled = true; reject(new Error('deadline passed while loading')); } };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => {
      signal.removeEventListener('abort', onAbort);
      if (settled) { onLate(v); return; }
      settled = true; resolve(v);
    }, (e) => {
      signal.removeEventListener('abort', onAbort);
      if (!settled) { settled = true; reject(e); }
    });
  });
}
