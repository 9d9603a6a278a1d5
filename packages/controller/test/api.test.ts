// HTTP API: bearer auth, bad requests with stable codes, package upload, exec/infer
// through MQTT to a simulated device, the CLI client, audit log.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { ControllerClient } from '../src/client.js';
import { SimDevice } from '@shoal/devkit';
import { buildPackage } from '../src/packages.js';
import { TOKEN, api, makeModelDir, startBroker, startTestController, tmpDir, waitFor } from '@shoal/testkit/fleet';

t.test('controller HTTP API', async (t) => {
  const broker = await startBroker('aedes');
  const dir = tmpDir();
  const ctl = await startTestController(broker.url, dir);
  const sim = new SimDevice({ id: 'dev-a', brokerUrl: broker.url, group: 'g1', labels: { site: 'lab' }, model: { name: 'm', version: '0.9' } });
  await sim.connect();
  t.teardown(async () => {
    await sim.stop();
    await ctl.close();
    await broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor('dev-a known', () => ctl.storage.getDevice('dev-a')?.online);

  t.test('auth', async (t) => {
    const h = await api(ctl, 'GET', '/api/health', undefined, null);
    t.equal(h.status, 200, 'health needs no token');
    const none = await api(ctl, 'GET', '/api/devices', undefined, null);
    t.equal(none.status, 401);
    t.equal(none.json.error.code, 'UNAUTHORIZED');
    t.match(none.json.error.message, /Authorization: Bearer/);
    t.equal(none.headers.get('www-authenticate'), 'Bearer realm="shoal"');
    const wrong = await api(ctl, 'GET', '/api/devices', undefined, 'not-the-token-at-all');
    t.equal(wrong.status, 401);
    t.match(wrong.json.error.message, /token is wrong/);
    const ok = await api(ctl, 'GET', '/api/devices');
    t.equal(ok.status, 200);
    t.equal(ok.json.devices[0].id, 'dev-a');
    t.equal(ok.json.devices[0].group, 'g1');
    t.same(ok.json.devices[0].model, { name: 'm', version: '0.9' });
  });

  t.test('bad requests get stable codes and readable messages', async (t) => {
    const cases: [string, string, unknown, number, string, RegExp][] = [
      ['GET', '/api/nope', undefined, 404, 'NOT_FOUND', /docs\/controller.md/],
      ['GET', '/api/devices/ghost', undefined, 404, 'DEVICE_NOT_FOUND', /shoal fleet ls/],
      ['DELETE', '/api/devices', undefined, 405, 'METHOD_NOT_ALLOWED', /use GET/],
      ['POST', '/api/rollouts', '{not json', 400, 'INVALID_JSON', /not JSON/],
      ['POST', '/api/rollouts', { model: 'noversion', to: 'all' }, 400, 'BAD_REQUEST', /NAME@VERSION/],
      ['POST', '/api/rollouts', { model: 'm@1', to: 'all', extra: 1 }, 400, 'BAD_REQUEST', /extra/],
      ['POST', '/api/rollouts', { model: 'ghost@1', to: 'all' }, 404, 'PACKAGE_NOT_FOUND', /fleet package add/],
      ['POST', '/api/devices/dev-a/exec', { op: 'format-disk' }, 400, 'BAD_REQUEST', /unknown op/],
      ['POST', '/api/devices/dev-a/exec', { op: 'set-telemetry-interval', args: { seconds: 'x' } }, 400, 'BAD_REQUEST', /seconds/],
      ['POST', '/api/devices/dev-a/infer', { maxTokens: 3 }, 400, 'BAD_REQUEST', /exactly one of prompt or messages/],
      ['GET', '/api/telemetry?limit=-1', undefined, 400, 'BAD_REQUEST', /limit must be/],
      ['GET', '/api/rollouts/r-missing', undefined, 404, 'ROLLOUT_NOT_FOUND', /rollout status/],
      ['POST', '/api/packages/uploads', '{"schema":1}', 422, 'PACKAGE_INVALID', /name/],
    ];
    for (const [m, p, body, status, code, msg] of cases) {
      const r = await api(ctl, m, p, body);
      t.equal(r.status, status, `${m} ${p} -> ${status}`);
      t.equal(r.json?.error?.code, code, `${m} ${p} -> ${code}`);
      t.match(r.json?.error?.message, msg);
    }
  });

  t.test('package upload, deploy validation and device commands', async (t) => {
    const model = makeModelDir(path.join(dir, 'model'), [5000, 300_000]);
    const pkg = path.join(dir, 'pkg');
    await buildPackage({ modelDir: model, name: 'm', version: '1.0', keyFile: path.join(dir, 'keys', 'fleet.key'), outDir: pkg });
    const client = new ControllerClient({ api: `http://127.0.0.1:${ctl.api.address.port}`, token: TOKEN });
    let last = 0;
    let expected = -1;
    const res = await client.uploadPackage(pkg, (sent, total) => { last = sent; expected = total; });
    const manifestTotal = JSON.parse(fs.readFileSync(path.join(pkg, 'manifest.json'), 'utf8')).files.reduce((s: number, f: { size: number }) => s + f.size, 0);
    t.equal(expected, manifestTotal);
    t.ok(manifestTotal > 305_000);
    t.equal(last, manifestTotal, 'progress reached every byte');
    t.equal((res.package as { version: string }).version, '1.0');
    t.equal(fs.readFileSync(path.join(ctl.config.artifactsDir, 'm', '1.0', 'part-1.bin')).length, 300_000);
    await t.rejects(client.uploadPackage(pkg), { code: 'PACKAGE_EXISTS' }, 'second upload of the same version is refused');

    // a tampered file is refused during upload
    const bad = path.join(dir, 'pkg-bad');
    await buildPackage({ modelDir: model, name: 'm', version: '1.1', keyFile: path.join(dir, 'keys', 'fleet.key'), outDir: bad });
    fs.rmSync(path.join(bad, 'part-0.bin'));
    fs.writeFileSync(path.join(bad, 'part-0.bin'), Buffer.alloc(5000, 7));
    await t.rejects(client.uploadPackage(bad), { code: 'PACKAGE_INVALID' });
    // an unsigned / wrongly signed manifest is refused
    const m = JSON.parse(fs.readFileSync(path.join(bad, 'manifest.json'), 'utf8'));
    m.version = '1.2';
    fs.writeFileSync(path.join(bad, 'manifest.json'), JSON.stringify(m));
    await t.rejects(client.uploadPackage(bad), { code: 'SIGNATURE_INVALID' });

    const sel = await api(ctl, 'POST', '/api/rollouts', { model: 'm@1.0', to: 'group:nobody' });
    t.equal(sel.json.error.code, 'NO_DEVICES');
    const waves = await api(ctl, 'POST', '/api/rollouts', { model: 'm@1.0', to: 'all', waves: '0,abc' });
    t.equal(waves.json.error.code, 'INVALID_WAVES');
    const thr = await api(ctl, 'POST', '/api/rollouts', { model: 'm@1.0', to: 'all', maxFailures: 'lots' });
    t.equal(thr.json.error.code, 'INVALID_THRESHOLD');
    const ids = await api(ctl, 'POST', '/api/rollouts', { model: 'm@1.0', to: 'dev-a,ghost' });
    t.equal(ids.json.error.code, 'DEVICE_NOT_FOUND');

    const ping = await api(ctl, 'POST', '/api/devices/dev-a/exec', { op: 'ping' });
    t.equal(ping.status, 200);
    t.equal(ping.json.reply.ok, true);
    t.equal(ping.json.reply.result.pong, true);
    const iv = await client.json<{ reply: { ok: boolean } }>('POST', '/api/devices/dev-a/exec', { op: 'set-telemetry-interval', args: { seconds: 2 } });
    t.equal(iv.reply.ok, true);
    await waitFor('interval in state', () => ctl.storage.getDevice('dev-a')?.state?.telemetryIntervalSec === 2);

    const lines: Record<string, unknown>[] = [];
    for await (const l of client.stream('/api/devices/dev-a/infer', { prompt: 'hello robot', maxTokens: 6 })) lines.push(l);
    const chunks = lines.filter((l) => l.chunk);
    t.equal(chunks.length, 6, 'streamed one chunk per token');
    const final = lines.at(-1) as { done: boolean; ok: boolean; result: { text: string } };
    t.ok(final.done && final.ok);
    t.equal(chunks.map((c) => (c.chunk as { text: string }).text).join(''), final.result.text, 'chunks add up to the final text');

    // an offline device: the request times out with a readable error
    sim.dropConnection();
    await waitFor('dev-a offline', () => ctl.storage.getDevice('dev-a')?.online === false);
    const to = await api(ctl, 'POST', '/api/devices/dev-a/exec', { op: 'ping', timeoutMs: 300 });
    t.equal(to.status, 504);
    t.equal(to.json.error.code, 'TIMEOUT');
    await sim.reconnect();

    const audit = ctl.storage.listAudit({ limit: 100 }).map((a) => `${a.action} ${a.target}`);
    t.ok(audit.includes('package.add m@1.0'), 'package upload audited');
    t.ok(audit.includes('exec.ping dev-a'), 'commands audited');
    t.ok(audit.includes('exec.generate dev-a'), 'generate audited');
    await waitFor('telemetry stored', () => (ctl.flush(), ctl.storage.countTelemetry('dev-a') >= 1));
    const tel = await api(ctl, 'GET', '/api/telemetry?device=dev-a&limit=5');
    t.ok(tel.json.telemetry.length >= 1, 'telemetry history served');
    t.equal(tel.json.telemetry[0].deviceId, 'dev-a');
  });

  t.test('unreachable controller gives API_UNREACHABLE', async (t) => {
    const c = new ControllerClient({ api: 'http://127.0.0.1:1', token: TOKEN });
    await t.rejects(c.json('GET', '/api/devices'), { code: 'API_UNREACHABLE' });
  });
});
