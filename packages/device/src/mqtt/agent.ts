// MQTT connection of the device: one fresh mqtt.js client per connection
// attempt (no mqtt.js-internal retry or in-memory store), so delivery is driven
// by our durable outbox: every un-acked event is re-published after reconnect
// and removed only on PUBACK. Reconnects use jittered exponential backoff.
// protocolVersion 'auto' tries MQTT 5 and falls back to 3.1.1 (e.g. aedes).
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import mqtt, { type MqttClient, type IClientOptions } from 'mqtt';
import { topics, CHANNEL_POLICY, type Reply } from '@shoal/protocol';
import type { DeviceConfig } from '../config/load.js';
import type { Outbox } from './outbox.js';
import type { Logger } from '@shoal/common';

export interface AgentEvents {
  connect: [version: 4 | 5];
  disconnect: [];
  cmd: [payload: Buffer];
  desired: [payload: Buffer];
}

export function jitteredBackoff(attempt: number, minMs: number, maxMs: number): number {
  const exp = Math.min(maxMs, minMs * 2 ** Math.max(0, attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

export class MqttAgent extends EventEmitter<AgentEvents> {
  private client: MqttClient | null = null;
  private version: 4 | 5;
  private attempts = 0;
  private stopped = false;
  private timer: NodeJS.Timeout | null = null;
  private inflight = new Set<number>();
  private pendingReplies: Array<{ topic: string; payload: string }> = [];
  private stateJson: string | null = null;
  private offlineJson: string;
  connected = false;
  connectCount = 0;

  constructor(private readonly cfg: DeviceConfig, private readonly outbox: Outbox, private readonly log: Logger, offlineState: object) {
    super();
    this.version = cfg.broker.protocolVersion === 4 ? 4 : 5;
    this.offlineJson = JSON.stringify(offlineState);
  }

  get protocolVersion(): 4 | 5 { return this.version; }

  start(): void {
    this.stopped = false;
    this.connectOnce();
  }

  /** The Last Will payload used from the next connection on. */
  setOfflineState(state: object): void { this.offlineJson = JSON.stringify(state); }

  private options(): IClientOptions {
    const b = this.cfg.broker;
    const o: IClientOptions = {
      clientId: this.cfg.deviceId,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: b.keepaliveSec,
      protocolVersion: this.version,
      will: { topic: topics.state(this.cfg.deviceId), payload: Buffer.from(this.offlineJson), qos: 1, retain: true },
    };
    if (b.username !== undefined) o.username = b.username;
    if (b.password !== undefined) o.password = b.password;
    if (b.caFile) o.ca = readFileSync(b.caFile);
    if (b.certFile) o.cert = readFileSync(b.certFile);
    if (b.keyFile) o.key = readFileSync(b.keyFile);
    if (this.version === 5) o.properties = { sessionExpiryInterval: 0 };
    return o;
  }

  private connectOnce(): void {
    if (this.stopped) return;
    let opts: IClientOptions;
    try {
      opts = this.options();
    } catch (e) {
      this.log.error({ err: (e as Error).message }, 'cannot read broker TLS files; retrying');
      this.scheduleReconnect();
      return;
    }
    const c = mqtt.connect(this.cfg.broker.url, opts);
    this.client = c;
    let gotConnack = false;
    c.on('connect', () => {
      if (this.client !== c) return;
      gotConnack = true;
      this.attempts = 0;
      this.connected = true;
      this.connectCount++;
      this.log.info({ url: this.cfg.broker.url, protocolVersion: this.version }, 'connected to broker');
      c.subscribe([topics.cmd(this.cfg.deviceId), topics.desired(this.cfg.deviceId)], { qos: 1 }, (err) => {
        if (err) this.log.warn({ err: err.message }, 'subscribe failed');
      });
      if (this.stateJson) c.publish(topics.state(this.cfg.deviceId), this.stateJson, { qos: 1, retain: true });
      for (const r of this.pendingReplies.splice(0)) c.publish(r.topic, r.payload, { qos: 1 });
      this.emit('connect', this.version);
      this.flushEvents();
    });
    c.on('message', (topic, payload) => {
      if (this.client !== c) return;
      if (topic === topics.cmd(this.cfg.deviceId)) this.emit('cmd', payload);
      else if (topic === topics.desired(this.cfg.deviceId)) this.emit('desired', payload);
    });
    c.on('error', (err: Error & { code?: number | string }) => {
      if (this.client !== c) return;
      this.log.warn({ err: err.message, code: err.code, protocolVersion: this.version }, 'mqtt error');
      // a refused or unparsable CONNACK under MQTT 5 means the broker speaks 3.1.1 only
      if (this.cfg.broker.protocolVersion === 'auto' && this.version === 5 && !gotConnack
          && (err.code === 1 || err.code === 132 || /protocol|malformed|parse|header/i.test(err.message))) {
        this.log.info('broker refused MQTT 5; falling back to MQTT 3.1.1');
        this.version = 4;
      }
      c.end(true);
    });
    c.on('close', () => {
      if (this.client !== c) return;
      const wasConnected = this.connected;
      this.connected = false;
      this.client = null;
      this.inflight.clear();
      c.removeAllListeners('message');
      c.end(true);
      if (wasConnected) { this.log.warn('disconnected from broker'); this.emit('disconnect'); }
      this.scheduleReconnect();
    });
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.timer) return;
    this.attempts++;
    const delay = jitteredBackoff(this.attempts, this.cfg.broker.reconnectMinMs, this.cfg.broker.reconnectMaxMs);
    this.log.debug({ delay, attempt: this.attempts }, 'reconnecting');
    this.timer = setTimeout(() => { this.timer = null; this.connectOnce(); }, delay);
  }

  /** Retained state (also re-published on every connect). */
  publishState(state: object): void {
    this.stateJson = JSON.stringify(state);
    if (this.connected && this.client) this.client.publish(topics.state(this.cfg.deviceId), this.stateJson, { qos: 1, retain: true });
  }

  publishTelemetry(t: object): void {
    if (this.connected && this.client) this.client.publish(topics.telemetry(this.cfg.deviceId), JSON.stringify(t), { qos: CHANNEL_POLICY.telemetry.qos });
  }

  publishReply(topic: string, reply: Reply): void {
    const payload = JSON.stringify(reply);
    if (this.connected && this.client) this.client.publish(topic, payload, { qos: 1 });
    else {
      this.pendingReplies.push({ topic, payload });
      if (this.pendingReplies.length > 1000) this.pendingReplies.shift();
    }
  }

  /** Appends an event to the durable outbox and tries to deliver it. */
  publishEvent(event: object): void {
    this.outbox.append(topics.events(this.cfg.deviceId), JSON.stringify(event));
    this.flushEvents();
  }

  flushEvents(): void {
    const c = this.client;
    if (!this.connected || !c) return;
    const rows = this.outbox.pending(256);
    for (const row of rows) {
      if (this.inflight.has(row.seq)) continue;
      this.inflight.add(row.seq);
      c.publish(row.topic, row.payload, { qos: 1 }, (err) => {
        if (this.client !== c) return; // a newer connection re-sends it
        this.inflight.delete(row.seq);
        if (err) { this.log.debug({ err: err.message, seq: row.seq }, 'event publish not acknowledged'); return; }
        this.outbox.ack(row.seq);
        if (this.inflight.size === 0) this.flushEvents();
      });
    }
  }

  get outboxSize(): number { return this.outbox.size(); }

  /** Publishes the offline state (retained) and disconnects cleanly. */
  async stop(offlineState: object, timeoutMs = 2000): Promise<void> {
    this.stopped = true;
    if (this.timer) { clearTimeout(this.timer); this.timer = null; }
    const c = this.client;
    this.client = null;
    if (!c) return;
    if (this.connected) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, timeoutMs);
        c.publish(topics.state(this.cfg.deviceId), JSON.stringify(offlineState), { qos: 1, retain: true }, () => { clearTimeout(t); resolve(); });
      });
    }
    this.connected = false;
    await new Promise<void>((resolve) => {
      const t = setTimeout(() => { c.end(true); resolve(); }, timeoutMs);
      c.end(false, {}, () => { clearTimeout(t); resolve(); });
    });
  }
}
