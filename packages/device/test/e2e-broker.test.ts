// Broker outage: mosquitto (restarted, persistent sessions) and aedes (listener
// closed and reopened). Events produced while the broker is down are kept in
// the durable outbox and delivered after the reconnect: none lost (every id the
// daemon logged arrives); the only repeats are events acknowledged in the 2 s before the
// outage (outbox.holdAfterAckMs: the broker may not have saved them). Killing the daemon with SIGKILL
// makes the broker publish the retained Last Will (online:false).
import t, { type Test } from 'tap';
import {
  engineAvailable, hasMosquitto, startMosquitto, startAedes, makeKeys, tmpDir, buildPackage, startPackageServer,
  baseConfig, writeDeviceConfig, startDaemon, FleetClient, waitFor, cleanup, type Broker,
} from './helpers.js';

function emittedEventIds(logs: string): Array<{ id: string; type: string; time: number }> {
  const out: Array<{ id: string; type: string; time: number }> = [];
  for (const line of logs.split('\n')) {
    if (!line.includes('"eventId"')) continue;
    try { const j = JSON.parse(line); out.push({ id: j.eventId, type: j.event, time: j.time }); } catch { /* partial line */ }
  }
  return out;
}

async function outageScenario(t: Test, broker: Broker, protocolVersion: 4 | 5, published?: Map<string, number>): Promise<void> {
  const keys = makeKeys();
  const root = tmpDir('shoal-pkgs-');
  const srv = await startPackageServer(root);
  const pkg = await buildPackage(root, 'stories', '1.0.0', keys, { extraBytes: 1_000_000 });
  srv.throttle = 500_000;
  const deviceId = `jetson-outage-${broker.kind}`;
  const cfgFile = writeDeviceConfig(tmpDir('shoal-cfg-'), baseConfig({ deviceId, brokerUrl: broker.url, storeDir: tmpDir('shoal-store-'), publicPem: keys.publicPem }));
  // persistent session for the observer (subscribed before the daemon starts) so it misses nothing across the broker restart
  const fleet = await new FleetClient(broker.url, deviceId, { clientId: `observer-${broker.kind}`, protocolVersion, clean: false }).connect();
  const daemon = await startDaemon(cfgFile);
  t.teardown(() => cleanup(() => daemon.kill('SIGKILL'), () => fleet.close(), () => srv.close(), () => broker.close()));
  await fleet.waitState((s) => s.online, 10_000, 'online');

  await fleet.setDesired({ v: 1, ts: Date.now(), model: { name: pkg.name, version: pkg.version, manifestUrl: srv.url(pkg), manifestSha256: pkg.manifestSha256 } });
  await fleet.waitEvent((e) => e.type === 'ota.progress', 10_000, 'first progress event');
  await broker.stop();
  const downAt = Date.now();
  await new Promise((r) => setTimeout(r, 1500));
  await broker.start();
  const upAt = Date.now();
  await fleet.waitEvent((e) => e.type === 'ota.activated', 30_000, 'ota.activated after the outage');
  // let the tail of the outbox drain
  await new Promise((r) => setTimeout(r, 500));
  // the observer resumed its session: the broker kept its subscription and queue across the
  // outage (without this, events sent before it re-subscribed would be lost to it, not to the device)
  t.same(fleet.sessionPresent.slice(-1), [true], 'observer session present after the broker came back');
  const emitted = emittedEventIds(daemon.logs());
  const during = emitted.filter((e) => e.time > downAt && e.time < upAt);
  t.ok(during.length >= 3, `${during.length} events were produced while the broker was down`);
  // delivered end to end: every id the daemon produced reached the observer
  const receivedSet = new Set([...fleet.events, ...fleet.redeliveredEvents].map((e) => e.id));
  const missing = emitted.filter((e) => !receivedSet.has(e.id));
  t.same(missing, [], `every event the daemon produced was delivered (${emitted.length})`);
  t.ok(during.every((e) => receivedSet.has(e.id)), 'including those produced during the outage');
  if (published) {
    // aedes: count the device's own PUBLISH packets at the broker (aedes re-sends queued QoS 1
    // messages to a resumed subscriber without DUP, so the observer alone cannot tell)
    // published again only: events acknowledged within outbox.holdAfterAckMs (2 s) before the
    // connection was lost (the broker may not have written them to disk), each once more
    const again = [...published.entries()].filter(([, n]) => n > 1);
    t.ok(again.every(([, n]) => n === 2), 'no event published more than twice');
    const acked = new Map(emitted.map((e) => [e.id, e.time]));
    t.ok(again.every(([id]) => (acked.get(id) ?? Infinity) <= downAt), `only events from before the outage were published again (${again.length})`);
    t.equal(published.size, emitted.length, 'the broker received every event');
  } else {
    // mosquitto marks its own redeliveries DUP=1 (§3.3.1.1); first deliveries must be unique
    // and the device re-publishes only events acknowledged in the 2 s before the connection was lost
    const firsts = fleet.events.map((e) => e.id);
    const seen = new Set<string>();
    const repeated = firsts.filter((id) => (seen.has(id) ? true : (seen.add(id), false)));
    const acked = new Map(emitted.map((e) => [e.id, e.time]));
    t.ok(repeated.every((id) => (acked.get(id) ?? Infinity) <= downAt),
      `repeats only of events from just before the outage (${firsts.length} first deliveries, ${repeated.length} repeats, ${fleet.redeliveredEvents.length} broker redeliveries)`);
  }
  const st = await fleet.waitState((s) => s.online && s.phase === 'active', 5_000, 'state after reconnect');
  t.equal(st.model?.version, '1.0.0');

  // Last Will: SIGKILL → broker publishes the retained offline state
  fleet.states.length = 0;
  await daemon.kill('SIGKILL');
  const will = await fleet.waitState((s) => !s.online, 15_000, 'Last Will offline state');
  t.equal(will.deviceId, deviceId);
  t.equal(will.v, 1);
}

t.test('mosquitto restart', { skip: engineAvailable() || hasMosquitto('the device\'s mosquitto restart test (the aedes outage test still runs)'), timeout: 60_000 }, async (t) => {
  await outageScenario(t, await startMosquitto(), 5);
});

t.test('aedes listener closed and reopened', { skip: engineAvailable(), timeout: 60_000 }, async (t) => {
  const broker = await startAedes();
  const published = new Map<string, number>();
  broker.aedes.on('publish', (packet, client) => {
    if (client?.id === 'jetson-outage-aedes' && packet.topic.endsWith('/events')) {
      const id = JSON.parse(packet.payload.toString()).id as string;
      published.set(id, (published.get(id) ?? 0) + 1);
    }
  });
  await outageScenario(t, broker, 4, published);
});

t.test('events produced offline survive daemon restarts and are delivered when the broker returns', { skip: engineAvailable(), timeout: 60_000 }, async (t) => {
  const broker = await startAedes();
  const keys = makeKeys();
  const deviceId = 'jetson-offline';
  const cfgFile = writeDeviceConfig(tmpDir('shoal-cfg-'), baseConfig({ deviceId, brokerUrl: broker.url, storeDir: tmpDir('shoal-store-'), publicPem: keys.publicPem }));
  const fleet = await new FleetClient(broker.url, deviceId, { clientId: 'observer-offline', protocolVersion: 4, clean: false }).connect();
  let daemon = await startDaemon(cfgFile);
  t.teardown(() => cleanup(() => daemon.kill('SIGKILL'), () => fleet.close(), () => broker.close()));
  await fleet.waitState((s) => s.online, 10_000, 'online');
  await broker.stop();
  // two daemon lifetimes while the broker is down, each emitting device.started, each killed hard
  const offline: string[] = [];
  for (let i = 0; i < 2; i++) {
    await daemon.kill('SIGKILL');
    daemon = await startDaemon(cfgFile);
    await waitFor(() => emittedEventIds(daemon.logs()).length > 0, 5_000, 'device.started logged');
    offline.push(...emittedEventIds(daemon.logs()).map((e) => e.id));
  }
  await daemon.kill('SIGKILL');
  daemon = await startDaemon(cfgFile);
  const thirdStart = emittedEventIds(daemon.logs()).map((e) => e.id);
  await broker.start();
  await waitFor(() => [...offline, ...thirdStart].every((id) => fleet.events.some((e) => e.id === id)), 15_000, 'offline events delivered');
  t.equal(offline.length, 2, 'two events produced by daemons that never reached the broker');
  const started = fleet.events.filter((e) => e.type === 'device.started');
  t.equal(started.length, 4, 'first start + two offline starts + the last start, each once');
  t.equal(new Set(started.map((e) => e.id)).size, 4);
});
