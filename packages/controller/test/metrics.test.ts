// /metrics: prom-client exposition with the controller's metrics; every metric name follows
// the Prometheus conventions (testkit's lintExposition, and promtool when installed).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import { api, startBroker, startTestController, tmpDir, TOKEN } from '@shoal/testkit/fleet';
import { lintExposition, parseExposition } from '@shoal/testkit';

function hasPromtool(): boolean {
  try { execFileSync('promtool', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

t.test('controller /metrics', async (t) => {
  const dir = tmpDir();
  const broker = await startBroker('aedes');
  const ctl = await startTestController(broker.url, dir);
  t.teardown(async () => { await ctl.close(); await broker.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const base = `http://127.0.0.1:${ctl.api.address.port}`;
  t.equal((await fetch(`${base}/metrics`)).status, 401, 'needs the API token');
  await api(ctl, 'GET', '/api/devices');
  await api(ctl, 'GET', '/api/devices/nope');
  const res = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  for (const m of ['shoal_controller_devices{presence="online"}', 'shoal_controller_rollouts{state="running"}', 'shoal_controller_events_stored_total',
    'shoal_controller_mqtt_reconnects_total', 'shoal_controller_mqtt_connected 1', 'shoal_controller_api_request_duration_seconds_bucket']) {
    t.ok(text.includes(m), `exposes ${m}`);
  }
  t.match(text, /shoal_controller_api_request_duration_seconds_count\{method="GET",route="\/api\/devices\/:id",code="404"\} 1/, 'latency by route template and status');
  // the naming rules promtool check metrics enforces (testkit/src/prom-lint.ts)
  t.same(lintExposition(text), [], 'no Prometheus naming rule broken');
  t.ok(parseExposition(text).families.length > 10);
  if (hasPromtool()) {
    const out = execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
    t.equal(out.trim(), '', `promtool check metrics: ${out}`);
  } else {
    t.comment('promtool not installed (apt-get install prometheus): checked with the rules above only');
  }
});
