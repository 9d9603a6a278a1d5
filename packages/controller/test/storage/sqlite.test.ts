// SQLite storage: migrations, reopen, telemetry retention, event dedupe, rollouts.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { openSqliteStorage } from '../../src/storage/sqlite.js';
import { allowedFailures, parseSelector, parseWaves, planWaves } from '../../src/rollout.js';
import { tmpDir } from '@shoal/testkit/fleet';

t.test('sqlite storage', async (t) => {
  const dir = tmpDir();
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'db', 'c.db');
  let s = openSqliteStorage(file);
  t.equal(s.schemaVersion(), 2);
  s.upsertDevice('a', { online: true, group: 'g', labels: { k: 'v' } }, 1000);
  s.upsertDevice('a', { phase: 'active' }, 2000);
  const a = s.getDevice('a')!;
  t.equal(a.online, true);
  t.equal(a.group, 'g', 'a patch keeps the other fields');
  t.equal(a.phase, 'active');
  t.equal(a.firstSeen, 1000);
  const now = Date.now();
  s.insertTelemetry(Array.from({ length: 50 }, (_, i) => ({ deviceId: i % 2 ? 'a' : 'b', ts: now - (50 - i) * 1000, data: { i } })));
  t.equal(s.countTelemetry(), 50);
  t.equal(s.listTelemetry({ deviceId: 'a', limit: 3 }).map((r) => r.data.i).join(','), '45,47,49', 'newest rows, oldest first');
  const since = s.listTelemetry({ limit: 1 })[0]!.seq;
  s.insertTelemetry([{ deviceId: 'a', ts: now, data: { i: 50 } }]);
  t.same(s.listTelemetry({ sinceSeq: since, limit: 10 }).map((r) => r.data.i), [50]);
  // retention: older than 20 s go, then at most 5 rows per device
  const pruned = s.pruneTelemetry(now - 20_000, 5);
  t.equal(s.countTelemetry('a'), 5);
  t.equal(s.countTelemetry('b'), 5);
  t.equal(pruned, 41);
  t.equal(s.listTelemetry({ deviceId: 'a', limit: 1 })[0]!.data.i, 50, 'the newest row survives');
  const ev = { id: '3f1c1c57-8f7e-4f38-9a55-1d1d4f1d2c11', deviceId: 'a', ts: 5, type: 'ota.activated', data: { v: 1 } };
  t.equal(s.insertEvent(ev, 6), true);
  t.equal(s.insertEvent(ev, 7), false, 'duplicate event id ignored');
  // device stream position: (device, stream, seq) is unique too, and gaps are counted
  const sev = (seq: number, id = `00000000-0000-4000-8000-${String(seq).padStart(12, '0')}`) => ({ id, deviceId: 'a', ts: seq, type: 'device.started', data: {}, stream: 's1', seq });
  for (const n of [1, 2, 4, 7]) t.equal(s.insertEvent(sev(n), 9), true, `seq ${n} stored`);
  t.equal(s.insertEvent(sev(4, '00000000-0000-4000-8000-999999999999'), 9), false, 'same device+stream+seq under another id is a duplicate');
  t.same(s.eventStreams('a'), [{ deviceId: 'a', stream: 's1', first: 1, last: 7, received: 4, missing: 3 }]);
  t.same(s.missingSeqs('a', 's1', 10), [3, 5, 6]);
  t.same(s.missingSeqs('a', 's1', 2), [3, 5]);
  s.audit({ actor: 'x', action: 'y', target: 'z', details: { n: 1 } }, 8);
  s.close();
  // reopen: nothing re-migrated, data kept
  s = openSqliteStorage(file);
  t.equal(s.getDevice('a')!.labels.k, 'v');
  t.equal(s.listEvents({ limit: 10 }).length, 5);
  t.equal(s.listAudit({ limit: 10 })[0]!.details.n, 1);
  s.close();
  const raw = new Database(file);
  t.equal(raw.pragma('journal_mode', { simple: true }), 'wal');
  raw.close();
});

t.test('wave planning and selectors', async (t) => {
  const ids = Array.from({ length: 20 }, (_, i) => `d${i}`);
  t.same(planWaves(ids, parseWaves('1,10%,50%,100%')).map((w) => w.length), [1, 1, 8, 10]);
  t.same(planWaves(ids.slice(0, 3), parseWaves('1,10%,50%,100%')).map((w) => w.length), [1, 1, 1]);
  t.same(planWaves(ids.slice(0, 3), parseWaves('50%')).map((w) => w.length), [2, 1], 'the last wave takes the rest');
  t.same(planWaves(ids.slice(0, 2), parseWaves('5,100%')).map((w) => w.length), [2]);
  t.throws(() => parseWaves('0'), { code: 'INVALID_WAVES' });
  t.throws(() => parseWaves('150%'), { code: 'INVALID_WAVES' });
  t.throws(() => parseWaves(''), { code: 'INVALID_WAVES' });
  t.equal(allowedFailures('5%', 10), 0);
  t.equal(allowedFailures('5%', 40), 2);
  t.equal(allowedFailures('2', 3), 2);
  t.same(parseSelector('group:lab'), { kind: 'group', group: 'lab' });
  t.same(parseSelector('site=north'), { kind: 'label', key: 'site', value: 'north' });
  t.same(parseSelector('a,b,a'), { kind: 'ids', ids: ['a', 'b'] });
  t.throws(() => parseSelector('group:'), { code: 'INVALID_SELECTOR' });
  t.throws(() => parseSelector('bad id!'), { code: 'INVALID_SELECTOR' });
});
