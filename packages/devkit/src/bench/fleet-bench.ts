// Fleet ingest benchmark: mosquitto on loopback, the controller as its own
// process (`shoal controller`), N simulated devices sending telemetry every
// interval for a duration. Reports the controller's CPU and memory and checks
// that every message sent was stored (none lost).
//
//   node packages/devkit/dist/src/bench/fleet-bench.js [--devices 1000] [--duration 60] [--interval 1] [--out bench.json]
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Table from 'cli-table3';
import { startMosquitto } from '../brokers.js';
import { ControllerClient } from '@shoal/controller';
import { SimFleet } from '../sim.js';

function arg(name: string, def: number): number;
function arg(name: string, def: string): string;
function arg(name: string, def: number | string): number | string {
  const i = process.argv.indexOf(`--${name}`);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return typeof def === 'number' ? Number(v) : String(v);
}

const devices = arg('devices', 1000);
const duration = arg('duration', 60);
const interval = arg('interval', 1);
const outFile = arg('out', '');
const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../../cli/dist/src/main.js');
const CLK = 100; // USER_HZ on Linux

function procSample(pid: number): { cpuSec: number; rssBytes: number } {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const cpuSec = (Number(f[11]) + Number(f[12])) / CLK; // utime + stime
  const rss = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return { cpuSec, rssBytes: rss ? Number(rss[1]) * 1024 : 0 };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-bench-'));
  const broker = await startMosquitto({ maxQueued: 100_000 });
  const token = 'bench-token-0123456789abcdef';
  const cfgFile = path.join(dir, 'controller.json');
  fs.writeFileSync(cfgFile, JSON.stringify({
    broker: { url: broker.url, protocolVersion: 5 }, http: { host: '127.0.0.1', port: 0 }, token, dataDir: './data', logLevel: 'warn',
  }));
  const child = spawn(process.execPath, [CLI, 'controller', '--config', cfgFile], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  const apiUrl = await new Promise<string>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
      const m = /API (http:\/\/127\.0\.0\.1:\d+)\/api/.exec(stderr);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (c) => reject(new Error(`controller exited ${c}: ${stderr}`)));
  });
  const api = new ControllerClient({ api: apiUrl, token });
  const pid = child.pid!;
  process.stderr.write(`bench: mosquitto ${broker.url} (pid ${broker.pid}), controller pid ${pid} at ${apiUrl}; connecting ${devices} devices ...\n`);

  const fleet = new SimFleet({ devices, brokerUrl: broker.url, intervalSec: interval, protocolVersion: 5, fetchManifest: false, connectConcurrency: 100 });
  const t0 = Date.now();
  await fleet.start();
  const connectSec = (Date.now() - t0) / 1000;
  // wait until the controller knows every device
  for (let i = 0; i < 300; i++) {
    const s = await api.json<{ devices: number }>('GET', '/api/stats');
    if (s.devices >= devices) break;
    await sleep(100);
  }
  const sentBefore = fleet.sent().telemetry;
  const statsBefore = await api.json<{ stored: { telemetry: number } }>('GET', '/api/stats');
  const start = procSample(pid);
  const startBroker = procSample(broker.pid!);
  const tStart = Date.now();
  const samples: { t: number; cpuPct: number; rssMiB: number }[] = [];
  let prev = start;
  let prevT = tStart;
  process.stderr.write(`bench: ${devices} devices connected in ${connectSec.toFixed(1)} s; measuring for ${duration} s\n`);
  while (Date.now() - tStart < duration * 1000) {
    await sleep(1000);
    const s = procSample(pid);
    const now = Date.now();
    samples.push({ t: (now - tStart) / 1000, cpuPct: (100 * (s.cpuSec - prev.cpuSec)) / ((now - prevT) / 1000), rssMiB: s.rssBytes / 2 ** 20 });
    prev = s;
    prevT = now;
  }
  const end = procSample(pid);
  const endBroker = procSample(broker.pid!);
  const elapsed = (Date.now() - tStart) / 1000;
  await fleet.stop();
  const sentTotal = fleet.sent().telemetry;
  const sentWindow = sentTotal - sentBefore;
  // let the controller drain and flush
  let stats = await api.json<{ stored: { telemetry: number; state: number }; received: { telemetry: number }; malformed: number; telemetryRows: number }>('GET', '/api/stats');
  for (let i = 0; i < 100 && stats.telemetryRows < sentTotal; i++) {
    await sleep(100);
    stats = await api.json('GET', '/api/stats');
  }
  const result = {
    devices, intervalSec: interval, durationSec: Number(elapsed.toFixed(1)), connectSec: Number(connectSec.toFixed(1)),
    messagesSent: sentTotal, messagesSentInWindow: sentWindow,
    messagesReceived: stats.received.telemetry, messagesStored: stats.telemetryRows, lost: sentTotal - stats.telemetryRows,
    malformed: stats.malformed,
    storedPerSec: Number(((stats.stored.telemetry - statsBefore.stored.telemetry) / elapsed).toFixed(1)),
    controller: {
      cpuPctAvg: Number(((100 * (end.cpuSec - start.cpuSec)) / elapsed).toFixed(1)),
      cpuPctMax: Number(Math.max(...samples.map((s) => s.cpuPct)).toFixed(1)),
      rssMiBEnd: Number((end.rssBytes / 2 ** 20).toFixed(1)),
      rssMiBMax: Number(Math.max(...samples.map((s) => s.rssMiB)).toFixed(1)),
    },
    mosquitto: { cpuPctAvg: Number(((100 * (endBroker.cpuSec - startBroker.cpuSec)) / elapsed).toFixed(1)), rssMiB: Number((endBroker.rssBytes / 2 ** 20).toFixed(1)) },
    host: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version },
    samples,
  };
  child.kill('SIGTERM');
  await new Promise((r) => child.once('exit', r));
  await broker.close();
  fs.rmSync(dir, { recursive: true, force: true });

  const t = new Table({ head: ['metric', 'value'] });
  t.push(
    ['devices × rate', `${devices} × ${1 / interval} Hz for ${result.durationSec} s`],
    ['telemetry sent / stored / lost', `${result.messagesSent} / ${result.messagesStored} / ${result.lost}`],
    ['stored per second', String(result.storedPerSec)],
    ['controller CPU avg / max', `${result.controller.cpuPctAvg}% / ${result.controller.cpuPctMax}% of one core`],
    ['controller RSS end / max', `${result.controller.rssMiBEnd} / ${result.controller.rssMiBMax} MiB`],
    ['mosquitto CPU avg, RSS', `${result.mosquitto.cpuPctAvg}%, ${result.mosquitto.rssMiB} MiB`],
    ['connect time', `${result.connectSec} s`],
    ['host', `${result.host.cpus} CPUs, ${result.host.model}, node ${result.host.node}`],
  );
  process.stdout.write(t.toString() + '\n');
  const json = JSON.stringify(result, null, 2);
  if (outFile) fs.writeFileSync(outFile, json + '\n');
  else process.stdout.write(json + '\n');
  if (result.lost !== 0) process.exitCode = 1;
}

main().catch((e) => {
  process.stderr.write(`fleet-bench: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
