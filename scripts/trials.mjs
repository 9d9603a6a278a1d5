#!/usr/bin/env node
// `make trials`: the long fault-injection and memory runs behind docs/reliability.md.
// Prints a markdown table and writes .trials/trials.json. Needs mosquitto, the native engine
// (`make`) and the shared stories260K model (../shared beside the checkout, or $SHOAL_SHARED).
//   node scripts/trials.mjs [--cycles 10] [--requests 1000] [--deployments 100]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { runChaos, runMemory } = await import(path.join(repo, 'packages/devkit/dist/src/index.js'));
const { values: a } = parseArgs({ options: { cycles: { type: 'string', default: '10' }, requests: { type: 'string', default: '1000' }, deployments: { type: 'string', default: '100' } } });
const shared = process.env.SHOAL_SHARED ?? path.join(repo, '..', 'shared');
const modelDir = path.join(shared, 'models', 'stories260K');
if (!fs.existsSync(path.join(modelDir, 'model.safetensors'))) {
  console.error(`trials: stories260K not found under ${shared}; set SHOAL_SHARED`);
  process.exit(2);
}
const cycles = Number(a.cycles);
const tmp = (p) => fs.mkdtempSync(path.join(os.tmpdir(), p));
const log = (m) => process.stderr.write(`  ${m}\n`);
const results = [];
const run = async (name, fn) => {
  process.stderr.write(`${name}\n`);
  const dir = tmp('shoal-trial-');
  try {
    const r = await fn(dir);
    results.push({ name, ...r });
    process.stderr.write(`  ${JSON.stringify(r)}\n`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
};
await run(`controller killed -9 x${cycles}, 3 devices deploying`, (dir) => runChaos({ dir, modelDir, cycles, brokerKillEvery: 0, log }));
await run(`controller and broker killed -9 x${cycles} each, 3 devices deploying`, (dir) => runChaos({ dir, modelDir, cycles, brokerKillEvery: 1, log }));
await run(`2 controller replicas ($share), killed -9 in turn x${cycles}`, (dir) => runChaos({ dir, modelDir, cycles, replicas: 2, log }));
await run(`memory: ${a.requests} requests, ${a.deployments} deployments`, (dir) => runMemory({ dir, modelDir, requests: Number(a.requests), deployments: Number(a.deployments), log }));

fs.mkdirSync(path.join(repo, '.trials'), { recursive: true });
fs.writeFileSync(path.join(repo, '.trials', 'trials.json'), JSON.stringify({ date: new Date().toISOString(), host: os.hostname(), cpus: os.cpus().length, results }, null, 2));
const rows = ['| trial | kills (controller / broker) | rollouts ok | events emitted | stored | lost | stored twice | redelivered, ignored | time |', '|---|---|---|---|---|---|---|---|---|'];
for (const r of results.filter((x) => 'emitted' in x)) {
  rows.push(`| ${r.name} | ${r.controllerKills} / ${r.brokerKills} | ${r.rollouts.created ? `${r.rollouts.succeeded} of ${r.rollouts.created}` : '—'} | ${r.emitted} | ${r.stored} | ${r.lost} | ${r.duplicatesStored} | ${r.duplicatesReceived} | ${r.seconds} s |`);
}
const mem = results.filter((x) => 'rssLast' in x);
if (mem.length) {
  rows.push('', '| memory trial | RSS after the first tenth | RSS after the last | growth | trend from the first tenth on | peak | failed requests | time |', '|---|---|---|---|---|---|---|---|');
  for (const r of mem) rows.push(`| ${r.requests} requests, ${r.deployments} deployments | ${(r.rssFirstTenth / 2 ** 20).toFixed(1)} MiB | ${(r.rssLast / 2 ** 20).toFixed(1)} MiB | ${r.growthPct} % | ${r.slopeKiBPerDeployment} KiB per deployment | ${(r.rssPeak / 2 ** 20).toFixed(1)} MiB | ${r.failedRequests} | ${r.seconds} s |`);
}
console.log(rows.join('\n'));
