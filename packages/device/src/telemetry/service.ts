// Periodic telemetry: systeminformation for CPU/memory/swap/temperatures,
// statfs for the store's file system, Jetson sysfs readers, inference stats.
import si from 'systeminformation';
import os from 'node:os';
import { statfs } from 'node:fs/promises';
import type { Telemetry, InferenceStats } from '@shoal/protocol';
import { readJetson } from './jetson.js';

export interface TelemetryDeps {
  deviceId: string;
  storeDir: string;
  sysfsRoot: string;
  inference(): InferenceStats;
}

export async function collectTelemetry(d: TelemetryDeps): Promise<Telemetry> {
  const sources: string[] = [];
  const missing: string[] = [];
  const t: Telemetry = { v: 1, deviceId: d.deviceId, ts: Date.now(), uptimeSec: os.uptime(), sources, missing, inference: d.inference() };
  const [load, mem, temp, jet, fs] = await Promise.allSettled([
    si.currentLoad(), si.mem(), si.cpuTemperature(), readJetson(d.sysfsRoot), statfs(d.storeDir),
  ]);
  if (load.status === 'fulfilled' && Number.isFinite(load.value.currentLoad)) {
    t.cpu = { loadPct: round(load.value.currentLoad), perCore: load.value.cpus.map((c) => round(c.load)) };
    sources.push('si.cpu');
  } else missing.push('si.cpu');
  if (mem.status === 'fulfilled' && mem.value.total > 0) {
    t.memory = { totalBytes: mem.value.total, usedBytes: mem.value.total - mem.value.available, availableBytes: mem.value.available };
    t.swap = { totalBytes: mem.value.swaptotal, usedBytes: mem.value.swapused };
    sources.push('si.mem');
  } else missing.push('si.mem');
  if (temp.status === 'fulfilled' && (temp.value.main !== null || temp.value.cores.length > 0)) {
    const temps: Record<string, number> = {};
    if (typeof temp.value.main === 'number') temps.cpu = temp.value.main;
    temp.value.cores.forEach((c, i) => { if (typeof c === 'number') temps[`core${i}`] = c; });
    if (Object.keys(temps).length) { t.temperatures = temps; sources.push('si.temperature'); } else missing.push('si.temperature');
  } else missing.push('si.temperature');
  if (fs.status === 'fulfilled') {
    t.disk = { path: d.storeDir, totalBytes: Number(fs.value.blocks) * Number(fs.value.bsize), freeBytes: Number(fs.value.bavail) * Number(fs.value.bsize) };
    sources.push('statfs.store');
  } else missing.push('statfs.store');
  if (jet.status === 'fulfilled') {
    if (jet.value.sources.length) t.jetson = jet.value.jetson;
    sources.push(...jet.value.sources);
    missing.push(...jet.value.missing);
  }
  // thermal zones double as temperatures where si found none
  if (t.jetson?.thermal && !t.temperatures) {
    t.temperatures = Object.fromEntries(t.jetson.thermal.map((z) => [z.type, z.tempC]));
  }
  return t;
}

function round(n: number): number { return Math.round(n * 10) / 10; }

export class TelemetryService {
  private timer: NodeJS.Timeout | null = null;
  private busy = false;
  constructor(private readonly deps: TelemetryDeps, private intervalSec: number, private readonly publish: (t: Telemetry) => void,
              private readonly onError: (e: unknown) => void) {}
  get interval(): number { return this.intervalSec; }
  start(): void {
    this.stop();
    this.timer = setInterval(() => void this.tick(), this.intervalSec * 1000);
    this.timer.unref();
    void this.tick();
  }
  setInterval(sec: number): void { this.intervalSec = sec; if (this.timer) this.start(); }
  stop(): void { if (this.timer) { clearInterval(this.timer); this.timer = null; } }
  async tick(): Promise<Telemetry | null> {
    if (this.busy) return null;
    this.busy = true;
    try {
      const t = await collectTelemetry(this.deps);
      this.publish(t);
      return t;
    } catch (e) {
      this.onError(e);
      return null;
    } finally {
      this.busy = false;
    }
  }
}
