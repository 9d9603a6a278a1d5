// Client-side state fed by the live stream: every device's summary, recent events,
// rollouts, and the page's own measurements (update latency, frame time) that the
// browser test reads from window.__shoal.

export interface ModelRef { name: string; version: string }
export interface DeviceSummary {
  id: string; online: boolean; group: string | null; labels: Record<string, string>;
  model: ModelRef | null; phase: string | null; lastError: { code: string; message: string } | null;
  desired: { name: string; version: string; rolloutId: string | null } | null;
  tokPerSec: number | null; maxTempC: number | null; temperatures: Record<string, number>;
  cpuLoadPct: number | null; queueDepth: number | null; ttftMs: number | null; gpuLoadPct: number | null;
  powerW: number | null; memUsedPct: number | null; telemetryTs: number | null; lastSeen: number; firstSeen: number;
}
export interface EventRow { id: string; deviceId: string; ts: number; type: string; data: Record<string, any>; receivedAt: number; seq?: number }
export interface RolloutDevice { id: string; wave: number; status: string; previous: ModelRef | null; startedAt: number | null; finishedAt: number | null; error: string | null }
export interface Rollout {
  id: string; name: string; version: string; target: string; waves: string[]; maxFailures: string; timeoutSec: number;
  status: string; currentWave: number; devices: RolloutDevice[]; message: string | null; createdAt: number; updatedAt: number;
}
export interface TelemetrySample { ts: number; data: Record<string, any> }

type Listener = () => void;

function pct(sorted: number[], p: number): number | null {
  if (sorted.length === 0) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

export class Metrics {
  /** ms from a device's telemetry timestamp to the end of the render pass that applied it */
  latency: number[] = [];
  /** ms spent applying one batch of updates to the page (script + style + layout forced by reads) */
  renderMs: number[] = [];
  /** ms between consecutive animation frames while the page was updating */
  frameMs: number[] = [];
  longTasks = 0;
  updates = 0;
  private lastFrame = 0;
  private frameLoop = false;

  startFrameLoop(): void {
    if (this.frameLoop) return;
    this.frameLoop = true;
    const tick = (t: number) => {
      if (this.lastFrame) this.frameMs.push(t - this.lastFrame);
      this.lastFrame = t;
      if (this.frameMs.length > 20_000) this.frameMs.splice(0, 10_000);
      if (this.frameLoop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    try {
      new PerformanceObserver((l) => { this.longTasks += l.getEntries().length; }).observe({ type: 'longtask', buffered: false });
    } catch { /* not supported */ }
  }

  reset(): void {
    this.latency = []; this.renderMs = []; this.frameMs = []; this.longTasks = 0; this.updates = 0; this.lastFrame = 0;
  }

  summary(): Record<string, number | null> {
    const s = (a: number[]) => [...a].sort((x, y) => x - y);
    const l = s(this.latency), r = s(this.renderMs), f = s(this.frameMs);
    return {
      updates: this.updates, latencyN: l.length, latencyP50: pct(l, 50), latencyP95: pct(l, 95), latencyMax: l.at(-1) ?? null,
      renderN: r.length, renderP50: pct(r, 50), renderP95: pct(r, 95), renderMax: r.at(-1) ?? null,
      frameN: f.length, frameP50: pct(f, 50), frameP95: pct(f, 95), frameMax: f.at(-1) ?? null, longTasks: this.longTasks,
    };
  }
}

export class Store {
  readonly devices = new Map<string, DeviceSummary>();
  /** Devices changed since the last render pass (ids), and whether the set/grouping changed. */
  changed = new Set<string>();
  structureChanged = true;
  readonly events: EventRow[] = [];
  readonly rollouts = new Map<string, Rollout>();
  /** latest ota.progress per `${deviceId} ${name}@${version}` */
  readonly progress = new Map<string, { percent: number; bytes: number; totalBytes: number; ts: number }>();
  readonly metrics = new Metrics();
  private readonly listeners = new Map<string, Set<(arg?: any) => void>>();

  on(topic: 'devices' | 'event' | 'rollout' | 'telemetry', f: (arg?: any) => void): () => void {
    let s = this.listeners.get(topic);
    if (!s) this.listeners.set(topic, (s = new Set()));
    s.add(f);
    return () => s!.delete(f);
  }
  private emit(topic: string, arg?: unknown): void {
    for (const f of this.listeners.get(topic) ?? []) f(arg);
  }

  applyDevices(msg: { full: boolean; devices: DeviceSummary[] }): void {
    if (msg.full) {
      const ids = new Set(msg.devices.map((d) => d.id));
      for (const id of this.devices.keys()) if (!ids.has(id)) this.devices.delete(id);
      this.structureChanged = true;
    }
    for (const d of msg.devices) {
      const prev = this.devices.get(d.id);
      if (!prev || prev.group !== d.group || JSON.stringify(prev.labels) !== JSON.stringify(d.labels)) this.structureChanged = true;
      this.devices.set(d.id, d);
      this.changed.add(d.id);
    }
    this.metrics.updates += msg.devices.length;
    this.emit('devices');
  }

  addEvent(e: EventRow): void {
    this.events.push(e);
    if (this.events.length > 2000) this.events.splice(0, 1000);
    if (e.type === 'ota.progress' && typeof e.data.percent === 'number') {
      this.progress.set(`${e.deviceId} ${e.data.name}@${e.data.version}`, { percent: e.data.percent, bytes: e.data.bytes ?? 0, totalBytes: e.data.totalBytes ?? 0, ts: e.ts });
    }
    if ((e.type === 'ota.activated' || e.type === 'model.activated') && e.data.name) {
      const k = `${e.deviceId} ${e.data.name}@${e.data.version}`;
      const p = this.progress.get(k);
      this.progress.set(k, { percent: 100, bytes: p?.totalBytes ?? 0, totalBytes: p?.totalBytes ?? 0, ts: e.ts });
    }
    this.emit('event', e);
  }

  setRollout(r: Rollout): void {
    this.rollouts.set(r.id, r);
    this.emit('rollout', r);
  }

  telemetry(s: TelemetrySample & { deviceId: string }): void {
    this.emit('telemetry', s);
  }

  /** Records the latency of every changed device whose sample is newer than the last one seen. */
  private seenTs = new Map<string, number>();
  recordLatency(ids: Iterable<string>, renderEnd: number): void {
    for (const id of ids) {
      const d = this.devices.get(id);
      if (!d?.telemetryTs) continue;
      if ((this.seenTs.get(id) ?? 0) >= d.telemetryTs) continue;
      const first = !this.seenTs.has(id);
      this.seenTs.set(id, d.telemetryTs);
      if (!first) this.metrics.latency.push(renderEnd - d.telemetryTs);
    }
    if (this.metrics.latency.length > 200_000) this.metrics.latency.splice(0, 100_000);
  }
}

export const store = new Store();
export type { Listener };
