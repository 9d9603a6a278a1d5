// Prometheus metrics of the controller (prom-client, own registry), served at GET /metrics.
// Names follow the Prometheus conventions: snake_case, a `shoal_controller_` prefix, base
// units (seconds), `_total` on counters only.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { removeMisnamedTotals } from '@shoal/common';
import type { Storage, RolloutStatus } from './storage/types.js';

export const ROLLOUT_STATES: readonly RolloutStatus[] = ['running', 'paused', 'succeeded', 'failed', 'aborted'];

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly devices = new Gauge({ name: 'shoal_controller_devices', help: 'Known devices by presence (online/offline)', labelNames: ['presence'] as const, registers: [this.registry] });
  readonly rollouts = new Gauge({ name: 'shoal_controller_rollouts', help: 'Rollouts by state', labelNames: ['state'] as const, registers: [this.registry] });
  readonly eventsStored = new Counter({ name: 'shoal_controller_events_stored_total', help: 'Device events stored (first delivery)', registers: [this.registry] });
  readonly eventsDuplicate = new Counter({ name: 'shoal_controller_events_duplicate_total', help: 'Device events received again and ignored (at-least-once redelivery)', registers: [this.registry] });
  readonly eventsMissing = new Gauge({ name: 'shoal_controller_events_missing', help: 'Device events below the highest stored sequence number that never arrived', registers: [this.registry] });
  readonly statesStale = new Counter({ name: 'shoal_controller_states_stale_total', help: 'Device states ignored because their revision was older than the stored one', registers: [this.registry] });
  readonly telemetryStored = new Counter({ name: 'shoal_controller_telemetry_stored_total', help: 'Telemetry samples stored', registers: [this.registry] });
  readonly malformed = new Counter({ name: 'shoal_controller_malformed_messages_total', help: 'MQTT messages dropped as malformed', registers: [this.registry] });
  readonly mqttConnected = new Gauge({ name: 'shoal_controller_mqtt_connected', help: '1 while connected to the broker', registers: [this.registry] });
  readonly mqttReconnects = new Counter({ name: 'shoal_controller_mqtt_reconnects_total', help: 'Reconnections to the broker after a lost connection', registers: [this.registry] });
  readonly apiLatency = new Histogram({
    name: 'shoal_controller_api_request_duration_seconds', help: 'HTTP API request duration by method, route and status code',
    labelNames: ['method', 'route', 'code'] as const, buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'shoal_controller_' });
    removeMisnamedTotals(this.registry);
  }

  /** Gauges computed from storage at scrape time. */
  refresh(storage: Storage, connected: boolean): void {
    let online = 0;
    let offline = 0;
    for (const d of storage.listDevices()) (d.online ? online++ : offline++);
    this.devices.set({ presence: 'online' }, online);
    this.devices.set({ presence: 'offline' }, offline);
    const byState = new Map<string, number>(ROLLOUT_STATES.map((s) => [s, 0]));
    for (const r of storage.listRollouts(100_000)) byState.set(r.status, (byState.get(r.status) ?? 0) + 1);
    for (const [state, n] of byState) this.rollouts.set({ state }, n);
    this.eventsMissing.set(storage.eventStreams().reduce((s, e) => s + e.missing, 0));
    this.mqttConnected.set(connected ? 1 : 0);
  }

  async render(storage: Storage, connected: boolean): Promise<{ contentType: string; body: string }> {
    this.refresh(storage, connected);
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}

/** Route template for the latency label (ids replaced, bounded cardinality). */
export function routeLabel(pathname: string): string {
  const p = pathname.split('/').filter(Boolean);
  if (p[0] === 'artifacts') return '/artifacts/:file';
  if (p[0] === 'metrics') return '/metrics';
  if (p[0] !== 'api') return '/web';
  const [, a, b, c, d] = p;
  if (!a) return '/api';
  if (a === 'devices') return b ? (c ? `/api/devices/:id/${c}` : '/api/devices/:id') : '/api/devices';
  if (a === 'rollouts') return b ? (c ? `/api/rollouts/:id/${c}` : '/api/rollouts/:id') : '/api/rollouts';
  if (a === 'packages') return b === 'uploads' ? (c ? (d ? `/api/packages/uploads/:id/${d}` : '/api/packages/uploads/:id') : '/api/packages/uploads') : b ? `/api/packages/${b === 'register' ? 'register' : ':id'}` : '/api/packages';
  return ['health', 'stats', 'events', 'telemetry', 'audit', 'stream'].includes(a) ? `/api/${a}` : '/api/other';
}
