// Config schema (ajv) with readable errors, CLI behaviour on bad config, and
// sd_notify delivered to a real unix datagram socket.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { validateConfig, loadConfig } from '../../src/config/load.js';
import { SdNotify } from '../../src/sdnotify.js';
import { CLI, makeKeys, tmpDir, waitFor } from '../helpers.js';

const keys = makeKeys();
const good = () => ({ configVersion: 1, deviceId: 'jetson-01', broker: { url: 'mqtt://127.0.0.1:1883' }, store: { dir: 'store' }, fleetPublicKey: keys.publicPem });

t.test('defaults are filled and paths resolved', async (t) => {
  const c = validateConfig(good(), '/etc/shoal');
  t.equal(c.store.dir, '/etc/shoal/store');
  t.equal(c.http.host, '127.0.0.1', 'loopback by default');
  t.equal(c.queue.maxDepth, 16);
  t.equal(c.queue.maxConcurrent, 1);
  t.equal(c.broker.protocolVersion, 'auto');
  t.equal(c.telemetryIntervalSec, 10);
  t.equal(c.jetson.sysfsRoot, '/');
  t.equal(c.engine.kvCache, 'f16', 'KV cache f16 by default');
  t.equal(c.engine.lmHead, 'auto', 'lm_head auto (int8 where it applies) by default');
  t.equal(validateConfig({ ...good(), engine: { kvCache: 'q8', lmHead: 'q8' } }, '/etc/shoal').engine.kvCache, 'q8');
});

t.test('readable errors with stable codes', async (t) => {
  t.throws(() => validateConfig({ ...good(), configVersion: 2 }), { code: 'CONFIG_UNSUPPORTED_VERSION', message: /configVersion 2/ });
  let e: (Error & { code?: string }) | null = null;
  try { validateConfig({ ...good(), deviceId: 'a/b', bogus: 1, queue: { maxDepth: 0 }, broker: { url: 'mqtt://x', protocolVersion: 3 } }); } catch (err) { e = err as Error & { code?: string }; }
  t.equal(e?.code, 'CONFIG_INVALID');
  t.match(e?.message, /deviceId: must match pattern/);
  t.match(e?.message, /unknown property 'bogus'/);
  t.match(e?.message, /queue\.maxDepth: must be >= 1/);
  t.match(e?.message, /broker\.protocolVersion: must be one of \[4,5,"auto"\]/);
  t.throws(() => validateConfig({ ...good(), engine: { kvCache: 'int4' } }), { code: 'CONFIG_INVALID', message: /engine\.kvCache: must be one of \["f16","f32","q8"\]/ });
  t.throws(() => validateConfig({ ...good(), fleetPublicKey: 'no-such-file.pem' }), { code: 'FLEET_KEY_INVALID' });
  t.throws(() => validateConfig({ ...good(), fleetPublicKey: '-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n' }), { code: 'FLEET_KEY_INVALID' });
  const dir = tmpDir();
  writeFileSync(path.join(dir, 'fleet.pem'), keys.publicPem);
  writeFileSync(path.join(dir, 'device.json'), JSON.stringify({ ...good(), fleetPublicKey: 'fleet.pem' }));
  t.equal(loadConfig(path.join(dir, 'device.json')).fleetPublicKey, keys.publicPem, 'key read from a file next to the config');
  writeFileSync(path.join(dir, 'bad.json'), '{ nope');
  t.throws(() => loadConfig(path.join(dir, 'bad.json')), { code: 'CONFIG_INVALID_JSON' });
  t.throws(() => loadConfig(path.join(dir, 'missing.json')), { code: 'CONFIG_NOT_FOUND' });
});

t.test('CLI: a bad config exits 1 with the code; --check validates', async (t) => {
  const dir = tmpDir();
  writeFileSync(path.join(dir, 'device.json'), JSON.stringify({ ...good(), telemetryIntervalSec: 0 }));
  const r = spawnSync(process.execPath, [CLI, 'device', '--config', path.join(dir, 'device.json')], { encoding: 'utf8' });
  t.equal(r.status, 1);
  t.match(r.stderr, /telemetryIntervalSec: must be >= 1/);
  t.match(r.stderr, /\[CONFIG_INVALID\]/);
  writeFileSync(path.join(dir, 'ok.json'), JSON.stringify(good()));
  const ok = spawnSync(process.execPath, [CLI, 'device', '--config', path.join(dir, 'ok.json'), '--check'], { encoding: 'utf8' });
  t.equal(ok.status, 0, ok.stderr);
  t.match(ok.stdout, /config ok: device jetson-01/);
});

const py = spawnSync('python3', ['-c', 'import socket; print(hasattr(socket, "AF_UNIX"))'], { encoding: 'utf8' });
t.test('sd_notify: READY=1 and WATCHDOG=1 reach a real unix datagram socket', { skip: py.status === 0 && existsSync('/usr/bin/systemd-notify') ? false : 'needs python3 (to bind a datagram socket) and systemd-notify' }, async (t) => {
  const dir = tmpDir();
  const sock = path.join(dir, 'notify.sock');
  const recv = spawn('python3', ['-u', '-c', [
    'import socket,sys', 's=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)', `s.bind(${JSON.stringify(sock)})`, 'print("bound", flush=True)',
    's.settimeout(10)', 'while True:', '  m=s.recv(4096)', '  print(m.decode().replace("\\n","|"), flush=True)',
  ].join('\n')], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  recv.stdout!.on('data', (d) => { out += d; });
  t.teardown(() => { recv.kill('SIGKILL'); });
  await waitFor(() => out.includes('bound'), 5000, 'python datagram socket');
  const sd = new SdNotify({ NOTIFY_SOCKET: sock });
  t.ok(await sd.ready('model none'));
  await waitFor(() => out.includes('READY=1|STATUS=model none'), 5000, 'READY=1 datagram');
  const every = sd.startWatchdog({ NOTIFY_SOCKET: sock, WATCHDOG_USEC: '400000' });
  t.equal(every, 200, 'pings at half the watchdog interval');
  await waitFor(() => out.includes('WATCHDOG=1'), 5000, 'WATCHDOG=1 datagram');
  sd.stopWatchdog();
  t.notOk(await new SdNotify({}).ready(), 'no NOTIFY_SOCKET: no-op');
});
