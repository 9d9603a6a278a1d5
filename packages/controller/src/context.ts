// context.ts — what the HTTP API and the live stream use of the running controller.
// The composition root (controller.ts) implements it; api.ts and live.ts import only
// this, so nothing imports the controller back.
import type { EventEmitter } from 'node:events';
import type { DeviceChannel } from '@shoal/protocol';
import type { ResolvedConfig } from './config.js';
import type { FleetLink } from './link.js';
import type { PackageRegistry } from './packages.js';
import type { RolloutEngine } from './rollout.js';
import type { Storage } from './storage/types.js';

export interface IngestStats {
  received: Record<DeviceChannel, number>;
  stored: { state: number; telemetry: number; events: number; duplicateEvents: number };
  malformed: number;
  lastMalformed: string | null;
}

export interface ControllerContext {
  readonly config: ResolvedConfig;
  readonly storage: Storage;
  readonly registry: PackageRegistry;
  readonly rollouts: RolloutEngine;
  readonly link: FleetLink;
  /** Live feed of what ingest stored (see Controller.bus). */
  readonly bus: EventEmitter;
  readonly stats: IngestStats;
  /** Base URL devices use for artifacts. */
  readonly publicUrl: string;
}
