// Prometheus metrics of the daemon (prom-client, own registry), served at GET /metrics.
// Names follow the Prometheus conventions (packages/device/test/metrics.test.ts checks the
// exposition): snake_case, base units (seconds, bytes), `_total` on counters only.
import { Registry, Counter, Gauge, Histogram, collectDefaultMetrics } from 'prom-client';
import { removeMisnamedTotals } from '@shoal/common';

export class DeviceMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({ name: 'shoal_requests_total', help: 'Generation requests by source and outcome', labelNames: ['source', 'outcome'] as const, registers: [this.registry] });
  readonly ttft = new Histogram({ name: 'shoal_time_to_first_token_seconds', help: 'Time to first token', buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10], registers: [this.registry] });
  readonly decodeRate = new Gauge({ name: 'shoal_decode_tokens_per_second', help: 'Decode speed of the last request', registers: [this.registry] });
  readonly tokens = new Counter({ name: 'shoal_generated_tokens_total', help: 'Generated tokens', registers: [this.registry] });
  readonly queueDepth = new Gauge({ name: 'shoal_queue_depth', help: 'Requests waiting in the queue', registers: [this.registry] });
  readonly activeModel = new Gauge({ name: 'shoal_active_model_info', help: 'Active model (value 1)', labelNames: ['name', 'version'] as const, registers: [this.registry] });
  readonly mqttConnected = new Gauge({ name: 'shoal_mqtt_connected', help: '1 when connected to the broker', registers: [this.registry] });
  readonly outbox = new Gauge({ name: 'shoal_outbox_events', help: 'Events waiting for broker acknowledgement', registers: [this.registry] });
  readonly otaBytes = new Counter({ name: 'shoal_ota_download_bytes_total', help: 'Bytes downloaded for model packages', registers: [this.registry] });
  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'shoal_device_' });
    removeMisnamedTotals(this.registry);
  }
  /** Called before each scrape (set by the owner) to refresh gauges. */
  refresh: () => void = () => {};
}
