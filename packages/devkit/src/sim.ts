// Simulated devices for load tests and rollout tests: they speak the v1 contract
// (retained state with a Last Will, telemetry, events, command replies) and
// converge on desired state without loading a model (they do fetch and check
// the manifest, so the artifact server is exercised).
import { createHash, randomUUID } from 'node:crypto';
import mqtt, { type MqttClient } from 'mqtt';
import {
  CHANNEL_POLICY, Desired, Request, encode, parsePayload, topics,
  type DesiredModel, type ModelRef, type Phase, type State,
} from '@shoal/protocol';

export interface SimDeviceOptions {
  id: string;
  brokerUrl: string;
  group?: string;
  labels?: Record<string, string>;
  intervalSec?: number;
  /** Delay of each OTA phase in ms. */
  stepMs?: number;
  /** Versions ("name@version") whose health check fails on this device. */
  failVersions?: Set<string> | ((m: ModelRef) => boolean);
  /** Fetch the manifest and check its sha256 (default true). */
  fetchManifest?: boolean;
  protocolVersion?: 4 | 5;
  username?: string;
  password?: string;
  model?: ModelRef | null;
}

export class SimDevice {
  readonly id: string;
  client!: MqttClient;
  model: ModelRef | null;
  previous: ModelRef | null = null;
  phase: Phase = 'idle';
  desired: DesiredModel | null = null;
  rolloutId: string | undefined;
  lastError: { code: string; message: string } | undefined;
  sent = { state: 0, telemetry: 0, events: 0, replies: 0 };
  private timer: NodeJS.Timeout | null = null;
  private readonly started = Date.now();
  private intervalSec: number;
  private otaSeq = 0;
  private readonly o: SimDeviceOptions;

  constructor(o: SimDeviceOptions) {
    this.o = o;
    this.id = o.id;
    this.model = o.model ?? null;
    this.intervalSec = o.intervalSec ?? 1;
  }

  private state(online = true): State {
    return {
      v: 1, deviceId: this.id, online, ts: Date.now(), group: this.o.group, labels: this.o.labels ?? {},
      model: this.model, previous: this.previous, phase: this.phase, desired: this.desired, rolloutId: this.rolloutId,
      store: [], engine: null, lastError: this.lastError, telemetryIntervalSec: this.intervalSec,
      mqttVersion: this.o.protocolVersion ?? 4, agentVersion: 'sim',
    };
  }

  async connect(): Promise<void> {
    this.client = mqtt.connect(this.o.brokerUrl, {
      clientId: this.id, clean: true, reconnectPeriod: 1000, connectTimeout: 30_000, keepalive: 30,
      protocolVersion: this.o.protocolVersion ?? 4, username: this.o.username ?? this.id, password: this.o.password,
      will: { topic: topics.state(this.id), payload: encode(this.state(false)), qos: 1, retain: true },
    });
    this.client.on('message', (topic, payload) => this.onMessage(topic, payload));
    this.client.on('connect', () => {
      void this.client.subscribeAsync({ [topics.cmd(this.id)]: { qos: 1 }, [topics.desired(this.id)]: { qos: 1 } })
        .then(() => { this.publishState(); this.publishTelemetry(); }).catch(() => undefined);
    });
    this.client.on('error', () => undefined);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`sim ${this.id}: no connection to ${this.o.brokerUrl}`)), 30_000);
      this.client.once('connect', () => { clearTimeout(t); resolve(); });
    });
    this.schedule();
  }

  private schedule(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = setInterval(() => this.publishTelemetry(), this.intervalSec * 1000);
  }

  publishState(): void {
    if (!this.client?.connected) return;
    this.sent.state++;
    this.client.publish(topics.state(this.id), encode(this.state(true)), { qos: 1, retain: true });
  }

  publishTelemetry(): void {
    if (!this.client?.connected) return;
    const t = (Date.now() - this.started) / 1000;
    const msg = {
      v: 1, deviceId: this.id, ts: Date.now(), uptimeSec: t,
      cpu: { loadPct: 20 + 10 * Math.sin(t / 7), perCore: [20, 25, 18, 22] },
      memory: { totalBytes: 8e9, usedBytes: 3e9, availableBytes: 5e9 },
      temperatures: { cpu: 45 + 5 * Math.sin(t / 11), gpu: 43 + 4 * Math.cos(t / 13) },
      sources: ['sim'], missing: [],
      inference: { requests: 0, errors: 0, rejected: 0, queueDepth: 0, active: 0, ttftMs: null, decodeTokPerSec: this.model ? 30 + (this.id.length % 5) : null },
    };
    this.sent.telemetry++;
    this.client.publish(topics.telemetry(this.id), encode(msg), { qos: CHANNEL_POLICY.telemetry.qos });
  }

  private event(type: string, data: Record<string, unknown>): void {
    this.sent.events++;
    this.client.publish(topics.events(this.id), encode({ v: 1, id: randomUUID(), deviceId: this.id, ts: Date.now(), type, data }), { qos: 1 });
  }

  private onMessage(topic: string, payload: Buffer): void {
    if (topic === topics.desired(this.id)) {
      if (payload.length === 0) return;
      const r = parsePayload(Desired, payload);
      if (r.ok) void this.converge(r.value);
      return;
    }
    const r = parsePayload(Request, payload);
    if (!r.ok) return;
    void this.handle(r.value);
  }

  private reply(req: { id: string; replyTo: string }, seq: number, body: Record<string, unknown>): void {
    this.sent.replies++;
    this.client.publish(req.replyTo, encode({ v: 1, id: req.id, deviceId: this.id, seq, ...body }), { qos: 1 });
  }

  private async handle(req: Request): Promise<void> {
    switch (req.op) {
      case 'ping': return this.reply(req, 0, { done: true, ok: true, result: { pong: true, ts: Date.now() } });
      case 'info': return this.reply(req, 0, { done: true, ok: true, result: { deviceId: this.id, model: this.model, sim: true } });
      case 'set-telemetry-interval': {
        const s = Number((req.args as { seconds?: number }).seconds);
        if (!(s >= 1)) return this.reply(req, 0, { done: true, ok: false, error: { code: 'BAD_ARGS', message: 'seconds must be >= 1' } });
        this.intervalSec = s;
        this.schedule();
        this.publishState();
        return this.reply(req, 0, { done: true, ok: true, result: { seconds: s } });
      }
      case 'generate': {
        if (!this.model) return this.reply(req, 0, { done: true, ok: false, error: { code: 'NO_MODEL', message: 'no active model' } });
        const prompt = String((req.args as { prompt?: string }).prompt ?? '');
        const max = Number((req.args as { maxTokens?: number }).maxTokens ?? 8);
        const words = `simulated answer from ${this.id} to: ${prompt}`.split(' ').slice(0, max);
        let seq = 0;
        for (const w of words) {
          this.reply(req, seq++, { done: false, ok: true, chunk: { text: (seq > 1 ? ' ' : '') + w, tokens: 1 } });
          await new Promise((r) => setTimeout(r, 5));
        }
        return this.reply(req, seq, {
          done: true, ok: true, result: {
            text: words.join(' '), stopReason: 'max_tokens', model: this.model,
            usage: { promptTokens: prompt.split(' ').length, completionTokens: words.length, totalTokens: prompt.split(' ').length + words.length },
            timings: { queueMs: 0, ttftMs: 5, totalMs: 5 * words.length, prefillTokPerSec: null, decodeTokPerSec: 200 },
          },
        });
      }
      default:
        return this.reply(req, 0, { done: true, ok: false, error: { code: 'UNSUPPORTED', message: `simulated device does not implement ${req.op}` } });
    }
  }

  private shouldFail(m: ModelRef): boolean {
    const f = this.o.failVersions;
    if (!f) return false;
    return typeof f === 'function' ? f(m) : f.has(`${m.name}@${m.version}`);
  }

  private async converge(d: Desired): Promise<void> {
    const seq = ++this.otaSeq;
    this.desired = d.model;
    this.rolloutId = d.rolloutId;
    const target = d.model;
    if (!target) {
      if (this.model) { this.previous = this.model; this.model = null; }
      this.phase = 'idle';
      this.publishState();
      return;
    }
    if (this.model && this.model.name === target.name && this.model.version === target.version) {
      this.phase = 'active';
      this.lastError = undefined;
      this.publishState();
      return;
    }
    const step = this.o.stepMs ?? 50;
    const ref = { name: target.name, version: target.version };
    const go = async (phase: Phase) => {
      await new Promise((r) => setTimeout(r, step));
      if (seq !== this.otaSeq) throw new Error('superseded');
      this.phase = phase;
      this.publishState();
    };
    try {
      this.event('ota.started', { ...ref });
      await go('downloading');
      if (this.o.fetchManifest !== false) {
        // like the real daemon, retry the download a few times (controller restarts, network blips)
        for (let attempt = 1; ; attempt++) {
          try {
            const res = await fetch(target.manifestUrl);
            const body = Buffer.from(await res.arrayBuffer());
            const sha = createHash('sha256').update(body).digest('hex');
            if (!res.ok || sha !== target.manifestSha256) throw Object.assign(new Error(`manifest ${res.status} sha ${sha.slice(0, 12)}`), { code: 'MANIFEST_MISMATCH' });
            break;
          } catch (e) {
            if (attempt >= 5 || seq !== this.otaSeq) throw e;
            await new Promise((r) => setTimeout(r, 300 * attempt));
          }
        }
      }
      this.event('ota.progress', { ...ref, phase: 'downloading', bytes: 1, totalBytes: 1, percent: 100, rateBytesPerSec: 1 });
      await go('verifying');
      await go('health-check');
      if (seq !== this.otaSeq) return;
      if (this.shouldFail(ref)) {
        this.lastError = { code: 'HEALTH_CHECK_FAILED', message: `simulated health check failure of ${ref.name}@${ref.version}` };
        this.phase = 'rolled-back';
        this.event('ota.failed', { ...ref, error: this.lastError });
        this.publishState();
        return;
      }
      this.previous = this.model;
      this.model = ref;
      this.phase = 'active';
      this.lastError = undefined;
      this.event('ota.activated', { ...ref });
      this.publishState();
    } catch (e) {
      if ((e as Error).message === 'superseded') return;
      this.lastError = { code: (e as { code?: string }).code ?? 'DOWNLOAD_FAILED', message: (e as Error).message };
      this.phase = 'failed';
      this.event('ota.failed', { ...ref, error: this.lastError });
      this.publishState();
    }
  }

  /** Drops the connection without DISCONNECT (the broker publishes the Last Will). */
  dropConnection(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.client.options.reconnectPeriod = 0;
    this.client.stream.destroy();
  }

  async reconnect(): Promise<void> {
    await this.client.endAsync(true).catch(() => undefined);
    await this.connect();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (this.client?.connected) {
      await this.client.publishAsync(topics.state(this.id), encode(this.state(false)), { qos: 1, retain: true }).catch(() => undefined);
    }
    await this.client?.endAsync().catch(() => undefined);
  }
}

export interface SimFleetOptions extends Omit<SimDeviceOptions, 'id'> {
  devices: number;
  prefix?: string;
  /** Groups assigned round robin. */
  groups?: string[];
  connectConcurrency?: number;
}

export class SimFleet {
  readonly devices: SimDevice[] = [];
  constructor(private readonly o: SimFleetOptions) {
    for (let i = 0; i < o.devices; i++) {
      const id = `${o.prefix ?? 'sim'}-${String(i + 1).padStart(4, '0')}`;
      const group = o.groups?.length ? o.groups[i % o.groups.length] : o.group;
      this.devices.push(new SimDevice({ ...o, id, group, labels: { ...(o.labels ?? {}), sim: 'true' } }));
    }
  }

  async start(onProgress?: (n: number) => void): Promise<void> {
    const conc = this.o.connectConcurrency ?? 50;
    let next = 0;
    let done = 0;
    const worker = async () => {
      while (next < this.devices.length) {
        const d = this.devices[next++]!;
        await d.connect();
        onProgress?.(++done);
      }
    };
    await Promise.all(Array.from({ length: Math.min(conc, this.devices.length) }, worker));
  }

  sent(): { state: number; telemetry: number; events: number; replies: number } {
    const s = { state: 0, telemetry: 0, events: 0, replies: 0 };
    for (const d of this.devices) { s.state += d.sent.state; s.telemetry += d.sent.telemetry; s.events += d.sent.events; s.replies += d.sent.replies; }
    return s;
  }

  async stop(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.stop()));
  }
}
