// Memory over a long life (short version; `make trials` runs 1,000 requests and 100
// deployments): one daemon with the real engine serves 200 requests and installs 20
// deployments in a row; RSS after the last is within 10 % of RSS after the first hundred
// requests (and ten deployments).
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { leastSquaresSlope, runMemory } from '../src/trials/memory.js';
import { repoRoot, storiesPath } from '@shoal/testkit';
import { tmpDir } from '@shoal/testkit/fleet';

const modelDir = storiesPath();
const addon = ['Release', 'Debug'].map((b) => path.join(repoRoot, 'native', 'build', b, 'shoal.node')).find((f) => fs.existsSync(f));
const skip = !addon ? 'native engine not built (run `make`)' : !fs.existsSync(path.join(modelDir, 'model.safetensors')) ? 'stories260K not found in the shared folder' : false;

t.test('least-squares slope', async (t) => {
  t.equal(leastSquaresSlope([]), 0);
  t.equal(leastSquaresSlope([5]), 0);
  t.equal(leastSquaresSlope([1, 2, 3, 4]), 1);
  t.ok(Math.abs(leastSquaresSlope([4, 2, 4, 2, 4, 2].map((y, x) => y + 3 * x)) - (3 - 6 / 35)) < 1e-12, 'a trend under alternating noise (numpy.polyfit: 2.828571…)');
});

t.test('RSS stays flat over requests and deployments', { skip, timeout: 150_000 }, async (t) => {
  const dir = tmpDir('shoal-memory-');
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = await runMemory({ dir, modelDir, requests: 200, deployments: 20, baselineDeployments: 10, log: (m) => t.comment(m) });
  t.comment(JSON.stringify(r));
  t.comment(`RSS trend from the baseline on: ${r.slopeKiBPerDeployment} KiB per deployment`);
  t.equal(r.failedRequests, 0, 'every request answered');
  t.equal(r.baselineRequests, 100, 'baseline after the first hundred requests');
  t.ok(r.growthPct <= 10, `RSS after the last (${(r.rssLast / 2 ** 20).toFixed(1)} MiB) within 10 % of after the first hundred (${(r.rssFirstTenth / 2 ** 20).toFixed(1)} MiB): ${r.growthPct} %`);
});
