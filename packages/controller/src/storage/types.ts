// The controller's storage interface. The default implementation is SQLite
// (storage/sqlite.ts); a server database can replace it by implementing this.
import type { DesiredModel, ModelRef, Phase } from '@shoal/protocol';

export interface DeviceRecord {
  id: string;
  online: boolean;
  group: string | null;
  labels: Record<string, string>;
  model: ModelRef | null;
  phase: Phase | null;
  /** Last reported state (protocol State) or null before the first one. */
  state: Record<string, unknown> | null;
  /** Last telemetry message. */
  telemetry: Record<string, unknown> | null;
  /** What the controller last published as desired (null = nothing published). */
  desired: { model: DesiredModel | null; rolloutId?: string; ts: number } | null;
  firstSeen: number;
  lastSeen: number;
}

export interface DevicePatch {
  online?: boolean;
  group?: string | null;
  labels?: Record<string, string>;
  model?: ModelRef | null;
  phase?: Phase | null;
  state?: Record<string, unknown> | null;
  telemetry?: Record<string, unknown> | null;
  desired?: DeviceRecord['desired'];
  lastSeen?: number;
}

export interface TelemetryRow { seq: number; deviceId: string; ts: number; data: Record<string, unknown> }
export interface EventRow { seq: number; id: string; deviceId: string; ts: number; type: string; data: Record<string, unknown>; receivedAt: number }
/** Received events of one device event stream (Event.stream): seq runs 1..last without gaps when nothing was lost. */
export interface EventStreamStats { deviceId: string; stream: string; first: number; last: number; received: number; missing: number }
export interface AuditRow { seq: number; ts: number; actor: string; action: string; target: string; details: Record<string, unknown> }

export interface PackageRecord {
  name: string;
  version: string;
  /** Directory holding manifest.json and the files. */
  dir: string;
  manifestSha256: string;
  totalBytes: number;
  files: number;
  createdAt: number;
}

export type RolloutStatus = 'running' | 'paused' | 'succeeded' | 'failed' | 'aborted';
export type RolloutDeviceStatus = 'pending' | 'updating' | 'active' | 'failed' | 'timeout' | 'rolled-back';

export interface RolloutDevice {
  id: string;
  wave: number;
  status: RolloutDeviceStatus;
  /** Desired model before this rollout touched the device (what a rollback restores). */
  previous: DesiredModel | null;
  startedAt: number | null;
  finishedAt: number | null;
  error: string | null;
}

export interface RolloutRecord {
  id: string;
  name: string;
  version: string;
  target: string;
  waves: string[];
  maxFailures: string;
  timeoutSec: number;
  status: RolloutStatus;
  currentWave: number;
  devices: RolloutDevice[];
  message: string | null;
  createdAt: number;
  updatedAt: number;
}

export interface Storage {
  readonly kind: string;
  // devices
  upsertDevice(id: string, patch: DevicePatch, now: number): DeviceRecord;
  getDevice(id: string): DeviceRecord | null;
  listDevices(): DeviceRecord[];
  // telemetry (append-only, retention by age and rows per device)
  insertTelemetry(rows: { deviceId: string; ts: number; data: Record<string, unknown> }[]): void;
  listTelemetry(q: { deviceId?: string; sinceSeq?: number; limit: number }): TelemetryRow[];
  countTelemetry(deviceId?: string): number;
  pruneTelemetry(olderThanTs: number, maxRowsPerDevice: number): number;
  // events (deduplicated by event id)
  insertEvent(ev: { id: string; deviceId: string; ts: number; type: string; data: Record<string, unknown>; stream?: string; seq?: number }, now: number): boolean;
  /** Per device and event stream: first/last seq stored, how many, how many below `last` are missing. */
  eventStreams(deviceId?: string): EventStreamStats[];
  /** The first `limit` seqs of a stream that were never stored. */
  missingSeqs(deviceId: string, stream: string, limit: number): number[];
  listEvents(q: { deviceId?: string; type?: string; sinceSeq?: number; limit: number }): EventRow[];
  // audit log of every command and rollout action
  audit(entry: { actor: string; action: string; target: string; details: Record<string, unknown> }, now: number): void;
  listAudit(q: { limit: number; sinceSeq?: number }): AuditRow[];
  // packages
  putPackage(p: PackageRecord): void;
  getPackage(name: string, version: string): PackageRecord | null;
  listPackages(): PackageRecord[];
  // rollouts
  saveRollout(r: RolloutRecord): void;
  getRollout(id: string): RolloutRecord | null;
  listRollouts(limit: number): RolloutRecord[];
  close(): void;
}
