// Rollout logic against simulated devices, on aedes (MQTT 3.1.1) and mosquitto (MQTT 5).
import t from 'tap';
import { skipUnlessInstalled } from '@shoal/testkit';
import fs from 'node:fs';
import { SimDevice } from '@shoal/devkit';
import type { Controller } from '../src/controller.js';
import { addPackage, startBroker, startTestController, tmpDir, waitFor, type BrokerKind } from '@shoal/testkit/fleet';

for (const kind of ['aedes', 'mosquitto'] as BrokerKind[]) {
  t.test(`rollouts over ${kind}`, { skip: kind === 'mosquitto' ? skipUnlessInstalled('mosquitto', 'rollouts over mosquitto (the aedes run still runs)') : false }, async (t) => {
    const broker = await startBroker(kind);
    const pv = kind === 'mosquitto' ? 5 : 4;
    const dir = tmpDir();
    let ctl: Controller = await startTestController(broker.url, dir, {}, pv);
    const sims: SimDevice[] = [];
    t.teardown(async () => {
      await Promise.all(sims.map((s) => s.stop()));
      await ctl.close();
      await broker.close();
      fs.rmSync(dir, { recursive: true, force: true });
    });
    const bad = new Set(['m@3.0']);
    for (let i = 1; i <= 6; i++) {
      const s = new SimDevice({ id: `d${i}`, brokerUrl: broker.url, group: i <= 3 ? 'a' : 'b', labels: { site: i % 2 ? 'north' : 'south' }, stepMs: 20, intervalSec: 1, protocolVersion: pv, failVersions: i >= 3 ? bad : undefined });
      sims.push(s);
      await s.connect();
    }
    await waitFor('6 devices online', () => ctl.storage.listDevices().filter((d) => d.online).length === 6);
    await addPackage(ctl, dir, 'm', '1.0');
    await addPackage(ctl, dir, 'm', '2.0');
    await addPackage(ctl, dir, 'm', '3.0');

    await t.test('waves succeed and every device runs the new version', async (t) => {
      const r = ctl.rollouts.create({ name: 'm', version: '1.0', to: 'all', waves: '1,50%,100%', maxFailures: '0', timeoutSec: 15 });
      t.same([...new Set(r.devices.map((d) => d.wave))], [0, 1, 2]);
      t.equal(r.devices.filter((d) => d.wave === 0).length, 1);
      t.equal(r.devices.filter((d) => d.wave === 1).length, 2);
      const done = await waitFor('rollout done', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; });
      t.equal(done.status, 'succeeded', done.message ?? '');
      for (const s of sims) t.same(s.model, { name: 'm', version: '1.0' }, `${s.id} runs 1.0`);
      await waitFor('controller sees 1.0 everywhere', () => ctl.storage.listDevices().every((d) => d.model?.version === '1.0' && d.phase === 'active'));
      const audit = ctl.storage.listAudit({ limit: 100 }).map((a) => a.action);
      t.ok(audit.includes('rollout.create') && audit.includes('rollout.wave') && audit.includes('rollout.succeeded'), 'audit log records the rollout');
      const events = ctl.storage.listEvents({ type: 'ota.activated', limit: 100 });
      t.ok(events.length >= 6, 'ota.activated events stored');
    });

    await t.test('a wave over the failure threshold stops and rolls back', async (t) => {
      await ctl.rollouts.create({ name: 'm', version: '2.0', to: 'all', waves: '100%', timeoutSec: 15 });
      await waitFor('2.0 everywhere', () => sims.every((s) => s.model?.version === '2.0' && s.phase === 'active'), 20_000);
      await waitFor('rollout finished', () => ctl.rollouts.list(1)[0]!.status === 'succeeded');
      // d1,d2 are healthy with 3.0; d3..d6 fail its health check
      const r = ctl.rollouts.create({ name: 'm', version: '3.0', to: 'd1,d2,d3,d4,d5,d6', waves: '2,100%', maxFailures: '25%', timeoutSec: 15 });
      const done = await waitFor('rollout stopped', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; });
      t.equal(done.status, 'failed');
      t.match(done.message, /exceed --max-failures 25%/);
      t.equal(done.currentWave, 1, 'stopped in wave 2');
      const w1 = done.devices.filter((d) => d.wave === 0);
      const w2 = done.devices.filter((d) => d.wave === 1);
      t.ok(w1.every((d) => d.status === 'active'), 'wave 1 keeps the new version');
      t.ok(w2.every((d) => d.status === 'rolled-back'), 'wave 2 rolled back');
      await waitFor('wave 2 back on 2.0 (desired)', () => sims.slice(2).every((s) => s.desired?.version === '2.0' && s.model?.version === '2.0' && s.phase === 'active'));
      t.same(sims[0]!.model, { name: 'm', version: '3.0' });
      t.same(sims[1]!.model, { name: 'm', version: '3.0' });
      t.equal(ctl.storage.getDevice('d4')!.desired!.model!.version, '2.0', 'desired <- previous recorded');
    });

    await t.test('a controller restarted mid-rollout resumes', async (t) => {
      // d6 is offline while wave 1 runs; it catches up when it is back
      sims[5]!.dropConnection();
      await waitFor('d6 offline', () => ctl.storage.getDevice('d6')!.online === false);
      const r = ctl.rollouts.create({ name: 'm', version: '1.0', to: 'group:b', waves: '1,100%', timeoutSec: 20 });
      t.same(r.devices.map((d) => d.id), ['d4', 'd5', 'd6'], 'online devices go first');
      await waitFor('wave 1 done', () => ctl.rollouts.get(r.id).currentWave === 1);
      const port = ctl.api.address.port; // devices hold manifest URLs with this port
      await ctl.close();
      ctl = await startTestController(broker.url, dir, { http: { host: '127.0.0.1', port } }, pv);
      t.equal(ctl.rollouts.get(r.id).status, 'running', 'rollout still running after restart');
      await new Promise((res) => setTimeout(res, 300));
      await sims[5]!.reconnect();
      const done = await waitFor('rollout done after restart', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; }, 25_000);
      t.equal(done.status, 'succeeded', done.message ?? '');
      t.same(sims[5]!.model, { name: 'm', version: '1.0' }, 'the offline device caught up');
    });

    await t.test('a silent device past the timeout stops the rollout', async (t) => {
      sims[0]!.dropConnection();
      await waitFor('d1 offline', () => ctl.storage.getDevice('d1')!.online === false);
      const r = ctl.rollouts.create({ name: 'm', version: '2.0', to: 'd2,d1', waves: '100%', timeoutSec: 1 });
      const done = await waitFor('stopped', () => { const x = ctl.rollouts.get(r.id); return x.status !== 'running' && x; });
      t.equal(done.status, 'failed');
      t.match(done.message, /d1 stayed silent/);
      t.equal(done.devices.find((d) => d.id === 'd1')!.error, 'device silent (offline) for the whole 1s timeout');
      t.equal(ctl.storage.getDevice('d2')!.desired!.model!.version, '3.0', 'd2 desired back to its previous model');
    });

    await t.test('pause holds the next wave; resume finishes; abort stops', async (t) => {
      const r = ctl.rollouts.create({ name: 'm', version: '2.0', to: 'd4,d5', waves: '1,100%', timeoutSec: 15 });
      await ctl.rollouts.control(r.id, 'pause');
      await waitFor('wave 1 done', () => ctl.rollouts.get(r.id).devices[0]!.status === 'active');
      await new Promise((res) => setTimeout(res, 500));
      let x = ctl.rollouts.get(r.id);
      t.equal(x.status, 'paused');
      t.equal(x.devices[1]!.status, 'pending', 'wave 2 not started while paused');
      t.equal(sims[4]!.model?.version, '1.0');
      await t.rejects(ctl.rollouts.control(r.id, 'pause'), { code: 'ROLLOUT_STATE' });
      await ctl.rollouts.control(r.id, 'resume');
      x = await waitFor('done', () => { const y = ctl.rollouts.get(r.id); return y.status !== 'running' && y; });
      t.equal(x.status, 'succeeded');
      t.equal(sims[4]!.model?.version, '2.0');
      const r2 = ctl.rollouts.create({ name: 'm', version: '1.0', to: 'd4,d5', waves: '1,100%', timeoutSec: 15 });
      await ctl.rollouts.control(r2.id, 'pause');
      await waitFor('wave 1 done', () => ctl.rollouts.get(r2.id).devices[0]!.status === 'active');
      x = await ctl.rollouts.control(r2.id, 'abort');
      t.equal(x.status, 'aborted');
      t.equal(x.devices[1]!.status, 'pending', 'wave 2 never started');
      t.equal(sims[4]!.model?.version, '2.0', 'd5 untouched');
      const audit = ctl.storage.listAudit({ limit: 200 }).map((a) => a.action);
      t.ok(['rollout.pause', 'rollout.resume', 'rollout.abort'].every((a) => audit.includes(a)), 'control actions audited');
    });
  });
}
