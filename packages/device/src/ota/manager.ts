// Converges the device to the desired model: fetch + check the signed manifest,
// check free space, download with resume into store/.partial, verify, atomically
// move into the store, health-check with the engine, then swap the active model
// (requests wait in the queue during the swap). The active model is never
// touched until the new one is healthy; a failed health check keeps (rolls back
// to) the current one.
import { promises as fsp, statfsSync } from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import {
  type DesiredModel, type ModelRef, type Phase, type EventType, Manifest, MANIFEST_FILE, MAX_MANIFEST_BYTES, verifyManifest, sha256Hex, manifestBytes,
} from '@shoal/protocol';
import { toErrorInfo } from '../errors.js';
import { ModelStore, sameRef, dirBytes } from './store.js';
import { fetchBytes, downloadFile } from './download.js';
import type { LoadedModel, ModelLoader } from '../model/loader.js';
import type { ActiveModel } from '../model/active-model.js';
import type { Scheduler } from '../scheduler.js';
import type { DeviceConfig } from '../config/load.js';
import { type Logger, fsyncDir, writeJsonAtomic, ShoalError } from '@shoal/common';

/**
 * Failures worth another attempt: the server or the network may come back, space may be
 * freed. Retried with jittered backoff until the desired state's retryUntil (the rollout's
 * timeout) or download.retryWindowSec; the partial download is kept for the next attempt.
 */
const TRANSIENT = new Set(['MANIFEST_FETCH_FAILED', 'DOWNLOAD_FAILED', 'STORE_IO', 'INTERNAL', 'INSUFFICIENT_SPACE']);

/** Delay before install attempt `attempt + 1`: exponential from 2 s, full jitter in [d/2, d]. */
export function retryDelayMs(attempt: number, maxMs: number): number {
  const d = Math.min(maxMs, 2000 * 2 ** Math.max(0, attempt - 1));
  return Math.round(d / 2 + Math.random() * (d / 2));
}

export interface OtaDeps {
  cfg: DeviceConfig;
  store: ModelStore;
  loader: ModelLoader;
  active: ActiveModel;
  scheduler: Scheduler;
  log: Logger;
  emit(type: EventType, data: Record<string, unknown>): void;
  changed(): void;
  /** Returns garbage and freed C-heap pages to the system (model/release-memory.ts); run after every model operation. */
  releaseMemory?(): void;
}

export function freeBytes(dir: string): number {
  const s = statfsSync(dir);
  return Number(s.bavail) * Number(s.bsize);
}

export class OtaManager {
  phase: Phase = 'idle';
  desired: DesiredModel | null = null;
  rolloutId: string | undefined;
  lastError: { code: string; message: string } | undefined;
  private failedKey: string | null = null;
  private pinnedKey: string | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private abort: AbortController | null = null;
  private retryTimer: NodeJS.Timeout | null = null;
  private retries = 0;
  /** Epoch ms until which transient failures are retried (desired.retryUntil, else set at the first failure). */
  private retryUntil: number | null = null;
  private desiredRetryUntil: number | undefined;
  private lock: Promise<unknown> = Promise.resolve();
  private stopped = false;

  constructor(private readonly d: OtaDeps) {}

  private key(m: DesiredModel): string { return `${m.name}@${m.version}#${m.manifestSha256}`; }

  private setPhase(p: Phase): void {
    if (this.phase !== p) { this.phase = p; this.d.changed(); }
  }

  /**
   * Serializes model operations (converge, activate, rollback, remove). After each, memory is
   * released: a replaced model, a download and its hashing leave large buffers that V8 and glibc
   * would otherwise keep (model/release-memory.ts).
   */
  private withLock<T>(fn: () => Promise<T>): Promise<T> {
    const run = () => fn().finally(() => this.releaseMemory());
    const p = this.lock.then(run, run);
    this.lock = p.catch(() => {});
    return p;
  }

  private releaseMemory(): void {
    try { this.d.releaseMemory?.(); } catch (e) { this.d.log.warn({ err: (e as Error).message }, 'releasing memory failed'); }
  }

  /** Loads the active model from the store at start-up (falls back to previous). */
  async restoreActive(): Promise<void> {
    const failure = await this.d.active.restore(this.d.log);
    if (failure) this.lastError = toErrorInfo(failure, 'HEALTH_CHECK_FAILED');
    if (this.d.active.current) this.setPhase('active');
  }

  setDesired(model: DesiredModel | null, rolloutId?: string, retryUntil?: number): void {
    const changed = JSON.stringify(model) !== JSON.stringify(this.desired);
    this.desired = model;
    this.rolloutId = rolloutId;
    this.desiredRetryUntil = retryUntil;
    if (changed) {
      this.failedKey = null;
      this.pinnedKey = null;
      this.retries = 0;
      this.retryUntil = null;
      if (this.retryTimer) { clearTimeout(this.retryTimer); this.retryTimer = null; }
      void this.d.store.saveDesired({ model, ...(rolloutId ? { rolloutId } : {}), ...(retryUntil !== undefined ? { retryUntil } : {}) }).catch((e) => this.d.log.warn({ err: (e as Error).message }, 'could not persist desired state'));
      // a different target aborts a download in progress (its partial bytes stay for later)
      if (this.abort && model && !this.isTarget(model)) this.abort.abort(new ShoalError('CANCELLED', 'desired state changed'));
    }
    this.d.changed();
    this.kick();
  }

  private currentTarget: DesiredModel | null = null;
  private isTarget(m: DesiredModel): boolean { return !!this.currentTarget && this.key(this.currentTarget) === this.key(m); }

  kick(): void {
    if (this.stopped) return;
    if (this.running) { this.again = true; return; }
    this.running = (async () => {
      do {
        this.again = false;
        // never an unhandled rejection (it would end the daemon): log and wait for the next kick
        await this.withLock(() => this.convergeOnce()).catch((e) => this.d.log.error({ err: (e as Error).message }, 'OTA step failed'));
      } while (this.again && !this.stopped);
    })().finally(() => { this.running = null; });
  }

  async idle(): Promise<void> { while (this.running) await this.running; }

  stop(): void {
    this.stopped = true;
    this.abort?.abort(new ShoalError('SHUTTING_DOWN'));
    if (this.retryTimer) clearTimeout(this.retryTimer);
  }

  private async convergeOnce(): Promise<void> {
    const want = this.desired;
    if (!want) { if (this.d.active.current) this.setPhase('active'); return; }
    const ref: ModelRef = { name: want.name, version: want.version };
    const cur = this.d.active.ref;
    if (sameRef(cur, ref)) { this.setPhase('active'); this.lastError = undefined; return; }
    const k = this.key(want);
    if (this.failedKey === k || this.pinnedKey === k) return;
    this.currentTarget = want;
    this.abort = new AbortController();
    const signal = this.abort.signal;
    try {
      if (!this.d.store.has(ref)) await this.install(want, signal);
      await this.healthCheckAndActivate(ref, 'desired');
      this.retries = 0;
    } catch (e) {
      const info = toErrorInfo(e);
      if (signal.aborted && (info.code === 'CANCELLED' || info.code === 'SHUTTING_DOWN')) {
        this.d.log.info({ model: ref, reason: info.message }, 'install interrupted');
        // abandoned for another target: its partial bytes go (a restart keeps them to resume)
        if (info.code === 'CANCELLED') {
          const freedBytes = await this.discardPartial(ref);
          if (freedBytes > 0) this.d.log.info({ model: ref, freedBytes }, 'partial download of the abandoned target removed');
        }
        return;
      }
      this.lastError = info;
      if (info.code === 'HEALTH_CHECK_FAILED') {
        this.d.log.error({ model: ref, code: info.code, err: info.message }, 'OTA failed');
        this.failedKey = k;
      } else {
        const now = Date.now();
        this.retryUntil ??= this.desiredRetryUntil ?? now + this.d.cfg.download.retryWindowSec * 1000;
        const delay = retryDelayMs(this.retries + 1, this.d.cfg.download.retryMaxDelaySec * 1000);
        if (TRANSIENT.has(info.code) && now + delay < this.retryUntil) {
          // keep the partial download: the next attempt resumes it
          this.retries++;
          this.d.log.warn({ model: ref, code: info.code, err: info.message, attempt: this.retries, retryInMs: delay }, 'OTA attempt failed; retrying');
          this.d.emit('ota.retrying', { name: ref.name, version: ref.version, code: info.code, reason: info.message, attempt: this.retries, retryInMs: delay, retryUntil: this.retryUntil, ...(this.rolloutId ? { rolloutId: this.rolloutId } : {}) });
          this.setPhase('downloading');
          this.retryTimer = setTimeout(() => { this.retryTimer = null; this.kick(); }, delay);
        } else {
          // final: nothing of this version stays behind
          const freedBytes = await this.discardPartial(ref);
          this.d.log.error({ model: ref, code: info.code, err: info.message, attempts: this.retries + 1, freedBytes }, 'OTA failed');
          this.setPhase('failed');
          this.d.emit('ota.failed', { name: ref.name, version: ref.version, code: info.code, reason: info.message, attempts: this.retries + 1, freedBytes, ...(this.rolloutId ? { rolloutId: this.rolloutId } : {}), activeModel: this.d.active.ref });
          this.failedKey = k;
        }
      }
      this.d.changed();
    } finally {
      this.currentTarget = null;
      this.abort = null;
    }
  }

  /** Removes a version's partial download; returns the bytes freed. */
  private async discardPartial(ref: ModelRef): Promise<number> {
    let dir: string;
    try { dir = this.d.store.partialDir(ref); } catch { return 0; }
    const bytes = await dirBytes(dir);
    await fsp.rm(dir, { recursive: true, force: true }).catch((e) => this.d.log.warn({ err: (e as Error).message, dir }, 'could not remove a partial download'));
    await fsp.rmdir(path.dirname(dir)).catch(() => {});
    return bytes;
  }

  private async install(want: DesiredModel, signal: AbortSignal): Promise<void> {
    const { cfg, store } = this.d;
    const ref = { name: want.name, version: want.version };
    this.setPhase('downloading');
    this.d.emit('ota.started', { name: ref.name, version: ref.version, manifestUrl: want.manifestUrl, ...(this.rolloutId ? { rolloutId: this.rolloutId } : {}) });
    // 1. manifest: hash, schema, identity, signature
    const bytes = await fetchBytes(want.manifestUrl, MAX_MANIFEST_BYTES, { signal, idleTimeoutMs: cfg.download.idleTimeoutSec * 1000, retries: cfg.download.retries });
    const got = sha256Hex(bytes);
    if (got !== want.manifestSha256) throw new ShoalError('MANIFEST_HASH_MISMATCH', `manifest sha256 is ${got}; desired state says ${want.manifestSha256}`);
    let json: unknown;
    try { json = JSON.parse(bytes.toString('utf8')); } catch (e) { throw new ShoalError('MANIFEST_INVALID', `manifest is not JSON: ${(e as Error).message}`); }
    const parsed = Manifest.safeParse(json);
    if (!parsed.success) throw new ShoalError('MANIFEST_INVALID', `manifest is invalid: ${parsed.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
    const manifest = parsed.data;
    if (manifest.files.some((f) => f.path === MANIFEST_FILE)) throw new ShoalError('MANIFEST_INVALID', `manifest lists a file named ${MANIFEST_FILE}, which is reserved`);
    if (manifest.name !== want.name || manifest.version !== want.version) {
      throw new ShoalError('MANIFEST_MISMATCH', `manifest is ${manifest.name}@${manifest.version}; desired is ${want.name}@${want.version}`);
    }
    const sig = verifyManifest(manifest, cfg.fleetPublicKey);
    if (!sig.ok) throw new ShoalError('SIGNATURE_INVALID', `manifest signature rejected: ${sig.reason}`);
    // 2. space: needed bytes beyond what is already on disk must leave the reserve free
    const partial = store.partialDir(ref);
    await store.cleanPartials(ref);
    const total = manifestBytes(manifest);
    const have = await dirBytes(partial);
    const needed = Math.max(0, total - have);
    const free = freeBytes(store.dir);
    if (free - needed < cfg.store.reserveBytes) {
      throw new ShoalError('INSUFFICIENT_SPACE',
        `not enough space in ${store.dir} for ${ref.name}@${ref.version}: needs ${needed} bytes plus a reserve of ${cfg.store.reserveBytes} bytes; ${free} bytes free`,
        { neededBytes: needed, reserveBytes: cfg.store.reserveBytes, freeBytes: free });
    }
    // 3. download with resume
    await fsp.mkdir(partial, { recursive: true });
    let done = 0;
    let lastEmit = 0;
    let windowStart = Date.now();
    let windowBytes = 0;
    let rate = 0;
    const progress = (file: string, force = false) => {
      const now = Date.now();
      if (now - windowStart >= 500) { rate = (windowBytes * 1000) / (now - windowStart); windowStart = now; windowBytes = 0; }
      if (!force && now - lastEmit < cfg.download.progressIntervalMs) return;
      lastEmit = now;
      this.d.emit('ota.progress', {
        name: ref.name, version: ref.version, phase: this.phase, file, bytes: done, totalBytes: total,
        percent: total > 0 ? Math.round((done / total) * 1000) / 10 : 100, rateBytesPerSec: Math.round(rate),
      });
    };
    for (const f of manifest.files) {
      const dest = path.join(partial, ...f.path.split('/'));
      await fsp.mkdir(path.dirname(dest), { recursive: true });
      const url = new URL(f.path.split('/').map(encodeURIComponent).join('/'), want.manifestUrl).href;
      const fetchFile = () => downloadFile(url, dest, { size: f.size, sha256: f.sha256 }, {
        signal, retries: cfg.download.retries, idleTimeoutMs: cfg.download.idleTimeoutSec * 1000,
        onBytes: (n, resumed) => { done += n; if (!resumed) windowBytes += n; progress(f.path); },
      });
      const before = done;
      try {
        await fetchFile();
      } catch (e) {
        if (!(e instanceof ShoalError) || e.code !== 'FILE_HASH_MISMATCH') throw e;
        // corrupted in transit (or a bad resume): downloadFile deleted the file; fetch it once more from scratch
        this.d.log.warn({ file: f.path, err: e.message }, 'sha256 mismatch; fetching the file again');
        this.d.emit('ota.retrying', { name: ref.name, version: ref.version, code: e.code, reason: e.message, file: f.path, attempt: 1, retryInMs: 0, ...(this.rolloutId ? { rolloutId: this.rolloutId } : {}) });
        done = before;
        await fetchFile();
      }
      progress(f.path, true);
    }
    this.d.emit('ota.downloaded', { name: ref.name, version: ref.version, totalBytes: total, files: manifest.files.length });
    // 4. verify what is on disk, then move into the store atomically
    this.setPhase('verifying');
    for (const f of manifest.files) {
      const file = path.join(partial, ...f.path.split('/'));
      const st = await fsp.stat(file);
      if (st.size !== f.size) throw new ShoalError('FILE_SIZE_MISMATCH', `${f.path} is ${st.size} bytes on disk; the manifest says ${f.size}`);
      const h = createHash('sha256');
      for await (const c of createReadStream(file, { signal }) as AsyncIterable<Buffer>) h.update(c);
      const digest = h.digest('hex');
      if (digest !== f.sha256) {
        await fsp.rm(file, { force: true });
        throw new ShoalError('FILE_HASH_MISMATCH', `${f.path}: sha256 on disk is ${digest}; the manifest says ${f.sha256}`);
      }
    }
    await writeJsonAtomic(path.join(partial, MANIFEST_FILE), manifest);
    const dirs = new Set<string>();
    for (const f of manifest.files) dirs.add(path.dirname(path.join(partial, ...f.path.split('/'))));
    for (const dir of dirs) await fsyncDir(dir);
    const final = store.versionDir(ref);
    await fsp.mkdir(path.dirname(final), { recursive: true });
    await fsp.rm(final, { recursive: true, force: true });
    await fsp.rename(partial, final);
    await fsyncDir(path.dirname(final));
    await fsyncDir(path.dirname(partial)).catch(() => {});
    await fsp.rmdir(path.dirname(partial)).catch(() => {});
    this.d.emit('ota.verified', { name: ref.name, version: ref.version, totalBytes: total });
  }

  /** Loads + checks a stored version and makes it active; on failure the current model stays. */
  private async healthCheckAndActivate(ref: ModelRef, reason: 'desired' | 'activate' | 'rollback'): Promise<void> {
    const { store, loader, active, scheduler } = this.d;
    this.setPhase('health-check');
    if (!active.current) scheduler.swapping = true;
    let checked: { loaded: LoadedModel; tokens: number; ms: number };
    try {
      checked = await loader.loadAndCheck(ref, store.versionDir(ref));
      const note = checked.loaded.model.info.backendNote;
      if (note) this.d.log.info({ model: ref, backend: checked.loaded.model.info.backend }, note);
    } catch (e) {
      scheduler.swapping = false;
      const info = toErrorInfo(e, 'HEALTH_CHECK_FAILED');
      this.lastError = info;
      const kept = active.ref;
      this.d.emit('ota.failed', { name: ref.name, version: ref.version, code: info.code, reason: info.message, ...(this.rolloutId ? { rolloutId: this.rolloutId } : {}), activeModel: kept });
      if (kept) {
        this.setPhase('rolled-back');
        this.d.emit('ota.rolled-back', { from: ref, to: kept, reason: info.message });
      } else {
        this.setPhase('failed');
      }
      throw e;
    }
    this.d.emit('ota.health-check', { name: ref.name, version: ref.version, ok: true, tokens: checked.tokens, ms: Math.round(checked.ms) });
    this.setPhase('activating');
    await scheduler.exclusive(async () => {
      const prevRef = reason === 'rollback' ? null : active.ref;
      await active.activate(checked.loaded, prevRef && !sameRef(prevRef, ref) ? prevRef : active.pointer.previous);
    });
    scheduler.swapping = false;
    this.lastError = undefined;
    this.setPhase('active');
    this.d.emit(reason === 'desired' ? 'ota.activated' : 'model.activated', { name: ref.name, version: ref.version, reason, previous: active.pointer.previous, ...(this.rolloutId && reason === 'desired' ? { rolloutId: this.rolloutId } : {}) });
    const removed = await store.gc(this.d.cfg.store.keepVersions).catch((e) => { this.d.log.warn({ err: (e as Error).message }, 'gc failed'); return []; });
    if (removed.length) this.d.emit('model.gc', { removed });
    this.d.changed();
  }

  /** Command: make a stored version active (pins it until the desired state changes). */
  activate(ref: ModelRef): Promise<{ active: ModelRef; previous: ModelRef | null }> {
    return this.withLock(async () => {
      if (!this.d.store.has(ref)) throw new ShoalError('NOT_FOUND', `${ref.name}@${ref.version} is not in the store`);
      if (!sameRef(this.d.active.ref, ref)) await this.healthCheckAndActivate(ref, 'activate');
      if (this.desired && !sameRef(this.desired, ref)) this.pinnedKey = this.key(this.desired);
      return { active: ref, previous: this.d.active.pointer.previous };
    });
  }

  /** Command: go back to the previous version. */
  rollback(): Promise<{ active: ModelRef; previous: ModelRef | null }> {
    return this.withLock(async () => {
      const { current, previous } = this.d.active.pointer;
      if (!previous || !this.d.store.has(previous)) throw new ShoalError('NO_PREVIOUS', 'there is no previous version to roll back to');
      const from = current;
      await this.healthCheckAndActivate(previous, 'rollback');
      // the version rolled back from becomes the new "previous"
      await this.d.active.keepForRollback(from);
      if (this.desired && !sameRef(this.desired, previous)) this.pinnedKey = this.key(this.desired);
      this.d.emit('ota.rolled-back', { from, to: previous, reason: 'rollback command' });
      this.setPhase('rolled-back');
      return { active: previous, previous: from };
    });
  }

  remove(ref: ModelRef): Promise<{ removed: ModelRef }> {
    return this.withLock(async () => {
      await this.d.store.remove(ref);
      this.d.emit('model.removed', { name: ref.name, version: ref.version });
      this.d.changed();
      return { removed: ref };
    });
  }
}
