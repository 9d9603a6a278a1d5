// OTA under faults (aedes, real engine, stories260K): every failure is rejected or retried as it
// should, with the reason in an event, nothing of the failed version left in the store, and the
// previous model active and answering.
//  1. one byte corrupted in transit: fetched once more from scratch, then active;
//  2. a corrupted artifact on the server: FILE_HASH_MISMATCH after the second fetch;
//  3. a package signed by another key, 4. a manifest changed after signing: SIGNATURE_INVALID;
//  5. a download cut at the same offset every time: retried with backoff until retryUntil,
//     then DOWNLOAD_FAILED with the partial bytes removed and reported;
//  6. store recovery at start: temp files, trash, stray partials and versions beyond
//     keepVersions are removed and reported in a store.recovered event;
//  7. disk full in the middle of a download (a 3 MiB tmpfs store; root only): INSUFFICIENT_SPACE
//     retried, the active model answers, the deployment succeeds once space is freed.
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { sha256Hex } from '@shoal/protocol';
import {
  engineAvailable, startAedes, makeKeys, tmpDir, buildPackage, startPackageServer,
  baseConfig, writeDeviceConfig, startDaemon, FleetClient, cleanup, waitFor, type BuiltPackage, type PackageServer,
} from './helpers.js';

const skip = engineAvailable();
const desiredFor = (srv: PackageServer, pkg: BuiltPackage, extra: Record<string, unknown> = {}) =>
  ({ v: 1, ts: Date.now(), rolloutId: `r-${pkg.version}`, model: { name: pkg.name, version: pkg.version, manifestUrl: srv.url(pkg), manifestSha256: pkg.manifestSha256 }, ...extra });
const partials = (storeDir: string) => (existsSync(path.join(storeDir, '.partial')) ? readdirSync(path.join(storeDir, '.partial'), { recursive: true }) : []);

t.test('OTA faults: rejected or retried with the reason in an event, nothing left behind', { skip, timeout: 150_000 }, async (t) => {
  const broker = await startAedes();
  const keys = makeKeys();
  const root = tmpDir('shoal-pkgs-');
  const storeDir = tmpDir('shoal-store-');
  const srv = await startPackageServer(root);
  const v1 = await buildPackage(root, 'stories', '1.0.0', keys);
  const cfgDir = tmpDir('shoal-cfg-');
  const cfg = baseConfig({ deviceId: 'jetson-faults', brokerUrl: broker.url, storeDir, publicPem: keys.publicPem, download: { retries: 1, idleTimeoutSec: 5, progressIntervalMs: 100, retryMaxDelaySec: 1 } });
  let daemon = await startDaemon(writeDeviceConfig(cfgDir, cfg));
  const fleet = await new FleetClient(broker.url, 'jetson-faults').connect();
  t.teardown(() => cleanup(() => daemon.kill('SIGKILL'), () => fleet.close(), () => srv.close(), () => broker.close()));
  await fleet.setDesired(desiredFor(srv, v1));
  await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.0.0', 30_000, 'v1 active');
  const answers = async (t: Test, version: string) => {
    const r = await fleet.request('generate', { prompt: 'Once', maxTokens: 4 });
    t.ok(r.final.ok, `the active model answers (${JSON.stringify(r.final.error ?? '')})`);
    t.equal((r.final.result as { model: { version: string } }).model.version, version, `${version} answers`);
  };
  const failedWith = async (t: Test, pkg: BuiltPackage, code: string) => {
    const ev = await fleet.waitEvent((e) => e.type === 'ota.failed' && e.data.version === pkg.version, 30_000, `ota.failed for ${pkg.version}`);
    t.equal(ev.data.code, code, `${pkg.version}: ${code} (${String(ev.data.reason)})`);
    t.same(ev.data.activeModel, { name: 'stories', version: '1.0.0' });
    t.notOk(existsSync(path.join(storeDir, 'stories', pkg.version)), `${pkg.version} not installed`);
    t.same(partials(storeDir), [], 'nothing partial left');
    return ev;
  };

  await t.test('a byte corrupted once in transit is fetched again and the deployment succeeds', async (t) => {
    const v11 = await buildPackage(root, 'stories', '1.1.0', keys);
    srv.corruptNext = 1;
    await fleet.setDesired(desiredFor(srv, v11));
    const retry = await fleet.waitEvent((e) => e.type === 'ota.retrying' && e.data.version === '1.1.0', 30_000, 'ota.retrying');
    t.equal(retry.data.code, 'FILE_HASH_MISMATCH');
    await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.1.0', 30_000, 'v1.1 active');
    const mark = fleet.states.length; // the first v1 state must not count as the return to it
    await fleet.setDesired(desiredFor(srv, v1));
    await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.0.0', 30_000, 'back on v1', mark);
  });

  await t.test('a corrupted artifact fails after the second fetch', async (t) => {
    const bad = await buildPackage(root, 'stories', '3.0.0', keys, { corruptFile: 'model.safetensors' });
    await fleet.setDesired(desiredFor(srv, bad));
    const ev = await failedWith(t, bad, 'FILE_HASH_MISMATCH');
    t.equal(srv.requests.filter((r) => r.path === 'stories/3.0.0/model.safetensors' && r.status === 200).length, 2, 'fetched twice from scratch');
    t.ok(Number(ev.data.freedBytes) >= 0);
    await answers(t, '1.0.0');
  });

  await t.test('a package signed by another key is rejected before any download', async (t) => {
    const other = await buildPackage(root, 'stories', '4.0.0', keys, { signWith: makeKeys().privatePem });
    await fleet.setDesired(desiredFor(srv, other));
    await failedWith(t, other, 'SIGNATURE_INVALID');
    t.equal(srv.requests.filter((r) => r.path.startsWith('stories/4.0.0/') && !r.path.endsWith('manifest.json')).length, 0, 'no file fetched');
    await answers(t, '1.0.0');
  });

  await t.test('a manifest changed after signing is rejected', async (t) => {
    const pkg = await buildPackage(root, 'stories', '5.0.0', keys);
    const m = JSON.parse(readFileSync(pkg.manifestPath, 'utf8'));
    m.quantization = 'awq-w4g128'; // any field: the signature covers the canonical manifest
    const text = JSON.stringify(m, null, 2);
    writeFileSync(pkg.manifestPath, text);
    const changed = { ...pkg, manifestSha256: sha256Hex(text) }; // the desired state matches the served bytes
    await fleet.setDesired(desiredFor(srv, changed));
    await failedWith(t, changed, 'SIGNATURE_INVALID');
    await answers(t, '1.0.0');
  });

  await t.test('a download cut at the same offset every time: retried until retryUntil, then removed and reported', async (t) => {
    const pkg = await buildPackage(root, 'stories', '6.0.0', keys);
    srv.cutAtOffset = 400_000;
    fleet.events.length = 0;
    await fleet.setDesired(desiredFor(srv, pkg, { retryUntil: Date.now() + 4000 }));
    const ev = await failedWith(t, pkg, 'DOWNLOAD_FAILED');
    srv.cutAtOffset = 0;
    const retries = fleet.events.filter((e) => e.type === 'ota.retrying' && e.data.version === '6.0.0');
    t.ok(retries.length >= 1, `retried (${retries.length} ota.retrying events) before failing`);
    t.ok(retries.every((e) => e.data.code === 'DOWNLOAD_FAILED' && /at byte 400000/.test(String(e.data.reason))), 'the reason names the offset');
    t.ok(Number(ev.data.attempts) >= 2, `attempts ${ev.data.attempts}`);
    t.ok(Number(ev.data.freedBytes) >= 400_000, `freed ${ev.data.freedBytes} bytes of partial download`);
    await answers(t, '1.0.0');
  });

  await t.test('store recovery at start removes leftovers and reports them', async (t) => {
    const mark = fleet.states.length;
    await fleet.setDesired(desiredFor(srv, v1)); // the failed 6.0.0 would be retried after a restart
    await fleet.waitState((s) => s.desired?.version === '1.0.0' && s.phase === 'active', 10_000, 'desired back to v1', mark);
    t.equal(await daemon.kill('SIGTERM'), 0);
    writeFileSync(path.join(storeDir, '.active.json.123.abcd.tmp'), '{"half":');
    mkdirSync(path.join(storeDir, '.partial', 'stories', '9.9.9'), { recursive: true });
    writeFileSync(path.join(storeDir, '.partial', 'stories', '9.9.9', 'model.safetensors'), Buffer.alloc(1000));
    mkdirSync(path.join(storeDir, '.partial', '.trash-stories-0.1-1'), { recursive: true });
    // two more complete versions than keepVersions (copies of 1.0.0 with their own manifest)
    for (const v of ['0.8.0', '0.9.0', '0.9.5']) execFileSync('cp', ['-r', path.join(storeDir, 'stories', '1.0.0'), path.join(storeDir, 'stories', v)]);
    fleet.events.length = 0;
    daemon = await startDaemon(writeDeviceConfig(cfgDir, { ...cfg, store: { dir: storeDir, keepVersions: 3, reserveBytes: 0 } }));
    const ev = await fleet.waitEvent((e) => e.type === 'store.recovered', 20_000, 'store.recovered');
    t.same(ev.data.tmpFiles, ['.active.json.123.abcd.tmp']);
    t.equal(ev.data.trash, 1);
    t.same(ev.data.partials, ['stories/9.9.9']);
    t.ok((ev.data.gc as unknown[]).length >= 1, `gc removed ${JSON.stringify(ev.data.gc)}`);
    t.ok(Number(ev.data.freedBytes) > 1000);
    t.notOk(existsSync(path.join(storeDir, '.active.json.123.abcd.tmp')));
    await fleet.waitState((s) => s.online && s.model?.version === '1.0.0' && s.desired?.version === '1.0.0' && s.store.length <= 3, 10_000, 'v1 active, store within keepVersions');
    await waitFor(() => partials(storeDir).length === 0, 10_000, 'no partial download left').catch(() => undefined);
    t.same(partials(storeDir), [], 'no partial download left');
    await answers(t, '1.0.0');
  });
});

const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
t.test('disk full in the middle of a download', { skip: skip || (!isRoot ? 'needs root to mount a small tmpfs store (run as root to include it)' : false), timeout: 120_000 }, async (t) => {
  const mnt = tmpDir('shoal-tmpfs-');
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt]);
  } catch (e) {
    t.comment(`skipped: cannot mount a tmpfs here: ${(e as Error).message.split('\n')[0]}`);
    return;
  }
  const broker = await startAedes();
  const keys = makeKeys();
  const root = tmpDir('shoal-pkgs-');
  const srv = await startPackageServer(root);
  const storeDir = path.join(mnt, 'store');
  const v1 = await buildPackage(root, 'stories', '1.0.0', keys);
  const v2 = await buildPackage(root, 'stories', '2.0.0', keys);
  const cfgDir = tmpDir('shoal-cfg-');
  const cfg = baseConfig({ deviceId: 'jetson-full', brokerUrl: broker.url, storeDir, publicPem: keys.publicPem, store: { dir: storeDir, keepVersions: 2, reserveBytes: 0 },
    download: { retries: 1, idleTimeoutSec: 5, progressIntervalMs: 100, retryMaxDelaySec: 1 } });
  let daemon: Awaited<ReturnType<typeof startDaemon>> | undefined;
  let fleet: FleetClient | undefined;
  t.teardown(async () => {
    await cleanup(() => daemon?.kill('SIGKILL'), () => fleet?.close(), () => srv.close(), () => broker.close());
    try { execFileSync('umount', [mnt]); } catch { /* busy: left for the OS */ }
    rmSync(mnt, { recursive: true, force: true });
  });
  daemon = await startDaemon(writeDeviceConfig(cfgDir, cfg));
  fleet = await new FleetClient(broker.url, 'jetson-full').connect();
  await fleet.setDesired(desiredFor(srv, v1));
  await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.0.0', 30_000, 'v1 active');
  // v2 (1.1 MB) passes the space check, then the disk fills while it downloads
  srv.throttle = 400_000;
  fleet.events.length = 0;
  await fleet.setDesired(desiredFor(srv, v2, { retryUntil: Date.now() + 90_000 }));
  await fleet.waitEvent((e) => e.type === 'ota.progress' && e.data.version === '2.0.0' && Number(e.data.bytes) > 100_000, 20_000, 'v2 downloading');
  const filler = path.join(mnt, 'filler');
  try { execFileSync('dd', ['if=/dev/zero', `of=${filler}`, 'bs=64k', 'count=100'], { stdio: 'ignore' }); } catch { /* fills up to ENOSPC */ }
  const full = await fleet.waitEvent((e) => e.type === 'ota.retrying' && e.data.version === '2.0.0' && e.data.code === 'INSUFFICIENT_SPACE', 30_000, 'INSUFFICIENT_SPACE')
    .catch((e) => { throw new Error(`${(e as Error).message}\n${daemon!.logs().slice(-3000)}`); });
  t.match(String(full.data.reason), /full|space/);
  const r = await fleet.request('generate', { prompt: 'Once', maxTokens: 4 });
  t.ok(r.final.ok, 'the active model answers with the disk full');
  t.notOk(fleet.events.some((e) => e.type === 'ota.failed'), 'not failed while within retryUntil');
  srv.throttle = 0;
  rmSync(filler);
  await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '2.0.0', 60_000, 'v2 active once space is freed');
  t.same(partials(storeDir), [], 'nothing partial left');
});
