// What the op handlers may use of the running daemon. The composition root
// (daemon.ts) fills it in; each handler file takes only what it needs.
import type { State } from '@shoal/protocol';
import type { DeviceConfig } from '../../config/load.js';
import type { ActiveModel } from '../../model/active-model.js';
import type { OtaManager } from '../../ota/manager.js';
import type { Scheduler } from '../../scheduler.js';
import type { TelemetryService } from '../../telemetry/service.js';

export interface HandlerContext {
  cfg: DeviceConfig;
  active: ActiveModel;
  scheduler: Scheduler;
  ota: OtaManager;
  telemetry: TelemetryService;
  /** The retained state document as it would be published now. */
  state(): State;
  /** Something the state shows changed: publish it (debounced). */
  changed(): void;
  /** Aborts a running request; false when there is none with that id. */
  cancel(requestId: string): boolean;
  outbox(): { pending: number; dropped: number };
  http(): { host: string; port: number } | null;
  uptimeSec(): number;
}
