// The device daemon: wires store, engine host, scheduler, OTA, MQTT agent,
// telemetry and the local HTTP API. Each service has start()/stop().
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import { Desired, PROTOCOL_VERSION, type EventType, type State, type StoreEntry, type Event } from '@shoal/protocol';
import type { DeviceConfig } from './config/load.js';
import { createLogger, type Logger, ShoalError } from '@shoal/common';
import { ModelStore } from './store.js';
import { Outbox } from './outbox.js';
import { EngineHost, loadRealEngine, type LoadModelFn } from './engine-host.js';
import { Scheduler, PRIORITY_REMOTE } from './scheduler.js';
import { OtaManager } from './ota.js';
import { MqttAgent } from './mqtt-agent.js';
import { RequestRouter, type OpHandlers } from './router.js';
import { TelemetryService } from './telemetry.js';
import { HttpApi } from './http-api.js';
import { DeviceMetrics } from './metrics.js';
import { SdNotify } from './sdnotify.js';

export const AGENT_VERSION = '0.1.0';

export interface DaemonOptions {
  /** Engine entry point; defaults to @shoal/engine. */
  loadModel?: LoadModelFn;
  logger?: Logger;
}

export class DeviceDaemon {
  readonly log: Logger;
  readonly store: ModelStore;
  readonly metrics = new DeviceMetrics();
  outbox!: Outbox;
  host!: EngineHost;
  scheduler!: Scheduler;
  ota!: OtaManager;
  agent!: MqttAgent;
  router!: RequestRouter;
  telemetry!: TelemetryService;
  http: HttpApi | null = null;
  httpAddress: AddressInfo | null = null;
  private sd = new SdNotify();
  private storeList: StoreEntry[] = [];
  private changeTimer: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;
  private startedAt = Date.now();
  private otaKey = '';
  private otaSeen = 0;

  constructor(readonly cfg: DeviceConfig, private readonly opts: DaemonOptions = {}) {
    this.log = opts.logger ?? createLogger(cfg.logLevel, cfg.deviceId);
    this.store = new ModelStore(cfg.store.dir);
  }

  buildState(online: boolean): State {
    const active = this.store.getActive();
    const s: State = {
      v: PROTOCOL_VERSION,
      deviceId: this.cfg.deviceId,
      online,
      ts: Date.now(),
      labels: this.cfg.labels,
      model: this.host?.current?.ref ?? null,
      previous: active.previous,
      phase: this.ota?.phase ?? 'idle',
      desired: this.ota?.desired ?? null,
      store: this.storeList,
      engine: this.host?.engineInfo() ?? null,
      telemetryIntervalSec: this.telemetry?.interval ?? this.cfg.telemetryIntervalSec,
      agentVersion: AGENT_VERSION,
    };
    if (this.cfg.group) s.group = this.cfg.group;
    if (this.ota?.rolloutId) s.rolloutId = this.ota.rolloutId;
    if (this.ota?.lastError) s.lastError = this.ota.lastError;
    if (this.agent?.connected) s.mqttVersion = this.agent.protocolVersion;
    return s;
  }

  emit(type: EventType, data: Record<string, unknown>): void {
    const ev: Event = { v: 1, id: randomUUID(), deviceId: this.cfg.deviceId, ts: Date.now(), type, data };
    this.log.info({ event: type, eventId: ev.id, data }, 'event');
    this.agent.publishEvent(ev);
    this.metrics.outbox.set(this.agent.outboxSize);
  }

  /** Debounced: refresh the store listing and publish state. */
  changed(): void {
    if (this.changeTimer) return;
    this.changeTimer = setTimeout(() => {
      this.changeTimer = null;
      void this.publishState();
    }, 20);
  }

  async publishState(): Promise<void> {
    try { this.storeList = await this.store.list(); } catch (e) { this.log.warn({ err: (e as Error).message }, 'store listing failed'); }
    const st = this.buildState(true);
    this.agent.publishState(st);
    this.agent.setOfflineState({ ...st, online: false });
    this.metrics.activeModel.reset();
    if (st.model) this.metrics.activeModel.set({ name: st.model.name, version: st.model.version }, 1);
  }

  /** Services in start order; stopped in reverse order. */
  services: Service[] = [];

  /** Builds every component (no I/O besides opening the outbox), then starts the services in order. */
  async start(): Promise<void> {
    const { cfg } = this;
    const loadModel = this.opts.loadModel ?? (await loadRealEngine());
    this.outbox = new Outbox(path.join(cfg.store.dir, '.state', 'outbox.sqlite'), cfg.outbox.maxEvents);
    this.host = new EngineHost(loadModel, { threads: cfg.engine.threads, backend: cfg.engine.backend, contextSize: cfg.engine.contextSize, health: cfg.health });
    this.scheduler = new Scheduler(this.host, { maxDepth: cfg.queue.maxDepth, maxConcurrent: cfg.queue.maxConcurrent, maxTokens: cfg.engine.maxTokens }, {
      onFinished: ({ source, outcome, result }) => {
        this.metrics.requests.inc({ source, outcome });
        if (result) {
          if (result.timings.ttftMs !== null) this.metrics.ttft.observe(result.timings.ttftMs / 1000);
          if (result.timings.decodeTokPerSec !== null) this.metrics.decodeRate.set(result.timings.decodeTokPerSec);
          this.metrics.tokens.inc(result.usage.completionTokens);
        }
      },
    });
    this.agent = new MqttAgent(cfg, this.outbox, this.log, { ...this.buildState(false) });
    this.metrics.refresh = () => {
      this.metrics.outbox.set(this.agent.outboxSize);
      this.metrics.mqttConnected.set(this.agent.connected ? 1 : 0);
    };
    this.ota = new OtaManager({
      cfg, store: this.store, host: this.host, scheduler: this.scheduler, log: this.log,
      emit: (t, d) => {
        if (t === 'ota.progress' && typeof d.bytes === 'number') {
          const key = `${d.name}@${d.version}`;
          const delta = d.bytes - (key === this.otaKey ? this.otaSeen : 0);
          if (delta > 0) this.metrics.otaBytes.inc(delta);
          this.otaKey = key;
          this.otaSeen = d.bytes;
        }
        this.emit(t, d);
      },
      changed: () => this.changed(),
    });
    this.telemetry = new TelemetryService({
      deviceId: cfg.deviceId, storeDir: cfg.store.dir, sysfsRoot: cfg.jetson.sysfsRoot,
      inference: () => ({ ...this.scheduler.stats, queueDepth: this.scheduler.depth, active: this.scheduler.activeCount }),
    }, cfg.telemetryIntervalSec, (t) => this.agent.publishTelemetry(t), (e) => this.log.warn({ err: (e as Error).message }, 'telemetry failed'));
    this.router = new RequestRouter(cfg.deviceId, this.handlers(), {
      publish: (topic, reply) => this.agent.publishReply(topic, reply),
      event: (type, data) => this.emit(type, data),
      log: this.log,
    }, cfg.queue.defaultDeadlineSec * 1000);
    this.agent.on('cmd', (p) => this.router.handle(p));
    this.agent.on('desired', (p) => this.onDesired(p));
    this.agent.on('connect', () => { this.metrics.mqttConnected.set(1); void this.publishState(); });
    this.agent.on('disconnect', () => this.metrics.mqttConnected.set(0));
    if (cfg.http.enabled) {
      this.http = new HttpApi({
        scheduler: this.scheduler, host: this.host, metrics: this.metrics, log: this.log,
        defaultDeadlineMs: cfg.queue.defaultDeadlineSec * 1000,
        healthy: () => ({ ok: !!this.host.current, detail: { model: this.host.current?.ref ?? null, phase: this.ota.phase, mqtt: this.agent.connected } }),
      });
    }
    const drainMs = () => cfg.shutdown.drainTimeoutSec * 1000;
    let drained = true;
    this.services = [
      { name: 'store', start: async () => { await this.store.init(); await this.store.cleanPartials(); this.storeList = await this.store.list(); }, stop: () => {} },
      { name: 'outbox', start: () => {}, stop: () => this.outbox.close() },
      { name: 'engine', start: () => this.ota.restoreActive(), stop: () => this.host.dispose() },
      {
        name: 'mqtt',
        start: () => this.agent.start(),
        stop: async () => {
          this.emit('device.stopping', { reason: this.stopReason, drained });
          await new Promise((r) => setTimeout(r, 100)); // let the last event's PUBACK arrive
          await this.agent.stop({ ...this.buildState(false), online: false });
        },
      },
      { name: 'scheduler', start: () => {}, stop: async () => { drained = await this.scheduler.drain(drainMs()); } },
      {
        name: 'http',
        start: async () => {
          if (!this.http) return;
          this.httpAddress = await this.http.listen(cfg.http.port, cfg.http.host);
          this.log.info({ address: this.httpAddress }, 'HTTP API listening');
        },
        stop: () => this.http?.close(drainMs()),
      },
      {
        name: 'ota',
        start: () => { const saved = this.store.loadDesired(); if (saved?.model) this.ota.setDesired(saved.model, saved.rolloutId); },
        stop: () => this.ota.stop(),
      },
      { name: 'telemetry', start: () => this.telemetry.start(), stop: () => this.telemetry.stop() },
    ];
    for (const svc of this.services) {
      await svc.start();
      this.log.debug({ service: svc.name }, 'service started');
    }
    this.emit('device.started', { agentVersion: AGENT_VERSION, model: this.host.current?.ref ?? null, http: this.httpAddress ? { host: this.httpAddress.address, port: this.httpAddress.port } : null });
    await this.sd.ready(`model ${this.host.current ? `${this.host.current.ref.name}@${this.host.current.ref.version}` : 'none'}`);
    this.sd.startWatchdog(process.env, () => !this.stopping);
    // one line on stdout so supervisors/tests can tell the daemon is up
    process.stdout.write(`${JSON.stringify({ ready: true, deviceId: cfg.deviceId, http: this.httpAddress?.port ?? null, pid: process.pid })}\n`);
  }

  private onDesired(payload: Buffer): void {
    if (payload.length === 0) { this.ota.setDesired(null); return; }
    let json: unknown;
    try { json = JSON.parse(payload.toString('utf8')); } catch (e) {
      this.emit('request.rejected', { code: 'INVALID_JSON', message: `desired state is not JSON: ${(e as Error).message}`, topic: 'desired' });
      return;
    }
    const d = Desired.safeParse(json);
    if (!d.success) {
      this.emit('request.rejected', { code: 'INVALID_MESSAGE', message: `desired state is invalid: ${d.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, topic: 'desired' });
      return;
    }
    this.ota.setDesired(d.data.model, d.data.rolloutId);
  }

  private handlers(): OpHandlers {
    return {
      ping: async () => ({ pong: true, ts: Date.now(), deviceId: this.cfg.deviceId }),
      info: async () => ({
        state: this.buildState(true),
        model: this.host.current ? this.host.current.model.info : null,
        queue: { depth: this.scheduler.depth, maxDepth: this.cfg.queue.maxDepth, peakDepth: this.scheduler.peakDepth, active: this.scheduler.activeCount },
        inference: this.scheduler.stats,
        outbox: { pending: this.agent.outboxSize, dropped: this.outbox.dropped },
        http: this.httpAddress ? { host: this.httpAddress.address, port: this.httpAddress.port } : null,
        uptimeSec: (Date.now() - this.startedAt) / 1000,
      }),
      generate: (args, ctx) => {
        const input = { ...args } as Record<string, unknown>;
        delete input.stream;
        return this.scheduler.submit({
          id: ctx.id, source: 'mqtt', priority: PRIORITY_REMOTE, input, deadline: ctx.deadline, signal: ctx.signal,
          ...(args.stream === false ? {} : { onChunk: (text: string, tokens: number) => ctx.chunk({ text, tokens }) }),
        });
      },
      cancel: async ({ requestId }) => {
        if (!this.router.cancel(requestId)) throw new ShoalError('NOT_FOUND', `no running request with id '${requestId}'`);
        return { requestId, cancelled: true };
      },
      activate: (ref) => this.ota.activate(ref),
      rollback: () => this.ota.rollback(),
      remove: (ref) => this.ota.remove(ref),
      'set-telemetry-interval': async ({ seconds }) => {
        this.telemetry.setInterval(seconds);
        this.changed();
        return { seconds };
      },
    };
  }

  private stopReason = 'stop';

  /**
   * Stops the services in reverse order: telemetry, OTA, HTTP (in-flight responses finish),
   * scheduler (queued and running requests drain within shutdown.drainTimeoutSec), MQTT
   * (device.stopping event, retained offline state, DISCONNECT), engine, outbox, store.
   */
  stop(reason = 'stop'): Promise<void> {
    if (this.stopping) return this.stopping;
    this.stopReason = reason;
    this.stopping = (async () => {
      this.log.info({ reason }, 'stopping');
      await this.sd.stopping();
      this.sd.stopWatchdog();
      this.router.accepting = false;
      for (const svc of [...this.services].reverse()) {
        try {
          await svc.stop();
        } catch (e) {
          this.log.error({ service: svc.name, err: (e as Error).message }, 'service stop failed');
        }
      }
      this.log.info('stopped');
    })();
    return this.stopping;
  }
}

export interface Service {
  readonly name: string;
  start(): Promise<void> | void;
  stop(): Promise<void> | void;
}
