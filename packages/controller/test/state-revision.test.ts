// Which retained states the registry applies: newer revisions only; an offline will updates
// presence only (the last known model stays), a late will from an older connection is ignored.
import t from 'tap';
import type { State } from '@shoal/protocol';
import { decideState } from '../src/state-revision.js';

const st = (o: Partial<State>): State => ({
  v: 1, deviceId: 'd', online: true, ts: 1, labels: {}, model: null, previous: null, phase: 'active', desired: null, store: [], engine: null, ...o,
});

t.test('revisions decide', async (t) => {
  t.equal(decideState(null, st({ rev: 5 })), 'apply', 'first state');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ rev: 11, conn: 9 })), 'apply', 'newer online state');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ rev: 10, conn: 9 })), 'stale', 'same revision (redelivery)');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ rev: 8, conn: 7 })), 'stale', 'older online state (publish race)');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ online: false, rev: 9, conn: 9 })), 'offline', 'will of the current connection');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ online: false, rev: 12, conn: 12 })), 'offline', 'will of a newer connection');
  t.equal(decideState({ rev: 10, conn: 9 }, st({ online: false, rev: 11, conn: 9 })), 'offline', 'clean shutdown (newer rev)');
  t.equal(decideState({ rev: 20, conn: 15 }, st({ online: false, rev: 9, conn: 9 })), 'stale', 'late will of an older connection');
  t.equal(decideState({}, st({ online: false })), 'offline', 'no revisions: offline is presence only');
  t.equal(decideState({}, st({ online: true })), 'apply', 'no revisions: online applies');
});
