// Test fixtures for the device daemon: real brokers (mosquitto, aedes), a real
// HTTP package server with Range support and byte accounting, package building
// with a test Ed25519 key, the daemon as a child process, an MQTT test client.
import { spawn, type ChildProcess } from 'node:child_process';
import { createServer as createNetServer, type Server as NetServer, type AddressInfo, type Socket } from 'node:net';
import http from 'node:http';
import { promises as fsp, existsSync, mkdtempSync, writeFileSync, createReadStream, statSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateKeyPairSync, createHash, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import mqtt, { type MqttClient } from 'mqtt';
import { Aedes } from 'aedes';
import { CLI_MAIN, repoRoot, skipUnlessInstalled, storiesPath } from '@shoal/testkit';
import { signManifest, sha256Hex, type UnsignedManifest, topics, type Reply, type State, type Event, type Op } from '@shoal/protocol';

export const MODEL_DIR = storiesPath();
export const MODEL_FILES = ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors'];
export const CLI = CLI_MAIN;

export function engineAvailable(): string | false {
  if (!existsSync(path.join(repoRoot, 'native', 'build', 'Release', 'shoal.node'))) return 'engine addon native/build/Release/shoal.node not built (make native)';
  if (!existsSync(CLI)) return `${CLI} missing (make ts)`;
  if (!existsSync(MODEL_DIR)) return `model ${MODEL_DIR} missing`;
  return false;
}

const tmpDirs: string[] = [];
process.on('exit', () => {
  if (process.env.SHOAL_KEEP_TMP) return;
  for (const d of tmpDirs) { try { rmSync(d, { recursive: true, force: true }); } catch { /* best effort */ } }
});

/** A temporary directory removed when the test process exits (SHOAL_KEEP_TMP=1 keeps it). */
export function tmpDir(prefix = 'shoal-dev-'): string {
  const d = mkdtempSync(path.join(os.tmpdir(), prefix));
  tmpDirs.push(d);
  return d;
}

export async function freePort(): Promise<number> {
  const s = createNetServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what: string, everyMs = 50): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v as NonNullable<T>;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

async function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = new (require_('node:net').Socket)() as Socket;
    s.once('connect', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
    s.connect(port, '127.0.0.1');
  });
}
const require_ = createRequire(import.meta.url);

// ------------------------------------------------------------------ brokers
export interface Broker { kind: 'mosquitto' | 'aedes'; port: number; url: string; stop(): Promise<void>; start(): Promise<void>; close(): Promise<void> }

/** false when mosquitto is installed, else the skip line (testkit's skipUnlessInstalled). */
export function hasMosquitto(what = 'this mosquitto test'): string | false {
  return skipUnlessInstalled('mosquitto', what);
}

/** Real mosquitto on 127.0.0.1:<free port>, with on-disk persistence so sessions survive a restart. */
export async function startMosquitto(): Promise<Broker> {
  const port = await freePort();
  const dir = tmpDir('shoal-mosq-');
  const conf = path.join(dir, 'mosquitto.conf');
  writeFileSync(conf, [
    `listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence true', `persistence_location ${dir}/`,
    'autosave_interval 1',
    // stay the user who started it: as root mosquitto switches to 'mosquitto', cannot write the
    // database into this temp dir, and every session is silently lost on restart
    `user ${os.userInfo().username}`,
    'log_dest none', '',
  ].join('\n'));
  let proc: ChildProcess | null = null;
  const b: Broker = {
    kind: 'mosquitto', port, url: `mqtt://127.0.0.1:${port}`,
    async start() {
      proc = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      proc.stderr!.on('data', (d) => { err += d; });
      await waitFor(() => portOpen(port), 10000, `mosquitto on ${port} (${err})`);
    },
    async stop() {
      const p = proc;
      proc = null;
      if (!p || p.exitCode !== null) return;
      const exited = new Promise((r) => p.once('exit', r));
      p.kill('SIGTERM');
      await exited;
    },
    async close() { await b.stop(); await fsp.rm(dir, { recursive: true, force: true }); },
  };
  await b.start();
  return b;
}

/** Embedded aedes (MQTT 3.1.1 only) on 127.0.0.1; stop() closes the listener and all connections, the broker state stays. */
export async function startAedes(): Promise<Broker & { aedes: Aedes }> {
  const broker = await Aedes.createBroker();
  const port = await freePort();
  let server: NetServer | null = null;
  const sockets = new Set<Socket>();
  const b = {
    kind: 'aedes' as const, port, url: `mqtt://127.0.0.1:${port}`, aedes: broker,
    async start() {
      server = createNetServer((s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); broker.handle(s); });
      await new Promise<void>((r) => server!.listen(port, '127.0.0.1', r));
    },
    async stop() {
      const s = server;
      server = null;
      if (!s) return;
      const closed = new Promise((r) => s.close(r));
      for (const so of sockets) so.destroy();
      await closed;
    },
    async close() { await b.stop(); await new Promise<void>((r) => broker.close(() => r())); },
  };
  await b.start();
  return b;
}

// ------------------------------------------------------------------ packages
export interface TestKeys { privatePem: string; publicPem: string }
export function makeKeys(): TestKeys {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() };
}

export interface BuiltPackage { name: string; version: string; dir: string; manifestPath: string; totalBytes: number; manifestSha256: string }

/** Builds a signed package of stories260K under <root>/<name>/<version>/. */
export async function buildPackage(root: string, name: string, version: string, keys: TestKeys,
  opts: { corruptFile?: string; signWith?: string; extraBytes?: number; brokenModel?: boolean } = {}): Promise<BuiltPackage> {
  const dir = path.join(root, name, version);
  await fsp.mkdir(dir, { recursive: true });
  const files: UnsignedManifest['files'] = [];
  for (const f of MODEL_FILES) {
    let data = await fsp.readFile(path.join(MODEL_DIR, f));
    // a correctly signed package whose weights the engine cannot load (fails the health check)
    if (opts.brokenModel && f === 'model.safetensors') data = Buffer.from('{"this is":"not a safetensors file"}');
    files.push({ path: f, size: data.length, sha256: createHash('sha256').update(data).digest('hex') });
    await fsp.writeFile(path.join(dir, f), data);
  }
  if (opts.extraBytes) {
    const data = Buffer.alloc(opts.extraBytes, 7);
    files.push({ path: 'padding.bin', size: data.length, sha256: sha256Hex(data) });
    await fsp.writeFile(path.join(dir, 'padding.bin'), data);
  }
  const manifest = signManifest({ schema: 1, name, version, architecture: 'LlamaForCausalLM', quantization: 'none', files, created: new Date().toISOString() }, opts.signWith ?? keys.privatePem);
  const text = JSON.stringify(manifest, null, 2);
  const manifestPath = path.join(dir, 'manifest.json');
  await fsp.writeFile(manifestPath, text);
  if (opts.corruptFile) {
    // flip bytes in the served file after signing: size stays, sha256 differs
    const p = path.join(dir, opts.corruptFile);
    const data = await fsp.readFile(p);
    data[Math.floor(data.length / 2)] ^= 0xff;
    await fsp.writeFile(p, data);
  }
  return { name, version, dir, manifestPath, totalBytes: files.reduce((s, f) => s + f.size, 0), manifestSha256: sha256Hex(text) };
}

// ------------------------------------------------------------------ package HTTP server
export interface PackageServer {
  port: number;
  url(pkg: BuiltPackage): string;
  bytesServed: Map<string, number>;
  requests: Array<{ path: string; range: string | undefined; status: number; bytes: number }>;
  totalServed(): number;
  /** bytes/second per response (0 = unthrottled). */
  throttle: number;
  /** drop each response's connection after this many bytes (0 = never). */
  dropAfter: number;
  /** drop every connection when it reaches this absolute file offset, resumed or not (0 = never). */
  cutAtOffset: number;
  /** flip one byte in transit in the next `corruptNext` responses of package files (not manifests). */
  corruptNext: number;
  close(): Promise<void>;
}

export async function startPackageServer(root: string): Promise<PackageServer> {
  const sockets = new Set<Socket>();
  const ps: PackageServer = {
    port: 0, bytesServed: new Map(), requests: [], throttle: 0, dropAfter: 0, cutAtOffset: 0, corruptNext: 0,
    url: (pkg) => `http://127.0.0.1:${ps.port}/${pkg.name}/${pkg.version}/manifest.json`,
    totalServed: () => [...ps.bytesServed.values()].reduce((a, b) => a + b, 0),
    close: async () => { for (const s of sockets) s.destroy(); await new Promise((r) => server.close(r)); },
  };
  const server = http.createServer(async (req, res) => {
    const rel = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname).replace(/^\/+/, '');
    const file = path.join(root, rel);
    if (!file.startsWith(root) || !existsSync(file) || !statSync(file).isFile()) {
      ps.requests.push({ path: rel, range: req.headers.range, status: 404, bytes: 0 });
      res.writeHead(404); res.end(); return;
    }
    const size = statSync(file).size;
    let start = 0;
    let status = 200;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) {
      start = Number(m[1]);
      if (start >= size) { ps.requests.push({ path: rel, range: req.headers.range, status: 416, bytes: 0 }); res.writeHead(416, { 'content-range': `bytes */${size}` }); res.end(); return; }
      status = 206;
    }
    const record = { path: rel, range: req.headers.range, status, bytes: 0 };
    ps.requests.push(record);
    const headers: Record<string, string | number> = { 'content-length': size - start, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' };
    if (status === 206) headers['content-range'] = `bytes ${start}-${size - 1}/${size}`;
    res.writeHead(status, headers);
    const stream = createReadStream(file, { start, highWaterMark: 16 * 1024 });
    let sent = 0;
    let corrupt = !rel.endsWith('manifest.json') && ps.corruptNext > 0 && size - start > 1;
    if (corrupt) ps.corruptNext--;
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (res.destroyed) break;
      let piece = chunk;
      if (ps.dropAfter > 0 && sent + piece.length > ps.dropAfter) piece = piece.subarray(0, ps.dropAfter - sent);
      if (ps.cutAtOffset > 0 && start + sent + piece.length > ps.cutAtOffset) piece = piece.subarray(0, Math.max(0, ps.cutAtOffset - start - sent));
      if (corrupt && piece.length > 0) { piece = Buffer.from(piece); piece[0] ^= 0xff; corrupt = false; }
      if (piece.length > 0) {
        // count a piece once it has been handed to the kernel (write callback), not when queued
        const flushed = await new Promise<boolean>((r) => res.write(piece, (err) => r(!err)));
        if (!flushed) break;
        sent += piece.length;
        ps.bytesServed.set(rel, (ps.bytesServed.get(rel) ?? 0) + piece.length);
        record.bytes += piece.length;
      }
      if (ps.dropAfter > 0 && sent >= ps.dropAfter) { res.socket?.destroy(); return; }
      if (ps.cutAtOffset > 0 && start + sent >= ps.cutAtOffset) { res.socket?.destroy(); return; }
      if (ps.throttle > 0) await new Promise((r) => setTimeout(r, (chunk.length / ps.throttle) * 1000));
    }
    res.end();
  });
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  ps.port = (server.address() as AddressInfo).port;
  return ps;
}

// ------------------------------------------------------------------ daemon
export function writeDeviceConfig(dir: string, cfg: Record<string, unknown>): string {
  const file = path.join(dir, 'device.json');
  writeFileSync(file, JSON.stringify(cfg, null, 2));
  return file;
}

export function baseConfig(opts: { deviceId: string; brokerUrl: string; storeDir: string; publicPem: string; [k: string]: unknown }): Record<string, unknown> {
  const { deviceId, brokerUrl, storeDir, publicPem, ...rest } = opts;
  return {
    configVersion: 1, deviceId, group: 'test', labels: { site: 'lab' }, logLevel: 'info',
    broker: { url: brokerUrl, protocolVersion: 'auto', reconnectMinMs: 100, reconnectMaxMs: 1000, keepaliveSec: 5 },
    store: { dir: storeDir, keepVersions: 3, reserveBytes: 0 },
    http: { host: '127.0.0.1', port: 0 },
    telemetryIntervalSec: 2,
    fleetPublicKey: publicPem,
    queue: { maxDepth: 16 },
    engine: { threads: 1, contextSize: 256, maxTokens: 32 },
    health: { timeoutSec: 30, tokens: 4 },
    download: { retries: 5, idleTimeoutSec: 5, progressIntervalMs: 100 },
    shutdown: { drainTimeoutSec: 30 },
    ...rest,
  };
}

export interface DaemonProc { proc: ChildProcess; httpPort: number; logs: () => string; kill(sig?: NodeJS.Signals): Promise<number | null>; exited: Promise<number | null> }

export async function startDaemon(configFile: string, env: NodeJS.ProcessEnv = {}): Promise<DaemonProc> {
  const proc = spawn(process.execPath, [CLI, 'device', '--config', configFile], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d) => { out += d; });
  proc.stderr!.on('data', (d) => { err += d; if (err.length > 4_000_000) err = err.slice(-2_000_000); });
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const ready = await Promise.race([
    waitFor(() => { const m = /\{"ready":true[^\n]*\}/.exec(out); return m ? JSON.parse(m[0]) as { http: number } : null; }, 30000, 'daemon ready line'),
    exited.then((code) => { throw new Error(`daemon exited with ${code} before ready:\n${err.slice(-3000)}`); }),
  ]);
  return {
    proc, httpPort: ready.http, logs: () => err, exited,
    async kill(sig: NodeJS.Signals = 'SIGKILL') {
      if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
      proc.kill(sig);
      return exited;
    },
  };
}

// ------------------------------------------------------------------ MQTT test client
export class FleetClient {
  readonly clientId: string;
  readonly replyTopic: string;
  client!: MqttClient;
  replies = new Map<string, Reply[]>();
  events: Event[] = [];
  /** Event messages the broker flagged as redeliveries (DUP=1, MQTT §3.3.1.1). */
  redeliveredEvents: Event[] = [];
  eventMessages = 0;
  /** CONNACK session-present flag of each connection (MQTT §3.2.2.1.1). */
  sessionPresent: boolean[] = [];
  states: State[] = [];
  telemetry: unknown[] = [];
  constructor(readonly url: string, readonly deviceId: string, opts: { clientId?: string; protocolVersion?: 4 | 5; clean?: boolean } = {}) {
    this.clientId = opts.clientId ?? `test-${randomUUID().slice(0, 8)}`;
    this.replyTopic = topics.replies(this.clientId);
    this.opts = opts;
  }
  private opts: { protocolVersion?: 4 | 5; clean?: boolean };

  async connect(): Promise<this> {
    this.client = mqtt.connect(this.url, { clientId: this.clientId, protocolVersion: this.opts.protocolVersion ?? 4, clean: this.opts.clean ?? true, reconnectPeriod: 200, ...(this.opts.protocolVersion === 5 && this.opts.clean === false ? { properties: { sessionExpiryInterval: 3600 } } : {}) });
    this.client.on('connect', (ack) => { this.sessionPresent.push(ack.sessionPresent); });
    this.client.on('message', (topic, payload, packet) => {
      if (payload.length === 0) return;
      const msg = JSON.parse(payload.toString());
      if (topic === this.replyTopic) {
        const list = this.replies.get(msg.id) ?? [];
        list.push(msg);
        this.replies.set(msg.id, list);
      } else if (topic === topics.events(this.deviceId)) {
        this.eventMessages++;
        if (packet.dup) this.redeliveredEvents.push(msg); else this.events.push(msg);
      }
      else if (topic === topics.state(this.deviceId)) this.states.push(msg);
      else if (topic === topics.telemetry(this.deviceId)) this.telemetry.push(msg);
    });
    await new Promise<void>((resolve, reject) => { this.client.once('connect', () => resolve()); this.client.once('error', reject); });
    await this.client.subscribeAsync([this.replyTopic, topics.events(this.deviceId), topics.state(this.deviceId), topics.telemetry(this.deviceId)], { qos: 1 });
    return this;
  }

  get state(): State | undefined { return this.states[this.states.length - 1]; }

  send(op: Op | string, args: unknown = {}, extra: Record<string, unknown> = {}): string {
    const id = (extra.id as string) ?? randomUUID();
    this.client.publish(topics.cmd(this.deviceId), JSON.stringify({ v: 1, id, op, args, replyTo: this.replyTopic, deadline: Date.now() + 60000, ...extra }), { qos: 1 });
    return id;
  }

  publishRaw(payload: string | Buffer): void {
    this.client.publish(topics.cmd(this.deviceId), payload, { qos: 1 });
  }

  async final(id: string, timeoutMs = 30000): Promise<Reply> {
    return waitFor(() => this.replies.get(id)?.find((r) => r.done), timeoutMs, `final reply to ${id}`);
  }

  async request(op: Op | string, args: unknown = {}, timeoutMs = 30000): Promise<{ final: Reply; all: Reply[] }> {
    const id = this.send(op, args);
    const final = await this.final(id, timeoutMs);
    return { final, all: this.replies.get(id)! };
  }

  setDesired(desired: unknown): Promise<unknown> {
    return this.client.publishAsync(topics.desired(this.deviceId), JSON.stringify(desired), { qos: 1, retain: true });
  }

  /**
   * The newest state so far that matches. `since` (a states.length taken before the change the
   * test waits for) skips older states, which a return to an earlier state would otherwise
   * match at once.
   */
  async waitState(pred: (s: State) => boolean, timeoutMs: number, what: string, since = 0): Promise<State> {
    return waitFor(() => this.states.slice(since).reverse().find(pred), timeoutMs, what);
  }

  async waitEvent(pred: (e: Event) => boolean, timeoutMs: number, what: string): Promise<Event> {
    return waitFor(() => this.events.find(pred), timeoutMs, what);
  }

  async close(): Promise<void> {
    await this.client.endAsync(true).catch(() => {});
  }
}

export async function cleanup(...fns: Array<(() => unknown) | undefined>): Promise<void> {
  for (const f of fns) { try { await f?.(); } catch { /* best effort */ } }
}
