// The retained state document (shoal/v1/devices/{id}/state): what the device
// runs, what it was asked to run, where the OTA stands, what its store holds.
import { PROTOCOL_VERSION, type DesiredModel, type ModelRef, type Phase, type State, type StoreEntry } from '@shoal/protocol';
import type { DeviceConfig } from './config/load.js';

export const AGENT_VERSION = '0.1.0';

export interface StateSources {
  cfg: DeviceConfig;
  model: ModelRef | null;
  previous: ModelRef | null;
  engine: State['engine'];
  ota: { phase: Phase; desired: DesiredModel | null; rolloutId?: string; lastError?: { code: string; message: string } } | null;
  store: StoreEntry[];
  telemetryIntervalSec: number;
  /** The MQTT protocol version in use, when connected. */
  mqttVersion: 4 | 5 | null;
}

export function buildState(src: StateSources, online: boolean): State {
  const s: State = {
    v: PROTOCOL_VERSION,
    deviceId: src.cfg.deviceId,
    online,
    ts: Date.now(),
    labels: src.cfg.labels,
    model: src.model,
    previous: src.previous,
    phase: src.ota?.phase ?? 'idle',
    desired: src.ota?.desired ?? null,
    store: src.store,
    engine: src.engine,
    telemetryIntervalSec: src.telemetryIntervalSec,
    agentVersion: AGENT_VERSION,
  };
  if (src.cfg.group) s.group = src.cfg.group;
  if (src.ota?.rolloutId) s.rolloutId = src.ota.rolloutId;
  if (src.ota?.lastError) s.lastError = src.ota.lastError;
  if (src.mqttVersion !== null) s.mqttVersion = src.mqttVersion;
  return s;
}
