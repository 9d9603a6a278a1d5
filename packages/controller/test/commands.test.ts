// The CLI as an operator uses it, as child processes: keygen, package, the
// controller process (killed with SIGKILL mid-rollout and restarted), fleet
// commands against its API, and their errors.
import t from 'tap';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { verifyManifest, Manifest } from '@shoal/protocol';
import { freePort, SimDevice } from '@shoal/devkit';
import { makeModelDir, startBroker, tmpDir, waitFor } from '@shoal/testkit/fleet';
import { CLI_MAIN } from '@shoal/testkit';

const CLI = CLI_MAIN;

function shoal(args: string[], env: Record<string, string> = {}): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', env: { ...process.env, SHOAL_CONNECTION: '/nonexistent/conn.json', ...env }, timeout: 60_000 });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

async function shoalAsync(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, SHOAL_CONNECTION: '/nonexistent/conn.json', ...env } });
    let stdout = '';
    let stderr = '';
    c.stdout.on('data', (d) => { stdout += d; });
    c.stderr.on('data', (d) => { stderr += d; });
    c.on('exit', (code) => resolve({ code: code ?? -1, stdout, stderr }));
  });
}

function startControllerProcess(cfg: string): Promise<{ proc: ChildProcess; api: string }> {
  const proc = spawn(process.execPath, [CLI, 'controller', '--config', cfg], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  return new Promise((resolve, reject) => {
    proc.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /API (http:\/\/127\.0\.0\.1:\d+)\/api/.exec(err);
      if (m) resolve({ proc, api: m[1]! });
    });
    proc.once('exit', (c) => reject(new Error(`controller exited ${c}: ${err}`)));
  });
}

t.test('shoal CLI end to end (controller process, simulated devices)', async (t) => {
  const dir = tmpDir();
  const broker = await startBroker('mosquitto');
  const procs: ChildProcess[] = [];
  const sims: SimDevice[] = [];
  t.teardown(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
    await Promise.all(sims.map((s) => s.stop()));
    await broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // keygen
  const keys = path.join(dir, 'keys');
  let r = shoal(['keygen', '--out', keys]);
  t.equal(r.code, 0, r.stderr);
  t.equal(fs.statSync(path.join(keys, 'fleet.key')).mode & 0o777, 0o600, 'private key is 0600');
  t.match(fs.readFileSync(path.join(keys, 'fleet.pub'), 'utf8'), /BEGIN PUBLIC KEY/);
  r = shoal(['keygen', '--out', keys]);
  t.equal(r.code, 1);
  t.match(r.stderr, /already exists; pass --force.*\[KEY_EXISTS\]/);

  // package
  const model = makeModelDir(path.join(dir, 'model'));
  fs.mkdirSync(path.join(model, 'sub'));
  fs.writeFileSync(path.join(model, 'sub', 'extra.txt'), 'nested file');
  const pkg = path.join(dir, 'pkg-1');
  r = shoal(['package', '--model', model, '--name', 'demo', '--version', '1.0', '--key', path.join(keys, 'fleet.key'), '--out', pkg, '--json']);
  t.equal(r.code, 0, r.stderr);
  const manifest = Manifest.parse(JSON.parse(fs.readFileSync(path.join(pkg, 'manifest.json'), 'utf8')));
  t.same(manifest.files.map((f) => f.path), ['config.json', 'part-0.bin', 'part-1.bin', 'sub/extra.txt']);
  t.equal(manifest.architecture, 'LlamaForCausalLM');
  t.equal(manifest.quantization, 'awq-w4g128');
  t.same(verifyManifest(manifest, fs.readFileSync(path.join(keys, 'fleet.pub'), 'utf8')), { ok: true }, 'signature verifies with the public key');
  r = shoal(['package', '--model', model, '--name', 'demo', '--version', '1.0', '--key', path.join(keys, 'fleet.pub'), '--out', path.join(dir, 'x')]);
  t.equal(r.code, 1);
  t.match(r.stderr, /\[KEY_INVALID\]/);
  r = shoal(['package', '--model', path.join(dir, 'nope'), '--name', 'demo', '--version', '1.0', '--key', path.join(keys, 'fleet.key'), '--out', path.join(dir, 'x')]);
  t.match(r.stderr, /\[MODEL_DIR_INVALID\]/);
  r = shoal(['package', '--model', model, '--name', 'bad name', '--version', '1.0', '--key', path.join(keys, 'fleet.key'), '--out', path.join(dir, 'x')]);
  t.equal(r.code, 1);
  t.match(r.stderr, /name/);
  const pkg2 = path.join(dir, 'pkg-2');
  t.equal(shoal(['package', '--model', model, '--name', 'demo', '--version', '2.0', '--key', path.join(keys, 'fleet.key'), '--out', pkg2]).code, 0);

  // controller process
  const port = await freePort();
  const token = 'cli-test-token-0123456789';
  const cfg = path.join(dir, 'controller.json');
  fs.writeFileSync(cfg, JSON.stringify({
    broker: { url: broker.url, protocolVersion: 5 }, http: { host: '127.0.0.1', port }, token, dataDir: './data',
    fleetPublicKey: 'keys/fleet.pub', rollout: { tickMs: 100, defaultTimeoutSec: 30 }, logLevel: 'warn',
  }));
  let ctl = await startControllerProcess(cfg);
  procs.push(ctl.proc);
  const env = { SHOAL_API: ctl.api, SHOAL_TOKEN: token };

  // no connection settings, wrong token, bad config
  r = shoal(['fleet', 'ls']);
  t.equal(r.code, 1);
  t.match(r.stderr, /\[NO_API_CONFIG\]/);
  r = shoal(['fleet', 'ls', '--token', 'wrong-token-xxxxxxxxxxxx'], { SHOAL_API: ctl.api });
  t.match(r.stderr, /token is wrong.*\[UNAUTHORIZED\]/);
  fs.writeFileSync(path.join(dir, 'bad.json'), '{"broker":{"url":"http://x"},"token":"short"}');
  r = shoal(['controller', '--config', path.join(dir, 'bad.json')]);
  t.equal(r.code, 1);
  t.match(r.stderr, /broker\.url.*\[CONFIG_INVALID\]/);

  // devices: sim-1 is fast, sim-2 and sim-3 slow (so the rollout is mid-wave when the controller dies,
  // even on a loaded machine where each CLI call below takes a second)
  for (let i = 1; i <= 3; i++) {
    const s = new SimDevice({ id: `sim-${i}`, brokerUrl: broker.url, group: 'lab', stepMs: i === 1 ? 20 : 4000, protocolVersion: 5, model: null });
    sims.push(s);
    await s.connect();
  }
  r = await shoalAsync(['fleet', 'package', 'add', pkg], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /added demo@1\.0 \(4 files/);
  t.equal((await shoalAsync(['fleet', 'package', 'add', pkg2, '--json'], env)).code, 0);
  r = await shoalAsync(['fleet', 'package', 'add', pkg], env);
  t.match(r.stderr, /already registered.*\[PACKAGE_EXISTS\]/);
  r = await shoalAsync(['fleet', 'ls', '--json'], env);
  const devs = JSON.parse(r.stdout) as { id: string; online: boolean }[];
  t.same(devs.map((d) => [d.id, d.online]), [['sim-1', true], ['sim-2', true], ['sim-3', true]]);
  r = await shoalAsync(['fleet', 'ls'], env);
  t.match(r.stdout, /sim-2/);
  t.match(r.stdout, /3\/3 online/);

  r = await shoalAsync(['fleet', 'deploy', 'demo@1.0', '--to', 'group:lab', '--waves', '1,100%', '--timeout', '30', '--no-wait', '--json'], env);
  t.equal(r.code, 0, r.stderr);
  const rolloutId = (JSON.parse(r.stdout) as { id: string }).id;
  const status = async () => JSON.parse((await shoalAsync(['fleet', 'rollout', 'status', rolloutId, '--json'], env)).stdout) as { status: string; currentWave: number; devices: { id: string; status: string }[] };
  // wait until the slow wave-2 devices have fetched the manifest (they are past
  // 'downloading'), then kill the controller hard while they are still converging
  await waitFor('wave 2 devices past the download', () => sims.slice(1).every((s) => s.phase === 'verifying'), 30_000, 20);
  const mid = await status();
  t.equal(mid.status, 'running');
  t.equal(mid.currentWave, 1, 'killed during wave 2');
  ctl.proc.kill('SIGKILL');
  await new Promise((res) => ctl.proc.once('exit', res));
  await waitFor('slow devices converge while the controller is down', () => sims.every((s) => s.model?.version === '1.0'), 45_000);
  ctl = await startControllerProcess(cfg);
  procs.push(ctl.proc);
  let done: Awaited<ReturnType<typeof status>> | null = null;
  for (let i = 0; i < 100; i++) { done = await status(); if (done.status !== 'running') break; await new Promise((res) => setTimeout(res, 100)); }
  t.equal(done!.status, 'succeeded', 'the restarted controller finished the rollout');
  t.same(done!.devices.map((d) => d.status), ['active', 'active', 'active']);

  // a deploy that waits, failing on sim-3 (its health check fails for 2.0)
  await sims[2]!.stop();
  const bad = new SimDevice({ id: 'sim-3', brokerUrl: broker.url, group: 'lab', stepMs: 20, protocolVersion: 5, model: { name: 'demo', version: '1.0' }, failVersions: new Set(['demo@2.0']) });
  sims[2] = bad;
  await bad.connect();
  r = await shoalAsync(['fleet', 'deploy', 'demo@2.0', '--to', 'sim-1,sim-3', '--waves', '1,100%', '--timeout', '20'], env);
  t.equal(r.code, 2, 'a failed rollout exits 2');
  t.match(r.stdout, /FAILED/);
  t.match(r.stdout, /HEALTH_CHECK_FAILED/);
  await waitFor('sim-3 desired back to 1.0', () => bad.desired?.version === '1.0');
  t.equal(sims[0]!.model?.version, '2.0', 'wave 1 keeps the new version');

  r = await shoalAsync(['fleet', 'rollout', 'pause'], env);
  t.equal(r.code, 1);
  t.match(r.stderr, /\[ROLLOUT_STATE\]/);
  r = await shoalAsync(['fleet', 'exec', 'sim-1', 'ping'], env);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /"pong": true/);
  r = await shoalAsync(['fleet', 'exec', 'sim-1', 'set-telemetry-interval', '{bad json'], env);
  t.match(r.stderr, /\[INVALID_JSON\]/);
  r = await shoalAsync(['fleet', 'infer', 'sim-1', 'tell me a story', '--max-tokens', '5'], env);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.trim(), 'simulated answer from sim-1 to:');
  r = await shoalAsync(['fleet', 'events', '--type', 'ota.failed', '--json'], env);
  t.ok(r.stdout.trim().split('\n').some((l) => (JSON.parse(l) as { deviceId: string }).deviceId === 'sim-3'), 'ota.failed from sim-3 listed');
  r = await shoalAsync(['fleet', 'telemetry', 'sim-1', '--limit', '2', '--json'], env);
  t.ok(r.stdout.trim().split('\n').length >= 1);
  r = await shoalAsync(['fleet', 'audit', '--json'], env);
  t.match(r.stdout, /rollout\.stopped/);
  r = await shoalAsync(['fleet', 'deploy', 'demo', '--to', 'all'], env);
  t.match(r.stderr, /\[INVALID_MODEL_REF\]/);
});
