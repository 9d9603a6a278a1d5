// The dashboard's server side without a browser: /api/stream (auth, snapshot,
// coalesced device updates, per-device telemetry, events, rollout changes) and the
// static files (/, /assets/*) with their security headers.
import t from 'tap';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { SimDevice } from '@shoal/devkit';
import { WEB_DIR } from '../../src/web.js';
import { TOKEN, addPackage, startBroker, startTestController, tmpDir, waitFor } from '@shoal/testkit/fleet';

interface Msg { event: string; data: any; at: number }

/** Opens /api/stream and collects its messages until closed. */
async function openStream(base: string, q = '', token: string | null = TOKEN) {
  const ctrl = new AbortController();
  const res = await fetch(`${base}/api/stream${q}`, { headers: token ? { Authorization: `Bearer ${token}` } : {}, signal: ctrl.signal });
  const msgs: Msg[] = [];
  if (res.ok) {
    void (async () => {
      const dec = new TextDecoder();
      let buf = '';
      try {
        for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
          buf += dec.decode(chunk, { stream: true });
          let i: number;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const frame = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const ev = /^event: (.*)$/m.exec(frame)?.[1];
            const data = /^data: (.*)$/m.exec(frame)?.[1];
            if (ev && data) msgs.push({ event: ev, data: JSON.parse(data), at: Date.now() });
          }
        }
      } catch { /* aborted */ }
    })();
  }
  return { res, msgs, close: () => ctrl.abort() };
}

t.test('live stream and static files', async (t) => {
  const broker = await startBroker('aedes');
  const dir = tmpDir('shoal-web-stream-');
  const ctl = await startTestController(broker.url, dir);
  const base = `http://127.0.0.1:${ctl.api.address.port}`;
  const a = new SimDevice({ id: 'dev-a', brokerUrl: broker.url, group: 'g1', labels: { site: 'lab' }, intervalSec: 1, model: { name: 'm', version: '0.9' } });
  const b = new SimDevice({ id: 'dev-b', brokerUrl: broker.url, group: 'g2', labels: {}, intervalSec: 1 });
  await a.connect();
  await b.connect();
  t.teardown(async () => {
    await a.stop();
    await b.stop();
    await ctl.close();
    await broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  await waitFor('both devices', () => ctl.storage.getDevice('dev-a')?.telemetry && ctl.storage.getDevice('dev-b')?.telemetry);

  t.test('auth and bad requests', async (t) => {
    const none = await openStream(base, '', null);
    t.equal(none.res.status, 401);
    t.equal(((await none.res.json()) as any).error.code, 'UNAUTHORIZED');
    const wrong = await openStream(base, '', 'not-the-right-token-0000');
    t.equal(wrong.res.status, 401);
    const ghost = await openStream(base, '?device=ghost');
    t.equal(ghost.res.status, 404);
    t.equal(((await ghost.res.json()) as any).error.code, 'DEVICE_NOT_FOUND');
    const post = await fetch(`${base}/api/stream`, { method: 'POST', headers: { Authorization: `Bearer ${TOKEN}` } });
    t.equal(post.status, 405);
  });

  t.test('snapshot, device updates, telemetry of one device, events, rollouts', async (t) => {
    const s = await openStream(base, '?device=dev-a');
    t.teardown(s.close);
    t.equal(s.res.headers.get('content-type'), 'text/event-stream; charset=utf-8');
    await waitFor('snapshot', () => s.msgs.find((m) => m.event === 'devices' && m.data.full));
    t.equal(s.msgs[0]!.event, 'hello');
    const snap = s.msgs.find((m) => m.event === 'devices')!.data;
    t.same(snap.devices.map((d: any) => d.id).sort(), ['dev-a', 'dev-b']);
    const da = snap.devices.find((d: any) => d.id === 'dev-a');
    t.same(da.model, { name: 'm', version: '0.9' });
    t.equal(da.group, 'g1');
    t.type(da.telemetryTs, 'number');
    t.equal(da.queueDepth, 0);
    t.ok(da.memUsedPct > 0 && da.memUsedPct < 100, 'memory used %');

    // live device updates carry newer telemetry, within a second of the sample
    const upd = await waitFor('a device update', () => s.msgs.find((m) => m.event === 'devices' && !m.data.full && m.data.devices.some((d: any) => d.id === 'dev-b' && d.telemetryTs > snap.devices.find((x: any) => x.id === 'dev-b').telemetryTs)), 5000);
    const latency = upd.at - upd.data.devices.find((d: any) => d.id === 'dev-b').telemetryTs;
    t.ok(latency < 1000, `sample to stream ${latency} ms`);
    // telemetry samples only for ?device=dev-a
    await waitFor('telemetry of dev-a', () => s.msgs.filter((m) => m.event === 'telemetry').length >= 2, 5000);
    const tele = s.msgs.filter((m) => m.event === 'telemetry');
    t.ok(tele.every((m) => m.data.deviceId === 'dev-a'), 'only the requested device');
    t.type(tele[0]!.data.data.cpu.loadPct, 'number');

    // a rollout: its changes and the devices' events arrive on the stream
    await addPackage(ctl, dir, 'm', '1.0');
    const r = ctl.rollouts.create({ name: 'm', version: '1.0', to: 'dev-a', actor: 'test' });
    await waitFor('rollout succeeded on the stream', () => s.msgs.find((m) => m.event === 'rollout' && m.data.rollout.id === r.id && m.data.rollout.status === 'succeeded'), 10_000);
    const types = s.msgs.filter((m) => m.event === 'event').map((m) => m.data.type);
    t.ok(types.includes('ota.started') && types.includes('ota.activated'), `events: ${[...new Set(types)].join(', ')}`);
    await waitFor('dev-a on 1.0 in a device update', () => s.msgs.find((m) => m.event === 'devices' && m.data.devices.some((d: any) => d.id === 'dev-a' && d.model?.version === '1.0')), 5000);
  });

  t.test('static files', async (t) => {
    const built = fs.existsSync(path.join(WEB_DIR, 'index.html'));
    const page = await fetch(`${base}/`);
    if (!built) {
      t.equal(page.status, 404);
      t.match(((await page.json()) as any).error.message, /make web/);
      return;
    }
    t.equal(page.status, 200, 'the page needs no token');
    t.match(page.headers.get('content-type'), /text\/html/);
    t.match(page.headers.get('content-security-policy'), /default-src 'self'/);
    t.equal(page.headers.get('x-content-type-options'), 'nosniff');
    const html = await page.text();
    t.notMatch(html, /https?:\/\//, 'the page references nothing outside the controller');
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    t.ok(script, 'a hashed script');
    const js = await fetch(base + script);
    t.equal(js.status, 200);
    t.match(js.headers.get('cache-control'), /immutable/);
    t.match(js.headers.get('content-type'), /javascript/);
    const head = await fetch(base + script, { method: 'HEAD' });
    t.equal(head.status, 200);
    t.equal(Number(head.headers.get('content-length')), (await js.arrayBuffer()).byteLength);
    // raw requests: fetch would normalize the dot segments before sending them
    const rawStatus = (p: string) => new Promise<number>((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: ctl.api.address.port, path: p }, (res) => { res.resume(); resolve(res.statusCode ?? 0); }).on('error', reject);
    });
    for (const bad of ['/assets/..%2F..%2Fpackage.json', '/assets/nope.js', '/assets/%2e%2e%2f%2e%2e%2fpackage.json', '/assets/a%5C..%5C..%5Cpackage.json']) {
      t.equal(await rawStatus(bad), 404, `${bad} -> 404`);
    }
    t.equal((await fetch(`${base}/`, { method: 'POST' })).status, 405);
    t.equal((await fetch(`${base}/other`)).status, 404, 'other paths stay API 404s');
  });
});
