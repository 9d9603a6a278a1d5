// Brokers the controller can start itself: the embedded aedes broker (MQTT 3.1.1,
// used by `shoal up`) and a mosquitto child process (tests, benchmarks).
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Aedes } from 'aedes';
import { ShoalError } from '@shoal/common';

export interface RunningBroker {
  url: string;
  /** mqtts:// URL when a TLS listener was asked for. */
  tlsUrl?: string;
  port: number;
  kind: 'aedes' | 'mosquitto';
  pid?: number;
  close(): Promise<void>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Starts aedes on 127.0.0.1 (port 0 = a free one). */
export async function startAedes(port = 0, host = '127.0.0.1'): Promise<RunningBroker> {
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new ShoalError('IO_ERROR', `aedes cannot listen on ${host}:${port}: ${e.message}; choose another --broker-port`)));
    server.listen(port, host, () => resolve());
  });
  const p = (server.address() as net.AddressInfo).port;
  const sockets = new Set<net.Socket>();
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)); });
  return {
    url: `mqtt://${host}:${p}`, port: p, kind: 'aedes',
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => broker.close(() => resolve()));
    }),
  };
}

export interface MosquittoOptions {
  port?: number;
  /** Extra lines appended to the generated config (acl_file, password_file, ...). */
  extraConfig?: string[];
  allowAnonymous?: boolean;
  maxQueued?: number;
  /** Also listen with TLS on 127.0.0.1 (port 0 = a free one). */
  tls?: { port?: number; cafile: string; certfile: string; keyfile: string };
}

/** Spawns `mosquitto -c <temp conf>` on 127.0.0.1 and waits until it accepts connections. */
export async function startMosquitto(o: MosquittoOptions = {}): Promise<RunningBroker> {
  const port = o.port ?? (await freePort());
  const tlsPort = o.tls ? (o.tls.port || (await freePort())) : 0;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-mosq-'));
  const conf = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(conf, [
    'per_listener_settings false',
    `listener ${port} 127.0.0.1`,
    `allow_anonymous ${o.allowAnonymous === false ? 'false' : 'true'}`,
    'persistence false',
    // stay the user who started it (as root mosquitto would switch to 'mosquitto' and lose access to temp files)
    `user ${os.userInfo().username}`,
    `max_queued_messages ${o.maxQueued ?? 10000}`,
    'max_inflight_messages 0',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ...(o.extraConfig ?? []),
    ...(tlsPort ? [`listener ${tlsPort} 127.0.0.1`, `cafile ${o.tls!.cafile}`, `certfile ${o.tls!.certfile}`, `keyfile ${o.tls!.keyfile}`, 'tls_version tlsv1.2'] : []),
    '',
  ].join('\n'));
  const child: ChildProcess = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.once('error', () => undefined);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) throw new ShoalError('CHILD_FAILED', `mosquitto exited (${child.exitCode}): ${stderr.trim()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new ShoalError('CHILD_FAILED', `mosquitto did not listen on ${port} within 10 s: ${stderr.trim()}; is it installed (apt-get install mosquitto)?`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    url: `mqtt://127.0.0.1:${port}`, port, kind: 'mosquitto', pid: child.pid,
    ...(tlsPort ? { tlsUrl: `mqtts://127.0.0.1:${tlsPort}` } : {}),
    close: async () => {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
