// shipped-broker.ts — mosquitto with the configuration the project ships (deploy/mosquitto/):
// its mosquitto.conf, acl.conf and the credentials of make-credentials.sh, with only the
// machine paths, ports and log destination rewritten for a temp dir on loopback. Every
// rewrite must match, so a change of the shipped file's shape fails the tests instead of
// silently testing something else. kill9() + start() restart it on the same ports and
// persistence file (a broker crash).
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { checkoutRoot as repoRoot } from '@shoal/common';
import { freePort } from './brokers.js';

export const DEPLOY_MOSQUITTO = path.join(repoRoot, 'deploy', 'mosquitto');

export interface ShippedBroker {
  /** plain listener (loopback) */
  url: string;
  tlsUrl: string;
  dir: string;
  caFile: string;
  /** user -> password (shoal-controller, shoal-controller-2 and each device) */
  creds: Record<string, string>;
  pid(): number | undefined;
  kill9(): Promise<void>;
  start(): Promise<void>;
  close(): Promise<void>;
}

/** Skip message for tap when mosquitto or openssl is missing, else false. */
export function shippedBrokerSkip(): string | false {
  for (const bin of ['mosquitto', 'mosquitto_passwd', 'openssl']) {
    const r = spawnSync(bin, ['-h'], { stdio: 'ignore' });
    if (r.error && (r.error as NodeJS.ErrnoException).code === 'ENOENT') return `${bin} is not installed (apt-get install mosquitto openssl)`;
  }
  return false;
}

/**
 * `testDrivers`: extra users with the controller's rights (appended to this broker's copy of
 * acl.conf only) for test clients that inject commands while the controllers come and go.
 */
export async function startShippedMosquitto(devices: string[], o: { testDrivers?: string[]; dir?: string } = {}): Promise<ShippedBroker> {
  const dir = o.dir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-shipped-mosq-'));
  execFileSync(path.join(DEPLOY_MOSQUITTO, 'make-credentials.sh'), [dir, 'shoal-controller-2', ...devices], { stdio: 'ignore' });
  const creds = Object.fromEntries(fs.readFileSync(path.join(dir, 'credentials.txt'), 'utf8').trim().split('\n').map((l) => l.split(' ') as [string, string]));
  for (const user of o.testDrivers ?? []) {
    const pass = randomBytes(12).toString('hex');
    execFileSync('mosquitto_passwd', ['-b', path.join(dir, 'passwords'), user, pass], { stdio: 'ignore' });
    fs.appendFileSync(path.join(dir, 'acl.conf'), `\n# test driver (tests only)\nuser ${user}\ntopic readwrite shoal/v1/#\n`);
    creds[user] = pass;
  }
  const [port, tlsPort] = [await freePort(), await freePort()];
  fs.mkdirSync(path.join(dir, 'data'), { recursive: true });
  let conf = fs.readFileSync(path.join(DEPLOY_MOSQUITTO, 'mosquitto.conf'), 'utf8');
  const rewrite = (from: RegExp, to: string) => {
    if (!from.test(conf)) throw new Error(`deploy/mosquitto/mosquitto.conf no longer contains ${from}; update shipped-broker.ts`);
    conf = conf.replace(from, to);
  };
  rewrite(/\/etc\/mosquitto\/shoal\//g, `${dir}/`);
  rewrite(/^listener 8883$/m, `listener ${tlsPort} 127.0.0.1`);
  rewrite(/^listener 1883 127\.0\.0\.1$/m, `listener ${port} 127.0.0.1`);
  rewrite(/^persistence_location .*$/m, `persistence_location ${dir}/data/`);
  rewrite(/^log_dest syslog$/m, 'log_dest stderr');
  // as root mosquitto would switch to the 'mosquitto' user and lose access to the temp dir
  conf += `\nuser ${os.userInfo().username}\n`;
  const confFile = path.join(dir, 'mosquitto.conf');
  fs.writeFileSync(confFile, conf);

  let child: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  let stderr = '';
  const listening = () => new Promise<boolean>((resolve) => {
    const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true); });
    s.once('error', () => resolve(false));
  });
  const start = async () => {
    stderr = '';
    const c = spawn('mosquitto', ['-c', confFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    child = c;
    c.stderr!.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-20_000); });
    exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.once('error', () => undefined);
    const deadline = Date.now() + 15_000;
    while (!(await listening())) {
      if (c.exitCode !== null) throw new Error(`mosquitto exited (${c.exitCode}): ${stderr.trim()}`);
      if (Date.now() > deadline) { c.kill('SIGKILL'); throw new Error(`mosquitto did not listen within 15 s: ${stderr.trim()}`); }
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  await start();
  const b: ShippedBroker = {
    url: `mqtt://127.0.0.1:${port}`, tlsUrl: `mqtts://127.0.0.1:${tlsPort}`, dir, caFile: path.join(dir, 'ca.crt'), creds,
    pid: () => child?.pid,
    kill9: async () => {
      if (child && child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited; }
    },
    start,
    close: async () => {
      if (child && child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child?.kill('SIGKILL'), 3000);
        await exited;
        clearTimeout(t);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  return b;
}
