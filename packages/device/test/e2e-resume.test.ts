// Resumable OTA with the embedded aedes broker (MQTT 3.1.1) and the real
// engine: the daemon is killed with SIGKILL mid-download and restarted; the
// bytes already on disk are not fetched again (the package server counts what
// it sends), and the install completes. Network drops inside one run resume too.
import t from 'tap';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  engineAvailable, startAedes, makeKeys, tmpDir, buildPackage, startPackageServer,
  baseConfig, writeDeviceConfig, startDaemon, FleetClient, waitFor, cleanup,
} from './helpers.js';

function partialBytes(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const f of readdirSync(dir, { recursive: true }) as string[]) {
    const p = path.join(dir, f);
    if (statSync(p).isFile()) n += statSync(p).size;
  }
  return n;
}

t.test('kill -9 mid-download, restart, resume without re-fetching', { skip: engineAvailable(), timeout: 90_000 }, async (t) => {
  const broker = await startAedes();
  const keys = makeKeys();
  const root = tmpDir('shoal-pkgs-');
  const storeDir = tmpDir('shoal-store-');
  const srv = await startPackageServer(root);
  // 1 MB model + 1 MB padding so there is time to kill mid-download
  const pkg = await buildPackage(root, 'stories', '1.0.0', keys, { extraBytes: 1_000_000 });
  srv.throttle = 400_000; // bytes/s per response
  const cfgDir = tmpDir('shoal-cfg-');
  const cfgFile = writeDeviceConfig(cfgDir, baseConfig({ deviceId: 'jetson-resume', brokerUrl: broker.url, storeDir, publicPem: keys.publicPem }));
  let daemon = await startDaemon(cfgFile);
  const fleet = await new FleetClient(broker.url, 'jetson-resume').connect();
  t.teardown(() => cleanup(() => daemon.kill('SIGKILL'), () => fleet.close(), () => srv.close(), () => broker.close()));
  const st = await fleet.waitState((s) => s.online, 10_000, 'online');
  t.equal(st.mqttVersion, 4, 'fell back to MQTT 3.1.1 with aedes');

  await fleet.setDesired({ v: 1, ts: Date.now(), model: { name: pkg.name, version: pkg.version, manifestUrl: srv.url(pkg), manifestSha256: pkg.manifestSha256 } });
  const partial = path.join(storeDir, '.partial', 'stories', '1.0.0');
  await waitFor(() => partialBytes(partial) > 500_000, 20_000, 'half the package on disk');
  t.equal(await daemon.kill('SIGKILL'), null, 'killed by signal');
  const onDisk = partialBytes(partial);
  const requestsBefore = srv.requests.length;
  t.ok(onDisk > 500_000 && onDisk < pkg.totalBytes, `${onDisk} of ${pkg.totalBytes} bytes on disk at the kill`);
  t.notOk(existsSync(path.join(storeDir, 'stories', '1.0.0')), 'not installed yet');

  srv.throttle = 0;
  daemon = await startDaemon(cfgFile);
  await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.0.0', 30_000, 'active after resume');
  // bytes sent by responses to the restarted daemon (the old responses may still trickle into the dead socket)
  const servedAfter = srv.requests.slice(requestsBefore).filter((r) => !r.path.endsWith('manifest.json')).reduce((s, r) => s + r.bytes, 0);
  t.equal(servedAfter, pkg.totalBytes - onDisk, 'only the missing bytes were fetched after the restart');
  t.ok(srv.requests.some((r) => r.status === 206 && r.range !== undefined), 'resumed with a Range request');
  t.ok(existsSync(path.join(storeDir, 'stories', '1.0.0', 'padding.bin')));
  t.same(readdirSync(path.join(storeDir, '.partial')), [], 'partial dir moved into the store');
  const gen = await fleet.request('generate', { prompt: 'Once upon a time', maxTokens: 8 });
  t.ok(gen.final.ok, JSON.stringify(gen.final.error));
});

t.test('network drops during a download are resumed in-process', { skip: engineAvailable(), timeout: 60_000 }, async (t) => {
  const broker = await startAedes();
  const keys = makeKeys();
  const root = tmpDir('shoal-pkgs-');
  const srv = await startPackageServer(root);
  const pkg = await buildPackage(root, 'stories', '1.0.0', keys);
  srv.dropAfter = 200_000; // every response cut after 200 kB
  const cfgFile = writeDeviceConfig(tmpDir('shoal-cfg-'), baseConfig({ deviceId: 'jetson-drop', brokerUrl: broker.url, storeDir: tmpDir('shoal-store-'), publicPem: keys.publicPem }));
  const daemon = await startDaemon(cfgFile);
  const fleet = await new FleetClient(broker.url, 'jetson-drop').connect();
  t.teardown(() => cleanup(() => daemon.kill('SIGKILL'), () => fleet.close(), () => srv.close(), () => broker.close()));
  await fleet.waitState((s) => s.online, 10_000, 'online');
  await fleet.setDesired({ v: 1, ts: Date.now(), model: { name: pkg.name, version: pkg.version, manifestUrl: srv.url(pkg), manifestSha256: pkg.manifestSha256 } });
  await fleet.waitState((s) => s.phase === 'active' && s.model?.version === '1.0.0', 30_000, 'active');
  const manifestBytes = srv.bytesServed.get('stories/1.0.0/manifest.json') ?? 0;
  t.equal(srv.totalServed() - manifestBytes, pkg.totalBytes, 'each byte fetched once despite the drops');
  t.ok(srv.requests.filter((r) => r.path.endsWith('model.safetensors')).length >= 5, 'several ranged requests for the big file');
});
