// End to end with the real engine: three device daemons (child processes) on the
// embedded aedes broker, the controller, signed packages.
// Runs on aedes (MQTT 3.1.1) and mosquitto (MQTT 5).
//  1. a rollout in waves succeeds and every device reports the new version;
//  2. a package that fails its health check on the wave-2 devices stops the
//     rollout and puts wave 2 back on the previous version; wave 1 keeps the new one.
// The failure is device-specific and deterministic: v2 has a 24-token context, and
// the wave-2 devices health-check with a prompt longer than that.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { buildPackage, ControllerClient } from '@shoal/controller';
import { sharedPath, CLI_MAIN, repoRoot as repo } from '@shoal/testkit';
import { TOKEN, startBroker, startTestController, tmpDir, waitFor, type BrokerKind } from '@shoal/testkit/fleet';

const CLI = CLI_MAIN;
const addon = ['Release', 'Debug'].map((b) => path.join(repo, 'native', 'build', b, 'shoal.node')).find((f) => fs.existsSync(f));
const tokenizerDir = [process.env.SHOAL_TOKENIZER_DIR, sharedPath('models', 'llama2-tokenizer-32k')]
  .filter((x): x is string => Boolean(x)).find((d) => fs.existsSync(path.join(d, 'tokenizer.json')));
const LONG_PROMPT = 'The robots of the northern warehouse woke before dawn, checked their batteries, read the overnight orders, and planned routes through the aisles so that every parcel would leave the loading dock before the first truck arrived at seven in the morning.';

for (const kind of ['aedes', 'mosquitto'] as BrokerKind[]) t.test(`three device daemons, real engine, ${kind}`, { skip: !addon ? 'native engine not built (run `make`)' : !tokenizerDir ? 'no tokenizer.json (set SHOAL_TOKENIZER_DIR)' : false }, async (t) => {
  const { generateModel } = await import('@shoal/modelkit');
  const dir = tmpDir('shoal-e2e-');
  const broker = await startBroker(kind);
  const mqttVersion = kind === 'mosquitto' ? 5 : 4; // aedes speaks MQTT 3.1.1 only
  const ctl = await startTestController(broker.url, dir, { rollout: { tickMs: 100, defaultTimeoutSec: 120 } }, mqttVersion);
  const procs: { id: string; proc: ChildProcess; exited: Promise<number | null>; log: string }[] = [];
  t.teardown(async () => {
    for (const p of procs) if (p.proc.exitCode === null) p.proc.kill('SIGKILL');
    await ctl.close();
    await broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const v1 = generateModel({ out: path.join(dir, 'm1'), shape: 'tiny', quant: 'awq-w4g128', seed: 1, tokenizerDir }).dir;
  const v2 = generateModel({ out: path.join(dir, 'm2'), shape: 'tiny', quant: 'awq-w4g128', seed: 2, tokenizerDir, overrides: { maxPositionEmbeddings: 24 } }).dir;
  for (const [model, version] of [[v1, '1.0'], [v2, '2.0']] as const) {
    const out = path.join(dir, `pkg-${version}`);
    await buildPackage({ modelDir: model, name: 'tiny', version, keyFile: path.join(dir, 'keys', 'fleet.key'), outDir: out });
    await ctl.registry.addFromDir(out, Date.now());
  }

  for (let i = 1; i <= 3; i++) {
    const id = `robot-${i}`;
    const ddir = path.join(dir, 'devices', id);
    fs.mkdirSync(ddir, { recursive: true });
    const cfg = {
      configVersion: 1, deviceId: id, group: 'e2e', labels: { wave: i === 1 ? 'canary' : 'main' }, logLevel: 'info',
      broker: { url: broker.url, protocolVersion: mqttVersion }, store: { dir: path.join(ddir, 'store'), reserveBytes: 0 },
      http: { enabled: false }, telemetryIntervalSec: 1, fleetPublicKey: path.join(dir, 'keys', 'fleet.pub'),
      engine: { threads: 1 }, health: { timeoutSec: 60, ...(i > 1 ? { prompt: LONG_PROMPT } : {}) },
    };
    fs.writeFileSync(path.join(ddir, 'device.json'), JSON.stringify(cfg, null, 2));
    const log = path.join(ddir, 'daemon.log');
    const fd = fs.openSync(log, 'w');
    const proc = spawn(process.execPath, [CLI, 'device', '--config', path.join(ddir, 'device.json')], { stdio: ['ignore', fd, fd] });
    fs.closeSync(fd);
    procs.push({ id, proc, log, exited: new Promise((res) => proc.once('exit', (c) => res(c))) });
  }
  const logs = () => procs.map((p) => `--- ${p.id}\n${fs.readFileSync(p.log, 'utf8').split('\n').slice(-8).join('\n')}`).join('\n');
  await waitFor('3 daemons online', () => ctl.storage.listDevices().filter((d) => d.online).length === 3, 30_000).catch((e) => { throw new Error(`${e.message}\n${logs()}`); });

  await t.test('a rollout in waves reaches every device', async (t) => {
    const r = ctl.rollouts.create({ name: 'tiny', version: '1.0', to: 'group:e2e', waves: '1,100%', timeoutSec: 60 });
    const done = await waitFor('rollout 1', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; }, 70_000);
    t.equal(done.status, 'succeeded', `${done.message}\n${logs()}`);
    await waitFor('all report tiny@1.0 active', () => ctl.storage.listDevices().every((d) => d.model?.version === '1.0' && d.phase === 'active'), 10_000);
    for (const d of ctl.storage.listDevices()) {
      t.same(d.model, { name: 'tiny', version: '1.0' }, `${d.id} reports tiny@1.0`);
      t.equal((d.state as { rolloutId?: string }).rolloutId, r.id);
    }
    t.ok(ctl.storage.listEvents({ type: 'ota.activated', limit: 10 }).length >= 3, 'ota.activated events from every device');
  });

  await t.test('a health-check failure in wave 2 rolls wave 2 back; wave 1 keeps the new version', async (t) => {
    const r = ctl.rollouts.create({ name: 'tiny', version: '2.0', to: 'robot-1,robot-2,robot-3', waves: '1,100%', maxFailures: '0', timeoutSec: 60 });
    const done = await waitFor('rollout 2 stopped', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; }, 70_000);
    t.equal(done.status, 'failed', `${done.message}\n${logs()}`);
    t.equal(done.currentWave, 1, 'stopped in wave 2');
    t.match(done.message, /HEALTH_CHECK_FAILED/);
    t.same(done.devices.map((d) => [d.id, d.status]), [['robot-1', 'active'], ['robot-2', 'rolled-back'], ['robot-3', 'rolled-back']]);
    await waitFor('wave 2 back on 1.0', () => ['robot-2', 'robot-3'].every((id) => {
      const s = ctl.storage.getDevice(id)!.state as { model?: { version: string }; desired?: { version: string } | null; phase?: string };
      return s.model?.version === '1.0' && s.desired?.version === '1.0' && s.phase === 'active';
    }), 30_000);
    t.equal(ctl.storage.getDevice('robot-1')!.model!.version, '2.0', 'wave 1 keeps tiny@2.0');
    t.equal(ctl.storage.getDevice('robot-2')!.desired!.model!.version, '1.0', 'desired <- previous');
    // events travel through each daemon's outbox. The first failure stops the
    // rollout at once (max failures 0), so on a slow machine the other wave-2
    // device may be put back before its own health check runs: at least one
    // ota.failed, and only from wave 2.
    const failed = await waitFor('ota.failed from wave 2', () => {
      const ids = ctl.storage.listEvents({ type: 'ota.failed', limit: 10 }).map((e) => e.deviceId).sort();
      return ids.length >= 1 && ids;
    }, 10_000);
    t.ok(failed.every((id) => id === 'robot-2' || id === 'robot-3'), `ota.failed only from wave 2: ${failed.join(', ')}`);
  });

  await t.test('a prompt through the controller and MQTT', async (t) => {
    const client = new ControllerClient({ api: `http://127.0.0.1:${ctl.api.address.port}`, token: TOKEN });
    const lines: Record<string, any>[] = [];
    for await (const l of client.stream('/api/devices/robot-2/infer', { prompt: 'Once upon a time', maxTokens: 8, temperature: 0 })) lines.push(l);
    const final = lines.at(-1)!;
    t.equal(final.ok, true, JSON.stringify(final));
    t.same(final.result.model, { name: 'tiny', version: '1.0' });
    t.equal(final.result.usage.completionTokens, 8);
    t.equal(lines.filter((l) => l.chunk).map((l) => l.chunk.text).join(''), final.result.text);
  });

  for (const p of procs) p.proc.kill('SIGTERM');
  const codes = await Promise.all(procs.map((p) => p.exited));
  t.same(codes, [0, 0, 0], 'daemons stop cleanly');
});
