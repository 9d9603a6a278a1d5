// The daemon's /metrics exposition, every metric given samples, against the Prometheus
// naming rules (testkit's lintExposition; promtool too when installed).
import t from 'tap';
import { execFileSync } from 'node:child_process';
import { lintExposition, parseExposition } from '@shoal/testkit';
import { DeviceMetrics } from '../src/metrics.js';

function promtool(): boolean {
  try { execFileSync('promtool', ['--version'], { stdio: 'ignore' }); return true; } catch { return false; }
}

t.test('device metrics pass the Prometheus naming rules', async (t) => {
  const m = new DeviceMetrics();
  m.requests.inc({ source: 'http', outcome: 'ok' });
  m.requests.inc({ source: 'mqtt', outcome: 'rejected' });
  m.ttft.observe(0.12);
  m.decodeRate.set(180);
  m.tokens.inc(16);
  m.queueDepth.set(2);
  m.activeModel.set({ name: 'stories', version: '1.0.0' }, 1);
  m.mqttConnected.set(1);
  m.outbox.set(3);
  m.otaBytes.inc(1_044_984);
  const text = await m.registry.metrics();
  t.same(lintExposition(text), [], 'no rule broken');
  const names = parseExposition(text).families.map((f) => f.name);
  for (const n of ['shoal_requests_total', 'shoal_time_to_first_token_seconds', 'shoal_decode_tokens_per_second', 'shoal_generated_tokens_total',
    'shoal_queue_depth', 'shoal_active_model_info', 'shoal_mqtt_connected', 'shoal_outbox_events', 'shoal_ota_download_bytes_total',
    'shoal_device_process_resident_memory_bytes', 'shoal_device_nodejs_active_handles']) {
    t.ok(names.includes(n), `exposes ${n}`);
  }
  t.notOk(names.some((n) => n.startsWith('shoal_device_nodejs_active_') && n.endsWith('_total')), "prom-client's gauges named *_total are left out");
  if (promtool()) {
    t.equal(execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' }).trim(), '', 'promtool check metrics');
  } else {
    t.comment('promtool not installed: checked with lintExposition only');
  }
});
