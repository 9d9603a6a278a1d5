// Memory over a long life: one `shoal device` daemon (child process, real engine) serves
// generation requests over its HTTP API and installs one deployment after another (each a
// new version: download, verify, health check, swap, GC). RSS of the daemon is read from
// /proc after the first tenth of the work and after the last; a leak shows as growth. One
// RSS reading is noisy (V8 collects when it likes, the C heap keeps what it freed until
// trimmed), so RSS is also read after every deployment and the least-squares slope from the
// baseline on is reported: a leak is a slope, noise is not.
// Used by packages/devkit/test/memory.test.ts (short) and scripts/trials.ts (long).
import { spawn } from 'node:child_process';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import mqtt from 'mqtt';
import { checkoutRoot } from '@shoal/common';
import { buildPackage, generateFleetKeys } from '@shoal/controller';
import { sha256Hex } from '@shoal/protocol';
import { startAedes } from '../brokers.js';

const CLI = path.join(checkoutRoot, 'packages', 'cli', 'dist', 'src', 'main.js');

export interface MemoryOptions {
  dir: string; modelDir: string; requests: number; deployments: number;
  /** Deployments (with their share of requests) before the baseline RSS is read; default a tenth. */
  baselineDeployments?: number;
  /** Called after each deployment and its share of requests, with the daemon's pid (probes: heap snapshots, smaps). */
  onCheckpoint?: (deployment: number, pid: number) => Promise<void> | void;
  log?: (m: string) => void;
}
export interface MemoryResult {
  requests: number; deployments: number;
  /** RSS (bytes) after the baseline share of the work (default: the first tenth), and after the last. */
  rssFirstTenth: number; rssLast: number; baselineRequests: number;
  growthPct: number; seconds: number; failedRequests: number;
  /** Least-squares slope of RSS after each deployment from the baseline on, KiB per deployment. */
  slopeKiBPerDeployment: number;
  /** Highest RSS read after a deployment (bytes). */
  rssPeak: number;
}

/** Least-squares slope of ys over 0, 1, 2, … (0 for fewer than two points). */
export function leastSquaresSlope(ys: number[]): number {
  const n = ys.length;
  if (n < 2) return 0;
  const mx = (n - 1) / 2;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  ys.forEach((y, x) => { num += (x - mx) * (y - my); den += (x - mx) ** 2; });
  return num / den;
}

function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : 0;
}

export async function runMemory(o: MemoryOptions): Promise<MemoryResult> {
  const t0 = Date.now();
  const log = o.log ?? (() => {});
  fs.mkdirSync(o.dir, { recursive: true });
  const keys = generateFleetKeys(path.join(o.dir, 'keys'));
  // one package, served under every version name would fail the manifest's name check: build
  // two real packages and re-sign them per version lazily (cheap: manifests only)
  const pkgRoot = path.join(o.dir, 'pkgs');
  const server = http.createServer((req, res) => {
    const file = path.join(pkgRoot, decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname));
    if (!file.startsWith(pkgRoot) || !existsSync(file) || !statSync(file).isFile()) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-length': statSync(file).size });
    createReadStream(file).pipe(res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const broker = await startAedes();
  const store = path.join(o.dir, 'store');
  const cfgFile = path.join(o.dir, 'device.json');
  fs.writeFileSync(cfgFile, JSON.stringify({
    configVersion: 1, deviceId: 'mem-1', labels: {}, logLevel: 'warn',
    broker: { url: broker.url, protocolVersion: 4, reconnectMinMs: 100, reconnectMaxMs: 1000 },
    store: { dir: store, reserveBytes: 0, keepVersions: 2 }, http: { enabled: true, host: '127.0.0.1', port: 0 },
    telemetryIntervalSec: 1, fleetPublicKey: keys.publicKey, engine: { threads: 1, maxTokens: 16 }, health: { timeoutSec: 60, tokens: 2 },
  }));
  const proc = spawn(process.execPath, [CLI, 'device', '--config', cfgFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  proc.stdout!.on('data', (d) => { out += d; });
  const client = await mqtt.connectAsync(broker.url, { clientId: 'mem-driver', protocolVersion: 4 });
  let lastState: { model?: { version: string } | null; phase?: string } = {};
  client.on('message', (_t, p) => { try { lastState = JSON.parse(p.toString()); } catch { /* cleared */ } });
  await client.subscribeAsync('shoal/v1/devices/mem-1/state', { qos: 1 });
  const wait = async (what: string, fn: () => boolean, ms: number) => {
    const end = Date.now() + ms;
    while (!fn()) { if (Date.now() > end) throw new Error(`timed out waiting for ${what}`); await new Promise((r) => setTimeout(r, 20)); }
  };
  try {
    await wait('daemon ready', () => /"ready":true/.test(out), 30_000);
    const httpPort = (JSON.parse(/\{"ready":true[^\n]*\}/.exec(out)![0]) as { http: number }).http;
    const deploy = async (i: number) => {
      const version = `${i}.0`;
      const outDir = path.join(pkgRoot, 'stories', version);
      await buildPackage({ modelDir: o.modelDir, name: 'stories', version, keyFile: path.join(o.dir, 'keys', 'fleet.key'), outDir });
      const manifestUrl = `http://127.0.0.1:${port}/stories/${version}/manifest.json`;
      const desired = { v: 1, ts: Date.now(), model: { name: 'stories', version, manifestUrl, manifestSha256: sha256Hex(readFileSync(path.join(outDir, 'manifest.json'))) } };
      await client.publishAsync('shoal/v1/devices/mem-1/desired', JSON.stringify(desired), { qos: 1, retain: true });
      await wait(`stories@${version} active`, () => lastState.model?.version === version && lastState.phase === 'active', 60_000);
      if (i > 3) fs.rmSync(path.join(pkgRoot, 'stories', `${i - 3}.0`), { recursive: true, force: true });
    };
    let failed = 0;
    const request = async () => {
      const r = await fetch(`http://127.0.0.1:${httpPort}/v1/completions`, { method: 'POST', body: JSON.stringify({ prompt: 'Once upon a time', max_tokens: 8 }) });
      if (r.status !== 200) failed++;
      await r.arrayBuffer();
    };
    const perDeploy = Math.max(1, Math.round(o.requests / o.deployments));
    let done = 0;
    let rssFirstTenth = 0;
    let baselineRequests = 0;
    const baselineAt = o.baselineDeployments ?? Math.max(1, Math.round(o.deployments / 10));
    const samples: number[] = [];
    for (let i = 1; i <= o.deployments; i++) {
      await deploy(i);
      for (let k = 0; k < perDeploy && done < o.requests; k++, done++) await request();
      await o.onCheckpoint?.(i, proc.pid!);
      if (i >= baselineAt) samples.push(rssOf(proc.pid!));
      if (i === baselineAt) { baselineRequests = done; rssFirstTenth = rssOf(proc.pid!); log(`after ${done} requests and ${i} deployments: RSS ${(rssFirstTenth / 2 ** 20).toFixed(1)} MiB`); }
    }
    while (done < o.requests) { await request(); done++; }
    const rssLast = rssOf(proc.pid!);
    log(`after ${done} requests and ${o.deployments} deployments: RSS ${(rssLast / 2 ** 20).toFixed(1)} MiB`);
    return {
      requests: done, deployments: o.deployments, rssFirstTenth, rssLast, baselineRequests,
      growthPct: Math.round(((rssLast - rssFirstTenth) / rssFirstTenth) * 1000) / 10,
      seconds: Math.round((Date.now() - t0) / 100) / 10, failedRequests: failed,
      slopeKiBPerDeployment: Math.round((leastSquaresSlope(samples) / 1024) * 10) / 10, rssPeak: Math.max(...samples, rssLast),
    };
  } finally {
    await client.endAsync(true).catch(() => undefined);
    if (proc.exitCode === null) { proc.kill('SIGKILL'); await new Promise((r) => proc.once('exit', r)); }
    await broker.close();
    await new Promise((r) => server.close(r));
  }
}
