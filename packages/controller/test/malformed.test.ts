// Malformed MQTT traffic (bad JSON, wrong schema, spoofed ids, huge payloads,
// unknown topics) is counted and dropped; the controller keeps working.
import t from 'tap';
import { skipUnlessInstalled } from '@shoal/testkit';
import fs from 'node:fs';
import mqtt from 'mqtt';
import { randomUUID } from 'node:crypto';
import { SimDevice } from '@shoal/devkit';
import { startBroker, startTestController, tmpDir, waitFor, type BrokerKind } from '@shoal/testkit/fleet';

for (const kind of ['aedes', 'mosquitto'] as BrokerKind[]) {
  t.test(`malformed messages over ${kind}`, { skip: kind === 'mosquitto' ? skipUnlessInstalled('mosquitto', 'malformed messages over mosquitto') : false }, async (t) => {
    const broker = await startBroker(kind);
    const dir = tmpDir();
    const ctl = await startTestController(broker.url, dir, {}, kind === 'mosquitto' ? 5 : 4);
    const evil = await mqtt.connectAsync(broker.url, { clientId: 'evil' });
    const sim = new SimDevice({ id: 'good', brokerUrl: broker.url });
    t.teardown(async () => { await sim.stop(); await evil.endAsync(); await ctl.close(); await broker.close(); fs.rmSync(dir, { recursive: true, force: true }); });
    const bad: [string, string | Buffer][] = [
      ['shoal/v1/devices/x1/state', '{not json'],
      ['shoal/v1/devices/x1/state', JSON.stringify({ v: 2, deviceId: 'x1' })],
      ['shoal/v1/devices/x1/state', JSON.stringify({ v: 1, deviceId: 'someone-else', online: true, ts: 1, labels: {}, model: null, previous: null, phase: 'idle', desired: null, store: [] })],
      ['shoal/v1/devices/x1/telemetry', Buffer.alloc(300 * 1024, 0x7b)],
      ['shoal/v1/devices/x1/telemetry', 'null'],
      ['shoal/v1/devices/x1/events', JSON.stringify({ v: 1, id: 'not-a-uuid', deviceId: 'x1', ts: 1, type: 'ota.failed', data: {} })],
      ['shoal/v1/devices/x1/events', JSON.stringify([1, 2, 3])],
      ['shoal/v1/devices/x1/events', Buffer.from([0xff, 0xfe, 0x00])],
      ['shoal/v1/clients/whoever/replies', '{"v":1}'],
      ['shoal/v1/devices/x1/unknown', '{}'],
      ['shoal/v1/devices/bad$id/state', '{}'],
    ];
    for (const [topic, payload] of bad) await evil.publishAsync(topic, payload, { qos: 1 });
    // a duplicate event (same id twice) is stored once
    const ev = JSON.stringify({ v: 1, id: randomUUID(), deviceId: 'x1', ts: Date.now(), type: 'device.started', data: {} });
    await evil.publishAsync('shoal/v1/devices/x1/events', ev, { qos: 1 });
    await evil.publishAsync('shoal/v1/devices/x1/events', ev, { qos: 1 });
    await waitFor('malformed counted', () => ctl.stats.malformed >= 8);
    t.equal(ctl.stats.malformed, 8, 'every malformed device message was counted');
    await waitFor('duplicate counted', () => ctl.stats.stored.duplicateEvents === 1);
    t.equal(ctl.storage.listEvents({ deviceId: 'x1', limit: 10 }).length, 1, 'the event is stored once');
    t.equal(ctl.storage.getDevice('x1')?.state ?? null, null, 'no state stored from a bad message');
    // the controller still works
    await sim.connect();
    await waitFor('good device tracked', () => ctl.storage.getDevice('good')?.online);
    await waitFor('telemetry stored', () => (ctl.flush(), ctl.storage.countTelemetry('good') >= 1), 5000);
    const r = await ctl.link.request('good', 'ping', {}, { timeoutMs: 5000 });
    t.equal(r.ok, true, 'requests still work');
  });
}
