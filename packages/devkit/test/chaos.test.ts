// Delivery under faults (short version; `make trials` runs the long one, docs/reliability.md):
//  1. three device daemons deploy and emit events and telemetry while the controller is killed
//     -9 and restarted 3x, the broker killed -9 and restarted in between each time: 0 events lost,
//     0 stored twice, the rollouts succeed;
//  2. two controller replicas on one shared subscription group, one of them killed -9 in turn:
//     same guarantees.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { runChaos } from '../src/trials/chaos.js';
import { shippedBrokerSkip } from '../src/shipped-broker.js';
import { repoRoot, storiesPath } from '@shoal/testkit';
import { tmpDir } from '@shoal/testkit/fleet';

const modelDir = storiesPath();
const addon = ['Release', 'Debug'].map((b) => path.join(repoRoot, 'native', 'build', b, 'shoal.node')).find((f) => fs.existsSync(f));
const skip = shippedBrokerSkip() || (!addon ? 'native engine not built (run `make`)' : false) || (!fs.existsSync(path.join(modelDir, 'model.safetensors')) ? 'stories260K not found in the shared folder' : false);

t.test('controller and broker killed -9 while three devices deploy and emit events', { skip, timeout: 170_000 }, async (t) => {
  const dir = tmpDir('shoal-chaos-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = await runChaos({ dir, modelDir, cycles: 3, brokerKillEvery: 1, log: (m) => t.comment(m) });
  t.comment(JSON.stringify(r));
  t.equal(r.controllerKills, 3);
  t.equal(r.brokerKills, 3);
  t.ok(r.emitted > 20, `devices emitted events (${r.emitted})`);
  t.equal(r.lost, 0, '0 events lost');
  t.equal(r.duplicatesStored, 0, '0 events stored twice');
  t.equal(r.rollouts.lastStatus, 'succeeded', 'the last rollout succeeded');
  t.ok(r.telemetryStored > 0, 'telemetry stored');
});

t.test('two controller replicas on a shared subscription, killed -9 in turn', { skip, timeout: 120_000 }, async (t) => {
  const dir = tmpDir('shoal-chaos-shared-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = await runChaos({ dir, modelDir, cycles: 2, replicas: 2, brokerKillEvery: 0, log: (m) => t.comment(m) });
  t.comment(JSON.stringify(r));
  t.ok(r.emitted > 20, `devices emitted events (${r.emitted})`);
  t.equal(r.lost, 0, '0 events lost');
  t.equal(r.duplicatesStored, 0, '0 events stored twice');
});
