// Which incoming retained `state` documents the registry applies. Devices stamp each state
// with `rev` (strictly increasing, persisted across restarts) and `conn` (the rev reserved
// when their current MQTT connection opened; the Last Will of that connection carries
// rev = conn = that value). Publish order on the broker is not always the order of the
// changes (a will published late, a retained message from before a restart, a redelivery),
// so the revision decides:
//   - online state, rev newer than the stored one        -> apply everything
//   - offline state, rev newer, or the will of the stored
//     connection or of a newer one (conn >= stored conn)  -> presence only: online = false,
//                                                           last known model/version/store kept
//   - anything else                                       -> stale, ignored
// States without rev (older agents, simulators) keep the old rule: online applies, offline
// updates presence only.
import type { State } from '@shoal/protocol';

export type StateDecision = 'apply' | 'offline' | 'stale';

export function decideState(stored: { rev?: unknown; conn?: unknown } | null, next: State): StateDecision {
  if (!stored) return 'apply';
  const rev = typeof stored.rev === 'number' ? stored.rev : undefined;
  const conn = typeof stored.conn === 'number' ? stored.conn : undefined;
  if (next.rev === undefined || rev === undefined) return next.online ? 'apply' : 'offline';
  if (next.online) return next.rev > rev ? 'apply' : 'stale';
  if (next.rev > rev) return 'offline';
  if (next.conn !== undefined && conn !== undefined && next.conn >= conn) return 'offline';
  return 'stale';
}
