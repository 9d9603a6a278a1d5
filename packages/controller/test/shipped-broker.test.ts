// The shipped broker configuration (deploy/mosquitto/mosquitto.conf with acl.conf and
// make-credentials.sh) under faults:
//  - client-id takeover: a device that connects with another device's client id gets its own
//    user name as client id instead (use_username_as_clientid), so the other device stays
//    connected; a device cannot log in as another user without its password;
//  - a persistent controller session survives a broker killed -9: QoS 1 events queued for the
//    offline controller are on disk (persistence + autosave_on_changes) and delivered after
//    the restart.
import t from 'tap';
import fs from 'node:fs';
import mqtt, { type IClientOptions, type MqttClient } from 'mqtt';
import { startShippedMosquitto, shippedBrokerSkip } from '@shoal/devkit';

t.test('shipped mosquitto configuration', { skip: shippedBrokerSkip(), timeout: 60_000 }, async (t) => {
  const broker = await startShippedMosquitto(['dev1', 'dev2']);
  const clients: MqttClient[] = [];
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true).catch(() => undefined)));
    await broker.close();
  });
  const ca = fs.readFileSync(broker.caFile);
  const connect = async (user: string, o: Partial<IClientOptions> = {}) => {
    const c = await mqtt.connectAsync(broker.tlsUrl, { clientId: user, username: user, password: broker.creds[user], protocolVersion: 5, reconnectPeriod: 0, ca, ...o });
    c.on('error', () => undefined);
    clients.push(c);
    return c;
  };

  await t.test('a device cannot take over another device\'s client id', async (t) => {
    const dev1 = await connect('dev1');
    let dev1Closed = 0;
    dev1.on('close', () => { dev1Closed++; });
    const got: string[] = [];
    dev1.on('message', (_tp, p) => got.push(p.toString()));
    await dev1.subscribeAsync('shoal/v1/devices/dev1/cmd', { qos: 1 });
    // dev2 tries dev1's client id five times in a row (the takeover loop of the issue)
    for (let i = 0; i < 5; i++) {
      const spoof = await connect('dev2', { clientId: 'dev1' });
      await spoof.subscribeAsync('shoal/v1/devices/dev1/cmd', { qos: 1 }).catch(() => undefined);
      await spoof.endAsync();
    }
    const ctl = await connect('shoal-controller');
    await ctl.publishAsync('shoal/v1/devices/dev1/cmd', 'still-here', { qos: 1 });
    for (let i = 0; i < 100 && got.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    t.equal(dev1Closed, 0, 'dev1 was never disconnected');
    t.ok(dev1.connected, 'dev1 is still connected');
    t.same(got, ['still-here'], 'dev1 still receives its commands');
    await t.rejects(mqtt.connectAsync(broker.tlsUrl, { clientId: 'dev1', username: 'dev1', password: broker.creds.dev2, protocolVersion: 5, reconnectPeriod: 0, ca }), 'dev2\'s password does not log in as dev1');
    await t.rejects(mqtt.connectAsync(broker.url, { clientId: 'dev1', protocolVersion: 4, reconnectPeriod: 0 }), 'no user name: refused');
  });

  await t.test('a persistent controller session survives a broker killed -9', async (t) => {
    // MQTT 3.1.1, clean session 0, like the controller's FleetLink with persistentSession
    const opts = { clientId: 'shoal-controller', username: 'shoal-controller', password: broker.creds['shoal-controller'], protocolVersion: 4 as const, clean: false, reconnectPeriod: 0 };
    const first = await mqtt.connectAsync(broker.url, opts);
    await first.subscribeAsync('shoal/v1/devices/+/events', { qos: 1 });
    await first.endAsync();
    const dev = await connect('dev2');
    for (let i = 1; i <= 30; i++) await dev.publishAsync('shoal/v1/devices/dev2/events', JSON.stringify({ n: i }), { qos: 1 });
    await dev.endAsync();
    await broker.kill9();
    await broker.start();
    const got: number[] = [];
    // the handler must be in place before CONNACK: queued messages follow it at once
    const again = mqtt.connect(broker.url, opts);
    again.on('message', (_tp, p) => got.push((JSON.parse(p.toString()) as { n: number }).n));
    again.on('error', () => undefined);
    clients.push(again);
    for (let i = 0; i < 200 && got.length < 30; i++) await new Promise((r) => setTimeout(r, 25));
    t.same(got, Array.from({ length: 30 }, (_, i) => i + 1), 'all 30 events queued while the controller was away arrive, in order, after the broker crash');
  });
});
