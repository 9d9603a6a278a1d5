// The fleet controller: MQTT ingest (presence, state, telemetry, events), the
// rollout engine, the package registry and the HTTP API, over one Storage.
import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import {
  Event, State, Telemetry, parsePayload, type DesiredModel, type DeviceChannel,
} from '@shoal/protocol';
import { startApi, type ApiServer } from './api.js';
import type { ResolvedConfig } from './config.js';
import { FleetLink } from './link.js';
import { PackageRegistry } from './packages.js';
import { RolloutEngine } from './rollout.js';
import { openSqliteStorage } from './storage/sqlite.js';
import type { Storage } from './storage/types.js';
import type { ControllerContext, IngestStats } from './context.js';
import { ShoalError, createLogger, type Logger } from '@shoal/common';

export class Controller implements ControllerContext {
  readonly storage: Storage;
  readonly registry: PackageRegistry;
  readonly rollouts: RolloutEngine;
  readonly log: Logger;
  link!: FleetLink;
  api!: ApiServer;
  /**
   * Live feed of what ingest stored (the dashboard's stream, api /api/stream):
   * 'device' (id) after a state or latest-telemetry change, 'telemetry' (id, {ts, data})
   * for every sample once it is written, 'event' (EventRow-like) for every new event.
   */
  readonly bus = new EventEmitter();
  readonly stats: IngestStats = {
    received: { state: 0, telemetry: 0, events: 0, cmd: 0, desired: 0 },
    stored: { state: 0, telemetry: 0, events: 0, duplicateEvents: 0 },
    malformed: 0,
    lastMalformed: null,
  };
  private telemetryBuf: { deviceId: string; ts: number; data: Record<string, unknown> }[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private pruneTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(readonly config: ResolvedConfig, opts: { storage?: Storage; logger?: Logger } = {}) {
    this.log = opts.logger ?? createLogger(config.logLevel, { svc: 'controller' }, 2, { sync: false });
    fs.mkdirSync(config.dataDir, { recursive: true });
    this.storage = opts.storage ?? openSqliteStorage(config.dbFile);
    this.registry = new PackageRegistry(this.storage, config.artifactsDir, config.fleetPublicKeyPem);
    this.rollouts = new RolloutEngine({
      storage: this.storage,
      publishDesired: (id, d) => this.link.publishDesired(id, d),
      desiredFor: (n, v) => this.desiredFor(n, v),
      tryDesiredFor: (n, v) => (this.registry.get(n, v) ? this.desiredFor(n, v) : null),
      log: this.log,
    }, config.rollout.defaultTimeoutSec);
  }

  /** Base URL devices use for artifacts. */
  get publicUrl(): string {
    if (this.config.http.publicUrl) return this.config.http.publicUrl.replace(/\/+$/, '');
    const a = this.api.address;
    return `http://${a.host}:${a.port}`;
  }

  desiredFor(name: string, version: string): DesiredModel {
    const p = this.registry.require(name, version);
    return {
      name, version,
      manifestUrl: `${this.publicUrl}/artifacts/${encodeURIComponent(name)}/${encodeURIComponent(version)}/manifest.json`,
      manifestSha256: p.manifestSha256,
    };
  }

  async start(): Promise<void> {
    this.api = await startApi(this);
    const b = this.config.broker;
    this.link = await FleetLink.connect({
      url: b.url, username: b.username, password: b.password, clientId: b.clientId, protocolVersion: b.protocolVersion,
      ca: b.ca, cert: b.cert, key: b.key, sharedGroup: b.sharedGroup,
    });
    this.link.on('message', (id, ch, payload) => this.ingest(id, ch, payload));
    this.link.on('invalidReply', (why) => this.malformed('replies', why));
    this.flushTimer = setInterval(() => this.flush(), 200);
    this.pruneTimer = setInterval(() => this.prune(), this.config.telemetry.pruneIntervalSec * 1000);
    this.pruneTimer.unref?.();
    this.rollouts.start(this.config.rollout.tickMs);
    this.log.info({ api: `http://${this.api.address.host}:${this.api.address.port}`, dashboard: `http://${this.api.address.host}:${this.api.address.port}/`, broker: b.url }, 'controller started');
  }

  private malformed(where: string, why: string): void {
    this.stats.malformed++;
    this.stats.lastMalformed = `${where}: ${why}`;
    this.log.warn({ where }, `malformed message dropped: ${why}`);
  }

  /** Handles one device message; never throws. */
  ingest(deviceId: string, channel: DeviceChannel, payload: Buffer): void {
    try {
      this.stats.received[channel]++;
      const now = Date.now();
      if (channel === 'state') {
        if (payload.length === 0) return; // retained state cleared
        const r = parsePayload(State, payload);
        if (!r.ok) return this.malformed(`${deviceId}/state`, `${r.code}: ${r.message}`);
        const s = r.value;
        if (s.deviceId !== deviceId) return this.malformed(`${deviceId}/state`, `deviceId '${s.deviceId}' does not match the topic`);
        this.storage.upsertDevice(deviceId, {
          online: s.online, group: s.group ?? null, labels: s.labels, model: s.model, phase: s.phase,
          state: s as unknown as Record<string, unknown>, lastSeen: now,
        }, now);
        this.stats.stored.state++;
        this.rollouts.kick();
        this.bus.emit('device', deviceId);
      } else if (channel === 'telemetry') {
        const r = parsePayload(Telemetry, payload);
        if (!r.ok) return this.malformed(`${deviceId}/telemetry`, `${r.code}: ${r.message}`);
        if (r.value.deviceId !== deviceId) return this.malformed(`${deviceId}/telemetry`, `deviceId '${r.value.deviceId}' does not match the topic`);
        this.telemetryBuf.push({ deviceId, ts: r.value.ts, data: r.value as unknown as Record<string, unknown> });
        if (this.telemetryBuf.length >= 5000) this.flush();
      } else if (channel === 'events') {
        const r = parsePayload(Event, payload);
        if (!r.ok) return this.malformed(`${deviceId}/events`, `${r.code}: ${r.message}`);
        if (r.value.deviceId !== deviceId) return this.malformed(`${deviceId}/events`, `deviceId '${r.value.deviceId}' does not match the topic`);
        const fresh = this.storage.insertEvent(r.value, now);
        if (fresh) this.stats.stored.events++;
        else this.stats.stored.duplicateEvents++;
        this.storage.upsertDevice(deviceId, { lastSeen: now }, now);
        if (fresh) this.bus.emit('event', { ...r.value, receivedAt: now });
        this.rollouts.onEvent(r.value);
      }
    } catch (e) {
      this.malformed(`${deviceId}/${channel}`, `handler error: ${(e as Error).message}`);
    }
  }

  /** Writes buffered telemetry (one transaction) and each device's latest sample. */
  flush(): void {
    if (this.telemetryBuf.length === 0) return;
    const rows = this.telemetryBuf;
    this.telemetryBuf = [];
    const now = Date.now();
    try {
      this.storage.insertTelemetry(rows);
      this.stats.stored.telemetry += rows.length;
      const latest = new Map<string, Record<string, unknown>>();
      for (const r of rows) latest.set(r.deviceId, r.data);
      for (const [id, data] of latest) this.storage.upsertDevice(id, { telemetry: data, lastSeen: now }, now);
      if (this.bus.listenerCount('telemetry') > 0) for (const r of rows) this.bus.emit('telemetry', r.deviceId, { ts: r.ts, data: r.data });
      for (const id of latest.keys()) this.bus.emit('device', id);
    } catch (e) {
      this.log.error({ err: (e as Error).message, rows: rows.length }, 'telemetry write failed; retrying next flush');
      this.telemetryBuf = rows.concat(this.telemetryBuf);
    }
  }

  prune(): number {
    const t = this.config.telemetry;
    const n = this.storage.pruneTelemetry(Date.now() - t.maxAgeSec * 1000, t.maxRowsPerDevice);
    if (n > 0) this.log.debug({ rows: n }, 'telemetry pruned');
    return n;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.bus.emit('close');
    this.rollouts.stop();
    if (this.flushTimer) clearInterval(this.flushTimer);
    if (this.pruneTimer) clearInterval(this.pruneTimer);
    this.flush();
    await this.api?.close();
    await this.link?.close().catch(() => undefined);
    this.storage.close();
  }
}

export async function startController(config: ResolvedConfig, opts: { storage?: Storage; logger?: Logger } = {}): Promise<Controller> {
  const c = new Controller(config, opts);
  try {
    await c.start();
  } catch (e) {
    await c.close().catch(() => undefined);
    throw e instanceof ShoalError ? e : new ShoalError('INTERNAL', `controller failed to start: ${(e as Error).message}`);
  }
  return c;
}

