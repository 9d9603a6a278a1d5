// Fault-injection runs for the delivery guarantees (docs/reliability.md): real mosquitto with
// the shipped configuration, real `shoal controller` processes, real `shoal device` daemons
// with the engine, all on loopback. While the devices deploy (rollouts through the API) and
// emit events (each malformed command becomes a `request.rejected` event) and telemetry, the
// controller is killed -9 and restarted, and in some cycles the broker is killed -9 too.
// At the end the controller database is compared with what the devices emitted: every
// device's outbox numbers its events 1, 2, 3, ... (Event.seq), so the expected set is
// 1..last seq minus what is still in the device's outbox (not yet acknowledged: not lost).
// Used by packages/devkit/test/chaos.test.ts (short) and scripts/trials.ts (long).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import mqtt, { type MqttClient } from 'mqtt';
import { checkoutRoot } from '@shoal/common';
import { buildPackage, generateFleetKeys } from '@shoal/controller';
import { freePort } from '../brokers.js';
import { startShippedMosquitto, type ShippedBroker } from '../shipped-broker.js';

const CLI = path.join(checkoutRoot, 'packages', 'cli', 'dist', 'src', 'main.js');
const TOKEN = 'chaos-token-0123456789abcdef';

export interface ChaosOptions {
  dir: string;
  /** A model checkpoint to package (stories260K). */
  modelDir: string;
  devices?: number;
  /** Controller kill -9 + restart cycles. */
  cycles: number;
  /** Also kill -9 and restart the broker in every n-th cycle (0 = never). */
  brokerKillEvery?: number;
  /** Two controller replicas on one shared subscription group (no rollouts then). */
  replicas?: 1 | 2;
  /** Run rollouts while the faults happen (single controller only). */
  deploy?: boolean;
  /** Milliseconds between injected malformed commands (each one event). */
  eventEveryMs?: number;
  log?: (msg: string) => void;
}

export interface ChaosResult {
  cycles: number;
  controllerKills: number;
  brokerKills: number;
  rollouts: { created: number; succeeded: number; lastStatus: string | null };
  /** Events the devices emitted (seq 1..last of every stream). */
  emitted: number;
  /** Still in a device outbox when it stopped (not acknowledged by the broker yet). */
  pending: number;
  stored: number;
  lost: number;
  /** Stored rows beyond one per event (must be 0: unique id and device+stream+seq). */
  duplicatesStored: number;
  /** device/stream/seq of lost events (at most 20), for the report. */
  lostSeqs: string[];
  /** Redeliveries the controllers received and ignored. */
  duplicatesReceived: number;
  telemetryStored: number;
  seconds: number;
}

interface Proc { proc: ChildProcess; exited: Promise<void>; log: string }

function spawnLogged(args: string[], logFile: string): Proc {
  const fd = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, args, { stdio: ['ignore', fd, fd] });
  fs.closeSync(fd);
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  return { proc, exited, log: logFile };
}

async function kill9(p: Proc | null): Promise<void> {
  if (!p || p.proc.exitCode !== null || p.proc.signalCode !== null) return;
  process.kill(p.proc.pid!, 'SIGKILL');
  await p.exited;
}

async function until<T>(what: string, fn: () => Promise<T | undefined | null | false> | T | undefined | null | false, timeoutMs: number, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch { /* not yet */ }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const jitter = (lo: number, hi: number) => lo + Math.random() * (hi - lo);

export async function runChaos(o: ChaosOptions): Promise<ChaosResult> {
  const started = Date.now();
  const log = o.log ?? (() => {});
  const n = o.devices ?? 3;
  const replicas = o.replicas ?? 1;
  const deploy = (o.deploy ?? true) && replicas === 1;
  const ids = Array.from({ length: n }, (_, i) => `robot-${i + 1}`);
  fs.mkdirSync(o.dir, { recursive: true });
  const broker: ShippedBroker = await startShippedMosquitto(ids, { testDrivers: ['shoal-test-driver'] });
  const keys = generateFleetKeys(path.join(o.dir, 'keys'));
  const ports = [await freePort(), await freePort()];
  const dataDir = path.join(o.dir, 'controller-data');
  const controllerUsers = ['shoal-controller', 'shoal-controller-2'];
  const ctlConfigs = Array.from({ length: replicas }, (_, r) => {
    const file = path.join(o.dir, `controller-${r + 1}.json`);
    fs.writeFileSync(file, JSON.stringify({
      broker: {
        url: broker.url, username: controllerUsers[r], password: broker.creds[controllerUsers[r]!], protocolVersion: 5,
        clientId: controllerUsers[r], ...(replicas > 1 ? { sharedGroup: 'controllers' } : {}),
      },
      http: { host: '127.0.0.1', port: ports[r] },
      token: TOKEN, dataDir, fleetPublicKey: keys.publicKey,
      rollout: { tickMs: 200, defaultTimeoutSec: 180 },
      logLevel: 'warn',
    }, null, 2));
    return file;
  });
  const controllers: (Proc | null)[] = ctlConfigs.map(() => null);
  const api = async (r: number, method: string, p: string, body?: unknown) => {
    const res = await fetch(`http://127.0.0.1:${ports[r]}${p}`, {
      method, headers: { authorization: `Bearer ${TOKEN}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      body: body ? JSON.stringify(body) : undefined,
    });
    return { status: res.status, json: (await res.json()) as any };
  };
  const startController = async (r: number) => {
    controllers[r] = spawnLogged([CLI, 'controller', '--config', ctlConfigs[r]!], path.join(o.dir, `controller-${r + 1}.log`));
    await until(`controller ${r + 1} healthy`, async () => (await api(r, 'GET', '/api/health')).json.broker === true, 30_000);
  };
  const devices: Proc[] = [];
  let driver: MqttClient | null = null;
  let injector: NodeJS.Timeout | null = null;
  const result: ChaosResult = {
    cycles: o.cycles, controllerKills: 0, brokerKills: 0, rollouts: { created: 0, succeeded: 0, lastStatus: null },
    emitted: 0, pending: 0, stored: 0, lost: 0, lostSeqs: [], duplicatesStored: 0, duplicatesReceived: 0, telemetryStored: 0, seconds: 0,
  };
  try {
    for (let r = 0; r < replicas; r++) await startController(r);
    // packages: the same checkpoint under several versions (each deployment downloads, verifies, health-checks, swaps)
    const versions = deploy ? Array.from({ length: Math.max(2, Math.ceil(o.cycles / 2) + 1) }, (_, i) => `${i + 1}.0`) : [];
    for (const v of versions) {
      const out = path.join(o.dir, 'pkgs', v);
      await buildPackage({ modelDir: o.modelDir, name: 'stories', version: v, keyFile: path.join(o.dir, 'keys', 'fleet.key'), outDir: out });
      const res = await api(0, 'POST', '/api/packages/register', { dir: out });
      if (res.status !== 201) throw new Error(`register ${v}: ${JSON.stringify(res.json)}`);
    }
    for (const id of ids) {
      const ddir = path.join(o.dir, 'devices', id);
      fs.mkdirSync(ddir, { recursive: true });
      fs.writeFileSync(path.join(ddir, 'device.json'), JSON.stringify({
        configVersion: 1, deviceId: id, group: 'chaos', labels: {}, logLevel: 'info',
        broker: { url: broker.url, username: id, password: broker.creds[id], protocolVersion: 5, reconnectMinMs: 100, reconnectMaxMs: 1000, keepaliveSec: 5 },
        store: { dir: path.join(ddir, 'store'), reserveBytes: 0, keepVersions: 2 },
        http: { enabled: false }, telemetryIntervalSec: 1, fleetPublicKey: keys.publicKey,
        engine: { threads: 1 }, health: { timeoutSec: 60, tokens: 2 },
        download: { retries: 5, idleTimeoutSec: 10, retryMaxDelaySec: 2 },
      }, null, 2));
      devices.push(spawnLogged([CLI, 'device', '--config', path.join(ddir, 'device.json')], path.join(ddir, 'daemon.log')));
    }
    await until('devices online', async () => ((await api(0, 'GET', '/api/devices')).json.devices as { online: boolean }[]).filter((d) => d.online).length === n, 60_000);
    log(`${n} devices online, ${replicas} controller(s)`);
    // event injector: a malformed command without a reply address -> one request.rejected event
    driver = mqtt.connect(broker.url, { clientId: 'shoal-test-driver', username: 'shoal-test-driver', password: broker.creds['shoal-test-driver'], protocolVersion: 5, reconnectPeriod: 200 });
    driver.on('error', () => undefined);
    let k = 0;
    injector = setInterval(() => {
      if (driver?.connected) driver.publish(`shoal/v1/devices/${ids[k % n]}/cmd`, `not json ${k}`, { qos: 0 });
      k++;
    }, o.eventEveryMs ?? 150);

    let versionIdx = 0;
    let current: string | null = null;
    const nextRollout = async () => {
      if (!deploy || versionIdx >= versions.length) return;
      if (current) {
        const st = (await api(0, 'GET', `/api/rollouts/${current}`)).json.rollout?.status as string | undefined;
        if (st === 'running' || st === 'paused') return;
        if (st === 'succeeded') result.rollouts.succeeded++;
        result.rollouts.lastStatus = st ?? null;
      }
      const res = await api(0, 'POST', '/api/rollouts', { model: `stories@${versions[versionIdx]}`, to: 'group:chaos', waves: '1,100%', timeoutSec: 180 });
      if (res.status === 201) { current = res.json.rollout.id; versionIdx++; result.rollouts.created++; log(`rollout ${current} -> stories@${versions[versionIdx - 1]}`); }
    };
    await nextRollout();
    for (let c = 1; c <= o.cycles; c++) {
      await sleep(jitter(800, 2000));
      await nextRollout().catch(() => undefined);
      const r = replicas > 1 ? c % replicas : 0;
      log(`${new Date().toISOString()} kill -9 controller ${r + 1}`);
      await kill9(controllers[r]!);
      result.controllerKills++;
      await sleep(jitter(300, 1200)); // devices keep emitting while the controller is down
      if (o.brokerKillEvery && c % o.brokerKillEvery === 0) {
        log(`${new Date().toISOString()} kill -9 broker`);
        await broker.kill9();
        result.brokerKills++;
        await sleep(jitter(100, 600));
        await broker.start();
      }
      await startController(r);
      log(`${new Date().toISOString()} cycle ${c}: controller ${r + 1} killed -9 and restarted${o.brokerKillEvery && c % o.brokerKillEvery === 0 ? ', broker killed -9 and restarted' : ''}`);
    }
    clearInterval(injector);
    injector = null;
    // let the rollout in flight finish (a deployment interrupted by the restarts converges)
    if (deploy && current) {
      const id: string = current;
      const st = await until('the last rollout finished', async () => {
        const s2 = (await api(0, 'GET', `/api/rollouts/${id}`)).json.rollout?.status as string | undefined;
        return s2 !== undefined && s2 !== 'running' && s2 !== 'paused' && s2;
      }, 240_000, 500);
      if (st === 'succeeded') result.rollouts.succeeded++;
      result.rollouts.lastStatus = st;
    }
    // stop the devices cleanly (their outbox drains while connected), then count
    await sleep(1500);
    for (const d of devices) d.proc.kill('SIGTERM');
    await Promise.all(devices.map((d) => Promise.race([d.exited, sleep(30_000)])));
    for (const d of devices) await kill9(d);
    const expected = new Map<string, Set<number>>(); // `${device}/${stream}` -> seqs
    for (const id of ids) {
      const db = new Database(path.join(o.dir, 'devices', id, 'store', '.state', 'outbox.sqlite'), { readonly: true });
      const stream = (db.prepare("SELECT v FROM meta_text WHERE k = 'stream'").get() as { v: string }).v;
      const last = (db.prepare("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").get() as { seq: number } | undefined)?.seq ?? 0;
      const pending = new Set((db.prepare('SELECT seq FROM outbox').all() as { seq: number }[]).map((x) => x.seq));
      db.close();
      result.emitted += last;
      result.pending += pending.size;
      const want = new Set<number>();
      for (let s = 1; s <= last; s++) if (!pending.has(s)) want.add(s);
      expected.set(`${id}/${stream}`, want);
    }
    const count = () => {
      const db = new Database(path.join(dataDir, 'controller.db'), { readonly: true, fileMustExist: true });
      try {
        const rows = db.prepare('SELECT device_id, stream, dseq, id FROM events WHERE dseq IS NOT NULL').all() as { device_id: string; stream: string; dseq: number; id: string }[];
        const telemetry = (db.prepare('SELECT COUNT(*) AS n FROM telemetry').get() as { n: number }).n;
        return { rows, telemetry };
      } finally { db.close(); }
    };
    const missingNow = () => {
      const { rows } = count();
      const have = new Set(rows.map((x) => `${x.device_id}/${x.stream}/${x.dseq}`));
      const missing: string[] = [];
      for (const [k, seqs] of expected) for (const s of seqs) if (!have.has(`${k}/${s}`)) missing.push(`${k}/${s}`);
      return missing;
    };
    await until('controller caught up', () => missingNow().length === 0, 20_000, 250).catch(() => undefined);
    const { rows, telemetry } = count();
    const keys2 = new Set(rows.map((x) => `${x.device_id}/${x.stream}/${x.dseq}`));
    result.stored = rows.length;
    result.duplicatesStored = rows.length - keys2.size + (rows.length - new Set(rows.map((x) => x.id)).size);
    const lost = missingNow();
    result.lost = lost.length;
    result.lostSeqs = lost.slice(0, 20);
    result.telemetryStored = telemetry;
    for (let r = 0; r < replicas; r++) {
      const stats = await api(r, 'GET', '/api/stats').catch(() => null);
      result.duplicatesReceived += stats?.json?.stored?.duplicateEvents ?? 0;
    }
  } finally {
    if (injector) clearInterval(injector);
    await driver?.endAsync(true).catch(() => undefined);
    for (const d of devices) await kill9(d);
    for (const c of controllers) await kill9(c);
    await broker.close();
  }
  result.seconds = Math.round((Date.now() - started) / 100) / 10;
  return result;
}
