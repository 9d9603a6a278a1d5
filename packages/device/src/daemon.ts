// The device daemon's composition root: builds every component, then runs them
// as a list of services (started in order, stopped in reverse). It owns no
// logic of its own beyond wiring: the active model is model/active-model.ts,
// each MQTT op is a file in mqtt/handlers/, the state document is state.ts.
import { randomUUID } from 'node:crypto';
import path from 'node:path';
import type { AddressInfo } from 'node:net';
import type { EventType, State, StoreEntry, Event } from '@shoal/protocol';
import { createLogger, type Logger } from '@shoal/common';
import type { DeviceConfig } from './config/load.js';
import { ModelStore } from './ota/store.js';
import { OtaManager } from './ota/manager.js';
import { Outbox } from './mqtt/outbox.js';
import { MqttAgent } from './mqtt/agent.js';
import { RequestRouter } from './mqtt/router.js';
import { onDesired } from './mqtt/desired.js';
import { opHandlers } from './mqtt/handlers/index.js';
import { ModelLoader, loadRealEngine, type LoadModelFn } from './model/loader.js';
import { ActiveModel } from './model/active-model.js';
import { releaseMemory } from './model/release-memory.js';
import { Scheduler } from './scheduler.js';
import { TelemetryService } from './telemetry/service.js';
import { HttpApi } from './http/api.js';
import { recoverStore, recoveredSomething } from './ota/store-recovery.js';
import { DeviceMetrics } from './metrics.js';
import { SdNotify } from './sdnotify.js';
import { AGENT_VERSION, buildState } from './state.js';
import type { Service } from './service.js';

export { AGENT_VERSION };

export interface DaemonOptions {
  /** Engine entry point; defaults to @shoal/engine (with its trimNativeHeap). */
  loadModel?: LoadModelFn;
  /** Returns freed C-heap memory to the system after model operations (with a full GC first); defaults to @shoal/engine's with the real engine. */
  trimNativeHeap?: () => boolean;
  logger?: Logger;
}

export class DeviceDaemon {
  readonly log: Logger;
  readonly store: ModelStore;
  readonly metrics = new DeviceMetrics();
  /** Services in start order; stopped in reverse order. */
  services: Service[] = [];
  private outbox!: Outbox;
  private active!: ActiveModel;
  private scheduler!: Scheduler;
  private ota!: OtaManager;
  private agent!: MqttAgent;
  private router!: RequestRouter;
  private telemetry!: TelemetryService;
  private http: HttpApi | null = null;
  private httpAddress: AddressInfo | null = null;
  private sd = new SdNotify();
  private storeList: StoreEntry[] = [];
  private changeTimer: NodeJS.Timeout | null = null;
  private stopping: Promise<void> | null = null;
  private stopReason = 'stop';
  private startedAt = Date.now();
  private otaKey = '';
  private otaSeen = 0;

  constructor(readonly cfg: DeviceConfig, private readonly opts: DaemonOptions = {}) {
    this.log = opts.logger ?? createLogger(cfg.logLevel, { deviceId: cfg.deviceId });
    this.store = new ModelStore(cfg.store.dir);
  }

  private state(online: boolean): State {
    return buildState({
      cfg: this.cfg,
      model: this.active?.ref ?? null,
      previous: this.store.getActive().previous,
      engine: this.active?.engineInfo() ?? null,
      ota: this.ota ?? null,
      store: this.storeList,
      telemetryIntervalSec: this.telemetry?.interval ?? this.cfg.telemetryIntervalSec,
      mqttVersion: this.agent?.connected ? this.agent.protocolVersion : null,
    }, online);
  }

  private emit(type: EventType, data: Record<string, unknown>): void {
    const ev: Event = { v: 1, id: randomUUID(), deviceId: this.cfg.deviceId, ts: Date.now(), type, data };
    this.log.info({ event: type, eventId: ev.id, data }, 'event');
    this.agent.publishEvent(ev);
    this.metrics.outbox.set(this.agent.outboxSize);
  }

  /** Debounced: refresh the store listing and publish state. */
  private changed(): void {
    if (this.changeTimer) return;
    this.changeTimer = setTimeout(() => {
      this.changeTimer = null;
      void this.publishState();
    }, 20);
  }

  private stateChain: Promise<void> = Promise.resolve();

  /** Serialized, so a slow store listing never publishes an older state after a newer one. */
  private publishState(): Promise<void> {
    this.stateChain = this.stateChain.then(() => this.publishStateNow());
    return this.stateChain;
  }

  private async publishStateNow(): Promise<void> {
    try { this.storeList = await this.store.list(); } catch (e) { this.log.warn({ err: (e as Error).message }, 'store listing failed'); }
    const st = this.state(true);
    this.agent.publishState(st);
    this.agent.setOfflineState({ ...st, online: false });
    this.metrics.activeModel.reset();
    if (st.model) this.metrics.activeModel.set({ name: st.model.name, version: st.model.version }, 1);
  }

  /** Counts OTA download bytes once per version (progress events repeat the running total). */
  private countOtaBytes(data: Record<string, unknown>): void {
    if (typeof data.bytes !== 'number') return;
    const key = `${data.name}@${data.version}`;
    const delta = data.bytes - (key === this.otaKey ? this.otaSeen : 0);
    if (delta > 0) this.metrics.otaBytes.inc(delta);
    this.otaKey = key;
    this.otaSeen = data.bytes;
  }

  /** Builds every component (no I/O besides opening the outbox), then starts the services in order. */
  async start(): Promise<void> {
    const { cfg } = this;
    const engine = this.opts.loadModel ? { loadModel: this.opts.loadModel, trimNativeHeap: this.opts.trimNativeHeap } : await loadRealEngine();
    const { loadModel, trimNativeHeap } = engine;
    this.outbox = new Outbox(path.join(cfg.store.dir, '.state', 'outbox.sqlite'), cfg.outbox.maxEvents);
    const loader = new ModelLoader(loadModel, { threads: cfg.engine.threads, backend: cfg.engine.backend, kvCache: cfg.engine.kvCache, lmHead: cfg.engine.lmHead, expertCache: cfg.engine.expertCache, contextSize: cfg.engine.contextSize, health: cfg.health });
    this.active = new ActiveModel(this.store, loader);
    this.scheduler = new Scheduler(this.active, {
      maxDepth: cfg.queue.maxDepth, maxConcurrent: cfg.queue.maxConcurrent, maxTokens: cfg.engine.maxTokens,
      kvSlots: cfg.engine.kvSlots, kvMemoryBytes: cfg.engine.kvMemoryMB * 1024 * 1024, prefixCache: cfg.engine.prefixCache,
    }, {
      onFinished: ({ source, outcome, result }) => {
        this.metrics.requests.inc({ source, outcome });
        if (result) {
          if (result.timings.ttftMs !== null) this.metrics.ttft.observe(result.timings.ttftMs / 1000);
          if (result.timings.decodeTokPerSec !== null) this.metrics.decodeRate.set(result.timings.decodeTokPerSec);
          this.metrics.tokens.inc(result.usage.completionTokens);
        }
      },
    });
    this.agent = new MqttAgent(cfg, this.outbox, this.log, { ...this.state(false) });
    this.metrics.refresh = () => {
      this.metrics.outbox.set(this.agent.outboxSize);
      this.metrics.mqttConnected.set(this.agent.connected ? 1 : 0);
    };
    this.ota = new OtaManager({
      cfg, store: this.store, loader, active: this.active, scheduler: this.scheduler, log: this.log,
      emit: (t, d) => {
        if (t === 'ota.progress') this.countOtaBytes(d);
        this.emit(t, d);
      },
      changed: () => this.changed(),
      releaseMemory: () => releaseMemory(trimNativeHeap),
    });
    this.telemetry = new TelemetryService({
      deviceId: cfg.deviceId, storeDir: cfg.store.dir, sysfsRoot: cfg.jetson.sysfsRoot,
      inference: () => ({ ...this.scheduler.stats, queueDepth: this.scheduler.depth, active: this.scheduler.activeCount }),
    }, cfg.telemetryIntervalSec, (t) => this.agent.publishTelemetry(t), (e) => this.log.warn({ err: (e as Error).message }, 'telemetry failed'));
    const handlers = opHandlers({
      cfg, active: this.active, scheduler: this.scheduler, ota: this.ota, telemetry: this.telemetry,
      state: () => this.state(true),
      changed: () => this.changed(),
      cancel: (id) => this.router.cancel(id),
      outbox: () => ({ pending: this.agent.outboxSize, dropped: this.outbox.dropped }),
      http: () => (this.httpAddress ? { host: this.httpAddress.address, port: this.httpAddress.port } : null),
      uptimeSec: () => (Date.now() - this.startedAt) / 1000,
    });
    this.router = new RequestRouter(cfg.deviceId, handlers, {
      publish: (topic, reply) => this.agent.publishReply(topic, reply),
      event: (type, data) => this.emit(type, data),
      log: this.log,
    }, cfg.queue.defaultDeadlineSec * 1000);
    this.agent.on('cmd', (p) => this.router.handle(p));
    this.agent.on('desired', (p) => onDesired(p, (m, r, u) => this.ota.setDesired(m, r, u), (t, d) => this.emit(t, d)));
    this.agent.on('connect', () => { this.metrics.mqttConnected.set(1); void this.publishState(); });
    this.agent.on('disconnect', () => this.metrics.mqttConnected.set(0));
    if (cfg.http.enabled) {
      this.http = new HttpApi({
        scheduler: this.scheduler, models: this.active, metrics: this.metrics, log: this.log,
        defaultDeadlineMs: cfg.queue.defaultDeadlineSec * 1000,
        healthy: () => ({ ok: !!this.active.current, detail: { model: this.active.ref, phase: this.ota.phase, mqtt: this.agent.connected } }),
      });
    }
    const drainMs = () => cfg.shutdown.drainTimeoutSec * 1000;
    let drained = true;
    this.services = [
      {
        name: 'store',
        start: async () => {
          await this.store.init();
          const saved = this.store.loadDesired()?.model ?? null;
          const report = await recoverStore(this.store, cfg.store.keepVersions, saved ? { name: saved.name, version: saved.version } : null);
          if (recoveredSomething(report)) {
            this.log.info(report, 'store recovered');
            this.emit('store.recovered', { ...report });
          }
          this.storeList = await this.store.list();
        },
        stop: () => {},
      },
      { name: 'outbox', start: () => {}, stop: () => this.outbox.close() },
      { name: 'engine', start: () => this.ota.restoreActive(), stop: () => this.active.dispose() },
      {
        name: 'mqtt',
        start: () => this.agent.start(),
        stop: async () => {
          this.emit('device.stopping', { reason: this.stopReason, drained });
          await new Promise((r) => setTimeout(r, 100)); // let the last event's PUBACK arrive
          await this.agent.stop({ ...this.state(false), online: false });
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
        start: () => { const saved = this.store.loadDesired(); if (saved?.model) this.ota.setDesired(saved.model, saved.rolloutId, saved.retryUntil); },
        stop: () => this.ota.stop(),
      },
      { name: 'telemetry', start: () => this.telemetry.start(), stop: () => this.telemetry.stop() },
    ];
    for (const svc of this.services) {
      await svc.start();
      this.log.debug({ service: svc.name }, 'service started');
    }
    this.emit('device.started', { agentVersion: AGENT_VERSION, model: this.active.ref, http: this.httpAddress ? { host: this.httpAddress.address, port: this.httpAddress.port } : null });
    await this.sd.ready(`model ${this.active.ref ? `${this.active.ref.name}@${this.active.ref.version}` : 'none'}`);
    this.sd.startWatchdog(process.env, () => !this.stopping);
    // one line on stdout so supervisors/tests can tell the daemon is up
    process.stdout.write(`${JSON.stringify({ ready: true, deviceId: cfg.deviceId, http: this.httpAddress?.port ?? null, pid: process.pid })}\n`);
  }

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
