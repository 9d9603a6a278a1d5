// The one owner of "the active model": the loaded engine model that serves
// requests, and the persisted pointer (store/active.json) naming it and the
// version kept for rollback. Only this class changes either, and it changes
// them together: the pointer is written first, then the model is swapped.
import type { ModelRef } from '@shoal/protocol';
import { ShoalError, type Logger } from '@shoal/common';
import { sameRef, type ActivePointer, type ModelStore } from '../ota/store.js';
import type { Model } from '@shoal/engine';
import type { LoadedModel, ModelLoader, ServingModel } from './loader.js';

export class ActiveModel implements ServingModel {
  private loaded: LoadedModel | null = null;

  constructor(private readonly store: ModelStore, private readonly loader: ModelLoader) {}

  /** The model serving requests (null before the first activation). */
  get current(): LoadedModel | null { return this.loaded; }

  get ref(): ModelRef | null { return this.loaded?.ref ?? null; }

  /** The persisted pointer: which version is active and which is kept for rollback. */
  get pointer(): ActivePointer { return this.store.getActive(); }

  /**
   * Start-up: loads the pointer's current version, else its previous one (which
   * then becomes current). Returns the error of the last failed load (also when
   * the previous version loaded after the current one failed), else null.
   */
  async restore(log: Logger): Promise<unknown> {
    const { current, previous } = this.store.getActive();
    let failure: unknown = null;
    for (const ref of [current, previous]) {
      if (!ref || !this.store.has(ref)) continue;
      try {
        this.loaded = await this.loader.load(ref, this.store.versionDir(ref));
        if (!sameRef(ref, current)) await this.store.setActive(ref, null);
        log.info({ model: ref }, 'active model loaded');
        return failure;
      } catch (e) {
        log.error({ model: ref, err: (e as Error).message }, 'could not load stored model');
        failure = e;
      }
    }
    return failure;
  }

  /**
   * Makes a loaded (health-checked) model active with `previous` kept for
   * rollback: persists the pointer, then swaps and disposes the old model. When
   * the pointer cannot be written the new model is disposed and the old one stays.
   */
  async activate(next: LoadedModel, previous: ModelRef | null): Promise<void> {
    try {
      await this.store.setActive(next.ref, previous);
    } catch (e) {
      next.model.dispose();
      throw new ShoalError('STORE_IO', `could not write the active pointer: ${(e as Error).message}`);
    }
    const old = this.loaded;
    this.loaded = next;
    if (old) { try { old.model.dispose(); } catch { /* already gone */ } }
  }

  /** Changes only which version is kept for rollback. */
  async keepForRollback(previous: ModelRef | null): Promise<void> {
    await this.store.setActive(this.ref, previous);
  }

  contextSizeFor(model: Model): number { return this.loader.contextSizeFor(model); }

  engineInfo(): { backend: string; isa: string; threads: number } | null {
    if (!this.loaded) return null;
    const i = this.loaded.model.info;
    return { backend: i.backend, isa: i.isa, threads: i.threads };
  }

  dispose(): void {
    if (this.loaded) { try { this.loaded.model.dispose(); } catch { /* ignore */ } this.loaded = null; }
  }
}
