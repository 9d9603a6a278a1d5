// Rollouts: desired state set wave by wave; each wave must converge (every device
// reports the new model active) before the next starts. Too many failures, or a
// device silent past the timeout, stops the rollout and puts that wave's devices
// back on their previous desired model. Every change is persisted, so a
// restarted controller resumes where it stopped.
import { randomUUID } from 'node:crypto';
import type { DesiredModel, Desired, Event as EventT } from '@shoal/protocol';
import type { DeviceRecord, RolloutDevice, RolloutRecord, Storage } from './storage/types.js';
import { ShoalError } from '@shoal/common';

// ---------------------------------------------------------------- parsing

export type Selector =
  | { kind: 'all' }
  | { kind: 'group'; group: string }
  | { kind: 'label'; key: string; value: string }
  | { kind: 'ids'; ids: string[] };

const ID = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function parseSelector(s: string): Selector {
  const t = s.trim();
  if (t === 'all') return { kind: 'all' };
  if (t.startsWith('group:')) {
    const g = t.slice(6);
    if (!g) throw new ShoalError('INVALID_SELECTOR', `'${s}': group name missing; use --to group:NAME`);
    return { kind: 'group', group: g };
  }
  const eq = t.indexOf('=');
  if (eq > 0) return { kind: 'label', key: t.slice(0, eq), value: t.slice(eq + 1) };
  const ids = t.split(',').map((x) => x.trim()).filter(Boolean);
  if (ids.length === 0 || !ids.every((i) => ID.test(i))) {
    throw new ShoalError('INVALID_SELECTOR', `'${s}' is not a target; use all, group:NAME, label=value or id,id,...`);
  }
  return { kind: 'ids', ids: [...new Set(ids)] };
}

export function selectDevices(sel: Selector, devices: DeviceRecord[]): DeviceRecord[] {
  switch (sel.kind) {
    case 'all': return devices;
    case 'group': return devices.filter((d) => d.group === sel.group);
    case 'label': return devices.filter((d) => d.labels[sel.key] === sel.value);
    case 'ids': {
      const byId = new Map(devices.map((d) => [d.id, d]));
      const missing = sel.ids.filter((i) => !byId.has(i));
      if (missing.length) throw new ShoalError('DEVICE_NOT_FOUND', `unknown device(s): ${missing.join(', ')}; list devices with \`shoal fleet ls\``);
      return sel.ids.map((i) => byId.get(i)!);
    }
  }
}

/** Wave spec "1,10%,50%,100%": cumulative device counts or percentages of the target. */
export function parseWaves(spec: string | string[]): string[] {
  const parts = (Array.isArray(spec) ? spec : spec.split(',')).map((x) => x.trim()).filter(Boolean);
  if (parts.length === 0) throw new ShoalError('INVALID_WAVES', 'no waves given; use e.g. --waves 1,10%,50%,100%');
  for (const p of parts) {
    const m = /^(\d+(?:\.\d+)?)(%?)$/.exec(p);
    if (!m || Number(m[1]) <= 0 || (m[2] === '%' && Number(m[1]) > 100) || (m[2] === '' && !Number.isInteger(Number(m[1])))) {
      throw new ShoalError('INVALID_WAVES', `wave '${p}' must be a device count (e.g. 1) or a percentage up to 100% (e.g. 10%)`);
    }
  }
  return parts;
}

/** Splits ids into waves; every device lands in exactly one wave, the last wave takes the rest. */
export function planWaves(ids: string[], waves: string[]): string[][] {
  const total = ids.length;
  const out: string[][] = [];
  let done = 0;
  for (const w of waves) {
    const upto = w.endsWith('%') ? Math.ceil((Number(w.slice(0, -1)) / 100) * total) : Math.min(total, Number(w));
    if (upto > done) {
      out.push(ids.slice(done, upto));
      done = upto;
    }
  }
  if (done < total) out.push(ids.slice(done));
  return out;
}

export function parseThreshold(s: string): string {
  if (!/^(\d+(\.\d+)?%|\d+)$/.test(s.trim()) || (s.endsWith('%') && Number(s.slice(0, -1)) > 100)) {
    throw new ShoalError('INVALID_THRESHOLD', `--max-failures '${s}' must be a count (e.g. 2) or a percentage (e.g. 5%)`);
  }
  return s.trim();
}

/** How many failures a wave of this size tolerates. */
export function allowedFailures(threshold: string, waveSize: number): number {
  return threshold.endsWith('%') ? Math.floor((Number(threshold.slice(0, -1)) / 100) * waveSize) : Number(threshold);
}

// ---------------------------------------------------------------- engine

export interface RolloutDeps {
  storage: Storage;
  /** Publishes retained desired state to a device. */
  publishDesired(deviceId: string, d: Desired): Promise<void>;
  /** Desired model for a registered package (throws PACKAGE_NOT_FOUND). */
  desiredFor(name: string, version: string): DesiredModel;
  /** Desired model for a package if the controller has it, else null. */
  tryDesiredFor(name: string, version: string): DesiredModel | null;
  log: { info(o: object, msg: string): void; warn(o: object, msg: string): void };
  now?: () => number;
}

export interface CreateRolloutInput {
  name: string;
  version: string;
  to: string;
  waves?: string | string[];
  maxFailures?: string;
  timeoutSec?: number;
  actor?: string;
}

const ACTIVE = new Set(['running', 'paused']);
const TERMINAL_DEVICE = new Set(['active', 'failed', 'timeout', 'rolled-back']);

export class RolloutEngine {
  private timer: NodeJS.Timeout | null = null;
  /** Serializes ticks, events and pause/resume/abort so no change overwrites another. */
  private lock: Promise<void> = Promise.resolve();
  private kickQueued = false;
  private again = false;
  private readonly now: () => number;

  constructor(private readonly d: RolloutDeps, private readonly defaultTimeoutSec: number) {
    this.now = d.now ?? Date.now;
  }

  start(tickMs: number): void {
    const active = this.d.storage.listRollouts(1000).filter((r) => ACTIVE.has(r.status));
    for (const r of active) this.d.log.info({ rollout: r.id, wave: r.currentWave }, 'resuming rollout');
    this.timer = setInterval(() => this.kick(), tickMs);
    this.timer.unref?.();
    this.kick();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  active(): RolloutRecord[] {
    return this.d.storage.listRollouts(1000).filter((r) => ACTIVE.has(r.status));
  }

  create(input: CreateRolloutInput): RolloutRecord {
    const desired = this.d.desiredFor(input.name, input.version);
    void desired;
    const waves = parseWaves(input.waves ?? '100%');
    const maxFailures = parseThreshold(input.maxFailures ?? '0');
    const timeoutSec = input.timeoutSec ?? this.defaultTimeoutSec;
    if (!(timeoutSec > 0)) throw new ShoalError('BAD_REQUEST', '--timeout must be a positive number of seconds');
    const sel = parseSelector(input.to);
    const all = this.d.storage.listDevices();
    const chosen = selectDevices(sel, all);
    if (chosen.length === 0) throw new ShoalError('NO_DEVICES', `no device matches '${input.to}'; check \`shoal fleet ls\``);
    const busy = new Set(this.active().flatMap((r) => r.devices.filter((x) => !TERMINAL_DEVICE.has(x.status) || r.currentWave <= x.wave).map((x) => x.id)));
    const clash = chosen.filter((c) => busy.has(c.id)).map((c) => c.id);
    if (clash.length) throw new ShoalError('ROLLOUT_CONFLICT', `device(s) ${clash.slice(0, 5).join(', ')} are in an active rollout; wait, or abort it with \`shoal fleet rollout abort ID\``);
    // canaries first: online devices before offline ones, then by id
    const ordered = (sel.kind === 'ids' ? chosen : [...chosen].sort((a, b) => Number(b.online) - Number(a.online) || a.id.localeCompare(b.id)));
    const plan = planWaves(ordered.map((x) => x.id), waves);
    const byId = new Map(all.map((x) => [x.id, x]));
    const devices: RolloutDevice[] = plan.flatMap((ids, wave) => ids.map((id) => ({
      id, wave, status: 'pending' as const, previous: this.previousOf(byId.get(id)!), startedAt: null, finishedAt: null, error: null,
    })));
    const now = this.now();
    const r: RolloutRecord = {
      id: `r-${now.toString(36)}-${randomUUID().slice(0, 6)}`, name: input.name, version: input.version, target: input.to,
      waves, maxFailures, timeoutSec, status: 'running', currentWave: 0, devices, message: null, createdAt: now, updatedAt: now,
    };
    this.d.storage.saveRollout(r);
    this.d.storage.audit({ actor: input.actor ?? 'api', action: 'rollout.create', target: r.id, details: { name: r.name, version: r.version, to: r.target, waves: plan.map((w) => w.length), maxFailures, timeoutSec } }, now);
    this.d.log.info({ rollout: r.id, waves: plan.map((w) => w.length) }, `rollout of ${r.name}@${r.version} created`);
    this.kick();
    return r;
  }

  /** What a rollback restores: the model the device reports running, else what was desired. */
  private previousOf(dev: DeviceRecord): DesiredModel | null {
    if (dev.model) {
      const known = this.d.tryDesiredFor(dev.model.name, dev.model.version);
      if (known) return known;
    }
    return dev.desired?.model ?? null;
  }

  get(id?: string): RolloutRecord {
    if (id) {
      const r = this.d.storage.getRollout(id);
      if (!r) throw new ShoalError('ROLLOUT_NOT_FOUND', `no rollout '${id}'; list them with \`shoal fleet rollout status\``);
      return r;
    }
    const latest = this.d.storage.listRollouts(1)[0];
    if (!latest) throw new ShoalError('ROLLOUT_NOT_FOUND', 'no rollouts yet; start one with `shoal fleet deploy NAME@VERSION --to all`');
    return latest;
  }

  list(limit = 50): RolloutRecord[] {
    return this.d.storage.listRollouts(limit);
  }

  private withLock<T>(fn: () => Promise<T> | T): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.then(() => undefined, () => undefined);
    return run;
  }

  control(id: string | undefined, action: 'pause' | 'resume' | 'abort', actor = 'api'): Promise<RolloutRecord> {
    return this.withLock(() => this.controlLocked(id, action, actor));
  }

  private async controlLocked(id: string | undefined, action: 'pause' | 'resume' | 'abort', actor: string): Promise<RolloutRecord> {
    const r = this.get(id);
    const now = this.now();
    if (!ACTIVE.has(r.status)) throw new ShoalError('ROLLOUT_STATE', `rollout ${r.id} is ${r.status}; only running or paused rollouts can be changed`);
    if (action === 'pause') {
      if (r.status === 'paused') throw new ShoalError('ROLLOUT_STATE', `rollout ${r.id} is already paused`);
      r.status = 'paused';
      r.message = `paused by ${actor}`;
    } else if (action === 'resume') {
      if (r.status === 'running') throw new ShoalError('ROLLOUT_STATE', `rollout ${r.id} is running already`);
      r.status = 'running';
      r.message = `resumed by ${actor}`;
    } else {
      await this.rollBackWave(r, `aborted by ${actor}`, 'aborted');
    }
    r.updatedAt = now;
    this.d.storage.saveRollout(r);
    this.d.storage.audit({ actor, action: `rollout.${action}`, target: r.id, details: { wave: r.currentWave } }, now);
    this.kick();
    return r;
  }

  /** Runs a tick soon (coalesced); state and event messages call this. */
  kick(): void {
    if (this.kickQueued) return;
    this.kickQueued = true;
    void this.withLock(async () => {
      this.kickQueued = false;
      await this.tick();
    }).catch((e) => this.d.log.warn({ err: (e as Error).message }, 'rollout tick failed')).finally(() => {
      if (this.again) { this.again = false; this.kick(); }
    });
  }

  /** A device event: ota.failed / ota.rolled-back for a rollout's version marks that device failed. */
  onEvent(ev: EventT): void {
    if (ev.type !== 'ota.failed' && ev.type !== 'ota.rolled-back') return;
    void this.withLock(() => this.onEventLocked(ev)).catch((e) => this.d.log.warn({ err: (e as Error).message }, 'rollout event failed'));
  }

  private onEventLocked(ev: EventT): void {
    for (const r of this.active()) {
      const dev = r.devices.find((x) => x.id === ev.deviceId && x.status === 'updating');
      if (!dev) continue;
      const data = ev.data as Record<string, unknown>;
      if ((data.version !== undefined && data.version !== r.version) || (data.name !== undefined && data.name !== r.name)) continue;
      if (typeof data.rolloutId === 'string' && data.rolloutId !== r.id) continue;
      if (dev.startedAt !== null && ev.ts < dev.startedAt - 60_000) continue;
      dev.status = 'failed';
      dev.finishedAt = this.now();
      const err = data.error as { code?: string; message?: string } | undefined;
      const code = typeof data.code === 'string' ? data.code : err?.code;
      const reason = typeof data.reason === 'string' ? data.reason : typeof data.message === 'string' ? data.message : err?.message;
      dev.error = reason ? `${code ?? ev.type}: ${reason}` : (code ?? ev.type);
      r.updatedAt = this.now();
      this.d.storage.saveRollout(r);
    }
    this.kick();
  }

  async tick(): Promise<void> {
    for (const r of this.active()) await this.step(r);
  }

  private evaluate(r: RolloutRecord, dev: RolloutDevice, rec: DeviceRecord | null, now: number): void {
    const st = rec?.state as Record<string, unknown> | null | undefined;
    if (st) {
      const model = st.model as { name: string; version: string } | null;
      const phase = st.phase as string;
      const desired = st.desired as { name: string; version: string } | null;
      const stRollout = st.rolloutId as string | undefined;
      const fresh = (stRollout !== undefined ? stRollout === r.id : true) && (st.ts as number) >= (dev.startedAt ?? 0) - 5_000;
      if (model && model.name === r.name && model.version === r.version && phase === 'active') {
        dev.status = 'active';
        dev.finishedAt = now;
        return;
      }
      const targetsUs = desired !== null && desired !== undefined && desired.name === r.name && desired.version === r.version;
      if (fresh && targetsUs && (phase === 'failed' || phase === 'rolled-back')) {
        dev.status = 'failed';
        dev.finishedAt = now;
        const le = st.lastError as { code?: string; message?: string } | undefined;
        dev.error = le ? `${le.code ?? 'ERROR'}: ${le.message ?? ''}` : `device reported ${phase}`;
        return;
      }
    }
    if (dev.startedAt !== null && now - dev.startedAt > r.timeoutSec * 1000) {
      dev.status = 'timeout';
      dev.finishedAt = now;
      dev.error = rec?.online ? `no healthy report within ${r.timeoutSec}s (phase ${rec.phase ?? 'unknown'})` : `device silent (offline) for the whole ${r.timeoutSec}s timeout`;
    }
  }

  private async step(r: RolloutRecord): Promise<void> {
    const now = this.now();
    let changed = false;
    const wave = r.devices.filter((x) => x.wave === r.currentWave);
    const desired: DesiredModel = this.d.desiredFor(r.name, r.version);
    if (r.status === 'running') {
      for (const dev of wave.filter((x) => x.status === 'pending')) {
        const msg: Desired = { v: 1, model: desired, rolloutId: r.id, ts: now };
        await this.d.publishDesired(dev.id, msg);
        this.d.storage.upsertDevice(dev.id, { desired: { model: desired, rolloutId: r.id, ts: now } }, now);
        dev.status = 'updating';
        dev.startedAt = now;
        changed = true;
      }
      if (changed) {
        this.d.storage.audit({ actor: 'controller', action: 'rollout.wave', target: r.id, details: { wave: r.currentWave, devices: wave.map((x) => x.id) } }, now);
        this.d.log.info({ rollout: r.id, wave: r.currentWave, devices: wave.length }, 'wave started');
      }
    }
    for (const dev of wave.filter((x) => x.status === 'updating')) {
      const before = dev.status;
      this.evaluate(r, dev, this.d.storage.getDevice(dev.id), now);
      if (dev.status !== before) changed = true;
    }
    const failures = wave.filter((x) => x.status === 'failed' || x.status === 'timeout');
    const allowed = allowedFailures(r.maxFailures, wave.length);
    const timedOut = failures.filter((x) => x.status === 'timeout');
    if (failures.length > allowed || timedOut.length > 0) {
      const why = timedOut.length > 0
        ? `device ${timedOut[0]!.id} stayed silent past the ${r.timeoutSec}s timeout in wave ${r.currentWave + 1}`
        : `${failures.length} failure(s) in wave ${r.currentWave + 1} of ${wave.length} device(s) exceed --max-failures ${r.maxFailures} (${allowed} allowed): ${failures.map((f) => `${f.id}: ${f.error}`).join('; ')}`;
      await this.rollBackWave(r, why, 'failed');
      r.updatedAt = now;
      this.d.storage.saveRollout(r);
      this.d.storage.audit({ actor: 'controller', action: 'rollout.stopped', target: r.id, details: { wave: r.currentWave, reason: why } }, now);
      this.d.log.warn({ rollout: r.id, wave: r.currentWave }, why);
      return;
    }
    if (wave.length > 0 && wave.every((x) => TERMINAL_DEVICE.has(x.status))) {
      // tolerated failures go back to what they ran before
      for (const f of failures) {
        await this.d.publishDesired(f.id, { v: 1, model: f.previous, rolloutId: r.id, ts: now });
        this.d.storage.upsertDevice(f.id, { desired: { model: f.previous, rolloutId: r.id, ts: now } }, now);
      }
      const last = Math.max(...r.devices.map((x) => x.wave));
      if (r.currentWave >= last) {
        r.status = 'succeeded';
        const ok = r.devices.filter((x) => x.status === 'active').length;
        r.message = `${ok}/${r.devices.length} device(s) run ${r.name}@${r.version}`;
        this.d.storage.audit({ actor: 'controller', action: 'rollout.succeeded', target: r.id, details: { active: ok, devices: r.devices.length } }, now);
        this.d.log.info({ rollout: r.id }, r.message);
      } else if (r.status === 'running') {
        r.currentWave += 1;
        r.message = `wave ${r.currentWave} done; starting wave ${r.currentWave + 1}`;
      }
      changed = true;
    }
    if (changed) {
      r.updatedAt = now;
      this.d.storage.saveRollout(r);
      if (r.status === 'running' && wave.every((x) => TERMINAL_DEVICE.has(x.status))) this.again = true;
    }
  }

  /** Stops a rollout and puts the current wave back on each device's previous desired model. */
  private async rollBackWave(r: RolloutRecord, why: string, status: 'failed' | 'aborted'): Promise<void> {
    const now = this.now();
    for (const dev of r.devices.filter((x) => x.wave === r.currentWave && x.status !== 'pending')) {
      await this.d.publishDesired(dev.id, { v: 1, model: dev.previous, rolloutId: r.id, ts: now });
      this.d.storage.upsertDevice(dev.id, { desired: { model: dev.previous, rolloutId: r.id, ts: now } }, now);
      if (dev.status === 'active' || dev.status === 'updating') dev.finishedAt = now;
      dev.error = dev.error ?? (dev.status === 'active' ? 'rolled back with its wave' : null);
      dev.status = 'rolled-back';
    }
    r.status = status;
    r.message = `${why}; wave ${r.currentWave + 1} put back on the previous version`;
  }
}
