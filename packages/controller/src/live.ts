// Live stream for the dashboard: `GET /api/stream[?device=ID]` answers
// text/event-stream (Server-Sent Events framing) fed from the controller's MQTT
// ingest (Controller.bus). Token auth is the API's (the page reads it with fetch
// and an Authorization header, so the token never goes into a URL).
//
// Messages (`event:` name, `data:` one JSON line):
//   hello      {serverTime, device}                       on connect
//   devices    {full, devices:[summary…], sentAt}         full list on connect, then changed devices, coalesced
//   telemetry  {deviceId, ts, data}                       every sample of ?device=ID once stored
//   event      {id, deviceId, ts, type, data, receivedAt} every new device event
//   rollout    {rollout}                                  a rollout that changed (checked every 250 ms)
import type http from 'node:http';
import type { ControllerContext } from './context.js';
import type { DeviceRecord, RolloutRecord } from './storage/types.js';

interface LiveClient {
  res: http.ServerResponse;
  device: string | null;
  /** Bytes queued in the socket past which telemetry for this client is dropped (a slow tab). */
  dropped: number;
}

const DEVICE_BATCH_MS = 100;
const ROLLOUT_POLL_MS = 250;
const HEARTBEAT_MS = 15_000;
const MAX_BUFFERED = 8 * 1024 * 1024;

export class LiveHub {
  private readonly clients = new Set<LiveClient>();
  private readonly dirty = new Set<string>();
  private deviceTimer: NodeJS.Timeout | null = null;
  private readonly rolloutTimer: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly rolloutSeen = new Map<string, number>();
  private readonly listeners: [string, (...a: any[]) => void][];

  constructor(private readonly ctl: Pick<ControllerContext, 'bus' | 'storage'>, private readonly summarize: (d: DeviceRecord) => Record<string, unknown>) {
    this.listeners = [
      ['device', (id: string) => this.onDevice(id)],
      ['telemetry', (id: string, row: { ts: number; data: Record<string, unknown> }) => this.onTelemetry(id, row)],
      ['event', (ev: Record<string, unknown>) => this.broadcast('event', ev)],
      ['close', () => this.close()],
    ];
    for (const [n, f] of this.listeners) ctl.bus.on(n, f);
    for (const r of ctl.storage.listRollouts(50)) this.rolloutSeen.set(r.id, r.updatedAt);
    this.rolloutTimer = setInterval(() => this.pollRollouts(), ROLLOUT_POLL_MS);
    this.rolloutTimer.unref?.();
    this.heartbeat = setInterval(() => { for (const c of this.clients) c.res.write(': ping\n\n'); }, HEARTBEAT_MS);
    this.heartbeat.unref?.();
  }

  get size(): number { return this.clients.size; }

  /** Takes over a request that passed auth. */
  attach(req: http.IncomingMessage, res: http.ServerResponse, device: string | null): void {
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no', Connection: 'keep-alive',
    });
    req.socket.setNoDelay(true);
    const c: LiveClient = { res, device, dropped: 0 };
    this.clients.add(c);
    const bye = () => this.clients.delete(c);
    res.on('close', bye);
    res.on('error', bye);
    this.send(c, 'hello', { serverTime: Date.now(), device });
    const all = this.ctl.storage.listDevices().map(this.summarize);
    this.send(c, 'devices', { full: true, devices: all, sentAt: Date.now() });
  }

  private send(c: LiveClient, event: string, data: unknown): void {
    if (c.res.writableEnded || c.res.destroyed) return;
    c.res.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
  }

  private broadcast(event: string, data: unknown): void {
    if (this.clients.size === 0) return;
    const frame = `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
    for (const c of this.clients) if (!c.res.writableEnded && !c.res.destroyed) c.res.write(frame);
  }

  private onDevice(id: string): void {
    if (this.clients.size === 0) return;
    this.dirty.add(id);
    if (!this.deviceTimer) this.deviceTimer = setTimeout(() => this.flushDevices(), DEVICE_BATCH_MS);
  }

  private flushDevices(): void {
    this.deviceTimer = null;
    if (this.dirty.size === 0 || this.clients.size === 0) { this.dirty.clear(); return; }
    const devices: Record<string, unknown>[] = [];
    for (const id of this.dirty) {
      const d = this.ctl.storage.getDevice(id);
      if (d) devices.push(this.summarize(d));
    }
    this.dirty.clear();
    this.broadcast('devices', { full: false, devices, sentAt: Date.now() });
  }

  private onTelemetry(id: string, row: { ts: number; data: Record<string, unknown> }): void {
    for (const c of this.clients) {
      if (c.device !== id) continue;
      if (c.res.writableLength > MAX_BUFFERED) { c.dropped++; continue; }
      this.send(c, 'telemetry', { deviceId: id, ts: row.ts, data: row.data });
    }
  }

  private pollRollouts(): void {
    if (this.clients.size === 0) return;
    let rows: RolloutRecord[];
    try { rows = this.ctl.storage.listRollouts(20); } catch { return; }
    for (const r of rows) {
      if (this.rolloutSeen.get(r.id) === r.updatedAt) continue;
      this.rolloutSeen.set(r.id, r.updatedAt);
      this.broadcast('rollout', { rollout: r });
    }
  }

  close(): void {
    for (const [n, f] of this.listeners) this.ctl.bus.off(n, f);
    clearInterval(this.rolloutTimer);
    clearInterval(this.heartbeat);
    if (this.deviceTimer) clearTimeout(this.deviceTimer);
    for (const c of this.clients) c.res.end();
    this.clients.clear();
  }
}
