// deploy/mosquitto: real mosquitto with the shipped ACL, a password file and a TLS
// listener made by make-credentials.sh. A device can use only its own topics;
// only the controller may write cmd and desired.
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import { startMosquitto } from '@shoal/devkit';
import { tmpDir } from '@shoal/testkit/fleet';
import { repoRoot as repo } from '@shoal/testkit';

const deployDir = path.join(repo, 'deploy', 'mosquitto');

t.test('mosquitto ACL and credentials from deploy/mosquitto', async (t) => {
  const dir = tmpDir();
  execFileSync(path.join(deployDir, 'make-credentials.sh'), [dir, 'dev1', 'dev2'], { stdio: 'ignore' });
  const creds = Object.fromEntries(fs.readFileSync(path.join(dir, 'credentials.txt'), 'utf8').trim().split('\n').map((l) => l.split(' ')));
  const broker = await startMosquitto({
    allowAnonymous: false,
    extraConfig: [`password_file ${path.join(dir, 'passwords')}`, `acl_file ${path.join(deployDir, 'acl.conf')}`],
    tls: { cafile: path.join(dir, 'ca.crt'), certfile: path.join(dir, 'server.crt'), keyfile: path.join(dir, 'server.key') },
  });
  const clients: MqttClient[] = [];
  const connect = async (user: string, over: 'tls' | 'plain' = 'tls', password = creds[user]) => {
    const c = await mqtt.connectAsync(over === 'tls' ? broker.tlsUrl! : broker.url, {
      clientId: user, username: user, password, protocolVersion: 5, reconnectPeriod: 0,
      ca: fs.readFileSync(path.join(dir, 'ca.crt')),
    });
    c.on('error', () => undefined); // a refused PUBACK is also emitted as an error event
    clients.push(c);
    return c;
  };
  /** MQTT 5 reason code of a QoS 1 publish: 0 = accepted, 135 = not authorized. */
  const pub = async (c: MqttClient, topic: string, payload: string, retain = false): Promise<number> => {
    try {
      const p = await c.publishAsync(topic, payload, { qos: 1, retain });
      return (p as { reasonCode?: number } | undefined)?.reasonCode ?? 0;
    } catch (e) {
      return Number((e as { code?: number }).code ?? -1);
    }
  };
  t.teardown(async () => {
    await Promise.all(clients.map((c) => c.endAsync(true)));
    await broker.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const ctl = await connect('shoal-controller');
  const dev1 = await connect('dev1');
  const dev2 = await connect('dev2', 'plain');
  const seen: Record<string, string[]> = { ctl: [], dev1: [], dev2: [] };
  ctl.on('message', (tp) => seen.ctl!.push(tp));
  dev1.on('message', (tp) => seen.dev1!.push(tp));
  dev2.on('message', (tp) => seen.dev2!.push(tp));
  await ctl.subscribeAsync('shoal/v1/#', { qos: 1 });
  await dev2.subscribeAsync(['shoal/v1/devices/dev2/cmd', 'shoal/v1/devices/dev2/desired'], { qos: 1 });

  await t.test('wrong or missing password is refused', async (t) => {
    await t.rejects(mqtt.connectAsync(broker.tlsUrl!, { clientId: 'x', username: 'dev1', password: 'wrong', protocolVersion: 5, reconnectPeriod: 0, ca: fs.readFileSync(path.join(dir, 'ca.crt')) }));
    await t.rejects(mqtt.connectAsync(broker.url, { clientId: 'anon', protocolVersion: 5, reconnectPeriod: 0 }));
  });

  await t.test('a device cannot publish to another device\'s topics', async (t) => {
    for (const ch of ['state', 'telemetry', 'events']) {
      t.equal(await pub(dev1, `shoal/v1/devices/dev2/${ch}`, '{"spoof":1}'), 135, `dev1 -> dev2/${ch} not authorized`);
    }
    t.equal(await pub(dev1, 'shoal/v1/devices/dev1/telemetry', '{"ok":1}'), 0, 'dev1 may publish its own telemetry');
    t.equal(await pub(dev1, 'shoal/v1/devices/dev1/state', '{"ok":1}', true), 0, 'dev1 may publish its own state');
  });

  await t.test('a device cannot write cmd or desired, even its own', async (t) => {
    for (const tp of ['shoal/v1/devices/dev2/cmd', 'shoal/v1/devices/dev2/desired', 'shoal/v1/devices/dev1/cmd', 'shoal/v1/devices/dev1/desired']) {
      t.equal(await pub(dev1, tp, '{"v":1}'), 135, `dev1 -> ${tp} not authorized`);
    }
  });

  await t.test('a device cannot read another device\'s commands', async (t) => {
    // mosquitto may grant the SUBACK; the ACL is enforced on every delivery
    await dev1.subscribeAsync(['shoal/v1/devices/dev2/cmd', 'shoal/v1/devices/dev2/desired', 'shoal/v1/devices/+/cmd', 'shoal/v1/#'], { qos: 1 });
    await dev1.subscribeAsync('shoal/v1/devices/dev1/cmd', { qos: 1 });
    await ctl.publishAsync('shoal/v1/devices/dev2/cmd', '{"v":1,"for":"dev2"}', { qos: 1 });
    await ctl.publishAsync('shoal/v1/devices/dev2/desired', '{"v":1}', { qos: 1, retain: true });
    await ctl.publishAsync('shoal/v1/devices/dev1/cmd', '{"v":1,"for":"dev1"}', { qos: 1 });
    const end = Date.now() + 3000;
    while (Date.now() < end && !(seen.dev1!.includes('shoal/v1/devices/dev1/cmd') && seen.dev2!.includes('shoal/v1/devices/dev2/desired'))) await new Promise((r) => setTimeout(r, 50));
    t.ok(seen.dev2!.includes('shoal/v1/devices/dev2/cmd'), 'dev2 gets its command');
    t.ok(seen.dev2!.includes('shoal/v1/devices/dev2/desired'), 'dev2 gets its desired state');
    t.ok(seen.dev1!.includes('shoal/v1/devices/dev1/cmd'), 'dev1 gets its own command');
    t.notOk(seen.dev1!.some((tp) => tp.includes('/dev2/')), `dev1 saw none of dev2's traffic (saw ${JSON.stringify(seen.dev1)})`);
  });

  await t.test('the controller sees device traffic, never the spoofed messages', async (t) => {
    const end = Date.now() + 2000;
    while (Date.now() < end && !seen.ctl!.includes('shoal/v1/devices/dev1/telemetry')) await new Promise((r) => setTimeout(r, 50));
    t.ok(seen.ctl!.includes('shoal/v1/devices/dev1/telemetry'));
    t.notOk(seen.ctl!.includes('shoal/v1/devices/dev2/state'), 'spoofed dev2/state never reached the controller');
    t.notOk(seen.ctl!.includes('shoal/v1/devices/dev2/telemetry'));
    // replies: a device may answer a requester
    t.equal(await pub(dev2, 'shoal/v1/clients/shoal-controller/replies', '{"v":1}'), 0, 'replies are allowed');
    t.equal(await pub(dev2, 'shoal/v1/devices/dev2/state', '{"v":1}'), 0, 'dev2 may publish its own state');
  });
});
