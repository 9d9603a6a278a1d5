// The controller's MQTT connection: subscriptions to every device's state,
// telemetry and events; request/reply over each device's cmd topic; desired state.
import { EventEmitter } from 'node:events';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import {
  CHANNEL_POLICY, OP_ARGS, Op, Reply, encode, filters, formatIssues, parsePayload, parseTopic, topics,
  type Desired, type DeviceChannel, type Reply as ReplyT,
} from '@shoal/protocol';
import { ShoalError } from '@shoal/common';

export interface LinkOptions {
  url: string;
  username?: string;
  password?: string;
  clientId?: string;
  protocolVersion?: 4 | 5;
  ca?: string;
  cert?: string;
  key?: string;
  /** Subscribe to device traffic as a member of this MQTT 5 shared-subscription group. */
  sharedGroup?: string;
  /** Do not subscribe to device traffic (CLI clients only send requests). */
  requestsOnly?: boolean;
  connectTimeoutMs?: number;
}

export interface RequestOptions {
  timeoutMs?: number;
  onChunk?: (r: ReplyT) => void;
  signal?: AbortSignal;
}

interface Pending {
  deviceId: string;
  resolve: (r: ReplyT) => void;
  reject: (e: Error) => void;
  onChunk?: (r: ReplyT) => void;
  timer: NodeJS.Timeout;
}

export interface LinkEvents {
  message: [deviceId: string, channel: DeviceChannel, payload: Buffer];
  invalidReply: [reason: string];
}

export class FleetLink extends EventEmitter<LinkEvents> {
  readonly clientId: string;
  readonly client: MqttClient;
  private readonly pending = new Map<string, Pending>();
  private readonly replyTopic: string;

  private constructor(client: MqttClient, clientId: string) {
    super();
    this.client = client;
    this.clientId = clientId;
    this.replyTopic = topics.replies(clientId);
  }

  static async connect(o: LinkOptions): Promise<FleetLink> {
    const clientId = o.clientId ?? `shoal-ctl-${randomUUID().slice(0, 8)}`;
    const opts: IClientOptions = {
      clientId,
      protocolVersion: o.protocolVersion ?? 4,
      clean: true,
      reconnectPeriod: 1000,
      connectTimeout: o.connectTimeoutMs ?? 10_000,
      keepalive: 30,
      username: o.username,
      password: o.password,
    };
    if (o.ca) opts.ca = fs.readFileSync(o.ca);
    if (o.cert) opts.cert = fs.readFileSync(o.cert);
    if (o.key) opts.key = fs.readFileSync(o.key);
    const client = mqtt.connect(o.url, opts);
    const link = new FleetLink(client, clientId);
    client.on('message', (topic, payload) => link.onMessage(topic, payload));
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        client.end(true);
        reject(new ShoalError('BROKER_UNAVAILABLE', `no connection to the broker at ${o.url} after ${opts.connectTimeout} ms; start it or fix broker.url`));
      }, opts.connectTimeout);
      const fail = (err: Error) => {
        clearTimeout(timer);
        client.end(true);
        reject(new ShoalError('BROKER_UNAVAILABLE', `broker ${o.url} refused the connection: ${err.message}; check the URL and credentials`));
      };
      client.once('error', fail);
      client.once('connect', () => {
        clearTimeout(timer);
        client.removeListener('error', fail);
        resolve();
      });
    });
    client.on('error', () => { /* reconnects; errors surface through request timeouts */ });
    const share = (f: string) => (o.sharedGroup ? `$share/${o.sharedGroup}/${f}` : f);
    const subs: Record<string, { qos: 0 | 1 }> = { [link.replyTopic]: { qos: 1 } };
    if (!o.requestsOnly) {
      subs[share(filters.allStates)] = { qos: 1 };
      subs[share(filters.allTelemetry)] = { qos: 0 };
      subs[share(filters.allEvents)] = { qos: 1 };
      // retained state is not delivered to shared subscriptions: also read it once directly
      if (o.sharedGroup) subs[filters.allStates] = { qos: 1 };
    }
    await client.subscribeAsync(subs);
    return link;
  }

  get connected(): boolean {
    return this.client.connected;
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      const t = parseTopic(topic);
      if (!t) return;
      if (t.kind === 'replies') return this.onReply(payload);
      this.emit('message', t.deviceId, t.channel, payload);
    } catch (e) {
      this.emit('invalidReply', `handler error on ${topic}: ${(e as Error).message}`);
    }
  }

  private onReply(payload: Buffer): void {
    const r = parsePayload(Reply, payload);
    if (!r.ok) return void this.emit('invalidReply', `${r.code}: ${r.message}`);
    const p = this.pending.get(r.value.id);
    if (!p) return;
    if (!r.value.done) {
      p.onChunk?.(r.value);
      return;
    }
    clearTimeout(p.timer);
    this.pending.delete(r.value.id);
    p.resolve(r.value);
  }

  /** Validates op and args against the contract. */
  static checkRequest(op: string, args: unknown): { op: Op; args: Record<string, unknown> } {
    const o = Op.safeParse(op);
    if (!o.success) throw new ShoalError('BAD_REQUEST', `unknown op '${op}'; use one of ${Op.options.join(', ')}`);
    const a = OP_ARGS[o.data].safeParse(args ?? {});
    if (!a.success) throw new ShoalError('BAD_REQUEST', `bad args for ${o.data}: ${formatIssues(a.error)}`);
    return { op: o.data, args: a.data as Record<string, unknown> };
  }

  /** Sends a request to a device; resolves with the final reply (ok or not). */
  request(deviceId: string, op: string, args: unknown, ro: RequestOptions = {}): Promise<ReplyT> {
    const checked = FleetLink.checkRequest(op, args);
    const id = randomUUID();
    const timeoutMs = ro.timeoutMs ?? 30_000;
    const envelope = { v: 1, id, op: checked.op, args: checked.args, replyTo: this.replyTopic, deadline: Date.now() + timeoutMs };
    return new Promise<ReplyT>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        if (checked.op === 'generate') this.cancel(deviceId, id);
        reject(new ShoalError('TIMEOUT', `device ${deviceId} did not finish '${checked.op}' within ${timeoutMs} ms; is it online? (shoal fleet ls)`));
      }, timeoutMs);
      this.pending.set(id, { deviceId, resolve, reject, onChunk: ro.onChunk, timer });
      ro.signal?.addEventListener('abort', () => {
        const p = this.pending.get(id);
        if (!p) return;
        clearTimeout(p.timer);
        this.pending.delete(id);
        if (checked.op === 'generate') this.cancel(deviceId, id);
        reject(new ShoalError('TIMEOUT', 'request cancelled by the client'));
      }, { once: true });
      this.client.publish(topics.cmd(deviceId), encode(envelope), { qos: CHANNEL_POLICY.cmd.qos }, (err) => {
        if (err) {
          clearTimeout(timer);
          this.pending.delete(id);
          reject(new ShoalError('BROKER_UNAVAILABLE', `publish to ${deviceId} failed: ${err.message}`));
        }
      });
    });
  }

  private cancel(deviceId: string, requestId: string): void {
    const env = { v: 1, id: randomUUID(), op: 'cancel', args: { requestId }, replyTo: this.replyTopic, deadline: Date.now() + 10_000 };
    this.client.publish(topics.cmd(deviceId), encode(env), { qos: 1 });
  }

  /** Publishes the retained desired state of a device. */
  async publishDesired(deviceId: string, desired: Desired): Promise<void> {
    await this.client.publishAsync(topics.desired(deviceId), encode(desired), { qos: CHANNEL_POLICY.desired.qos, retain: true });
  }

  async close(): Promise<void> {
    for (const [id, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new ShoalError('BROKER_UNAVAILABLE', 'controller is shutting down'));
      this.pending.delete(id);
    }
    await this.client.endAsync();
  }
}
