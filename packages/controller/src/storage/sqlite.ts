// SQLite storage (better-sqlite3, WAL). Schema changes are numbered migrations
// applied in one transaction each; user_version records the last one applied.
import Database from 'better-sqlite3';
import fs from 'node:fs';
import path from 'node:path';
import type {
  AuditRow, DevicePatch, DeviceRecord, EventRow, EventStreamStats, PackageRecord, RolloutRecord, Storage, TelemetryRow,
} from './types.js';

const MIGRATIONS: string[] = [
  // 1: initial schema
  `CREATE TABLE devices (
     id TEXT PRIMARY KEY,
     online INTEGER NOT NULL DEFAULT 0,
     grp TEXT,
     labels TEXT NOT NULL DEFAULT '{}',
     model TEXT,
     phase TEXT,
     state TEXT,
     telemetry TEXT,
     desired TEXT,
     first_seen INTEGER NOT NULL,
     last_seen INTEGER NOT NULL
   );
   CREATE TABLE telemetry (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     device_id TEXT NOT NULL,
     ts INTEGER NOT NULL,
     data TEXT NOT NULL
   );
   CREATE INDEX telemetry_device ON telemetry(device_id, seq);
   CREATE INDEX telemetry_ts ON telemetry(ts);
   CREATE TABLE events (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     id TEXT NOT NULL UNIQUE,
     device_id TEXT NOT NULL,
     ts INTEGER NOT NULL,
     type TEXT NOT NULL,
     data TEXT NOT NULL,
     received_at INTEGER NOT NULL
   );
   CREATE INDEX events_device ON events(device_id, seq);
   CREATE TABLE audit (
     seq INTEGER PRIMARY KEY AUTOINCREMENT,
     ts INTEGER NOT NULL,
     actor TEXT NOT NULL,
     action TEXT NOT NULL,
     target TEXT NOT NULL,
     details TEXT NOT NULL
   );
   CREATE TABLE packages (
     name TEXT NOT NULL,
     version TEXT NOT NULL,
     dir TEXT NOT NULL,
     manifest_sha256 TEXT NOT NULL,
     total_bytes INTEGER NOT NULL,
     files INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     PRIMARY KEY (name, version)
   );
   CREATE TABLE rollouts (
     id TEXT PRIMARY KEY,
     status TEXT NOT NULL,
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL,
     doc TEXT NOT NULL
   );`,
  // 2: device event stream position (Event.stream, Event.seq): idempotent by (device, stream, seq), gaps visible
  `ALTER TABLE events ADD COLUMN stream TEXT;
   ALTER TABLE events ADD COLUMN dseq INTEGER;
   CREATE UNIQUE INDEX events_stream_seq ON events(device_id, stream, dseq) WHERE dseq IS NOT NULL;`,
];

export function openSqliteStorage(file: string): SqliteStorage {
  if (file !== ':memory:') fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  return new SqliteStorage(new Database(file));
}

interface DeviceRow {
  id: string; online: number; grp: string | null; labels: string; model: string | null; phase: string | null;
  state: string | null; telemetry: string | null; desired: string | null; first_seen: number; last_seen: number;
}

function parseJson<T>(s: string | null, fallback: T): T {
  if (s === null) return fallback;
  try { return JSON.parse(s) as T; } catch { return fallback; }
}

function toDevice(r: DeviceRow): DeviceRecord {
  return {
    id: r.id,
    online: r.online === 1,
    group: r.grp,
    labels: parseJson(r.labels, {}),
    model: parseJson(r.model, null),
    phase: r.phase as DeviceRecord['phase'],
    state: parseJson(r.state, null),
    telemetry: parseJson(r.telemetry, null),
    desired: parseJson(r.desired, null),
    firstSeen: r.first_seen,
    lastSeen: r.last_seen,
  };
}

export class SqliteStorage implements Storage {
  readonly kind = 'sqlite';
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(db: Database.Database) {
    this.db = db;
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    this.migrate();
    this.stmts = {
      getDevice: db.prepare<[string], DeviceRow>('SELECT * FROM devices WHERE id = ?'),
      listDevices: db.prepare<[], DeviceRow>('SELECT * FROM devices ORDER BY id'),
      insertDevice: db.prepare(`INSERT INTO devices (id, online, grp, labels, model, phase, state, telemetry, desired, first_seen, last_seen)
        VALUES (@id, @online, @grp, @labels, @model, @phase, @state, @telemetry, @desired, @first_seen, @last_seen)`),
      updateDevice: db.prepare(`UPDATE devices SET online=@online, grp=@grp, labels=@labels, model=@model, phase=@phase,
        state=@state, telemetry=@telemetry, desired=@desired, last_seen=@last_seen WHERE id=@id`),
      insertTelemetry: db.prepare('INSERT INTO telemetry (device_id, ts, data) VALUES (?, ?, ?)'),
      // OR IGNORE: a redelivered event (same id, or same device+stream+seq) is not stored twice
      insertEvent: db.prepare('INSERT OR IGNORE INTO events (id, device_id, ts, type, data, received_at, stream, dseq) VALUES (?, ?, ?, ?, ?, ?, ?, ?)'),
      audit: db.prepare('INSERT INTO audit (ts, actor, action, target, details) VALUES (?, ?, ?, ?, ?)'),
      putPackage: db.prepare(`INSERT OR REPLACE INTO packages (name, version, dir, manifest_sha256, total_bytes, files, created_at)
        VALUES (@name, @version, @dir, @manifestSha256, @totalBytes, @files, @createdAt)`),
      getPackage: db.prepare<[string, string], Record<string, unknown>>('SELECT * FROM packages WHERE name = ? AND version = ?'),
      listPackages: db.prepare<[], Record<string, unknown>>('SELECT * FROM packages ORDER BY name, created_at'),
      saveRollout: db.prepare(`INSERT INTO rollouts (id, status, created_at, updated_at, doc) VALUES (@id, @status, @createdAt, @updatedAt, @doc)
        ON CONFLICT(id) DO UPDATE SET status=excluded.status, updated_at=excluded.updated_at, doc=excluded.doc`),
      getRollout: db.prepare<[string], { doc: string }>('SELECT doc FROM rollouts WHERE id = ?'),
      listRollouts: db.prepare<[number], { doc: string }>('SELECT doc FROM rollouts ORDER BY created_at DESC, id DESC LIMIT ?'),
    };
  }

  private migrate(): void {
    const current = this.db.pragma('user_version', { simple: true }) as number;
    for (let i = current; i < MIGRATIONS.length; i++) {
      this.db.transaction(() => {
        this.db.exec(MIGRATIONS[i]!);
        this.db.pragma(`user_version = ${i + 1}`);
      })();
    }
  }

  schemaVersion(): number {
    return this.db.pragma('user_version', { simple: true }) as number;
  }

  upsertDevice(id: string, patch: DevicePatch, now: number): DeviceRecord {
    return this.db.transaction(() => {
      const row = this.stmts.getDevice.get(id);
      const cur: DeviceRecord = row ? toDevice(row) : {
        id, online: false, group: null, labels: {}, model: null, phase: null, state: null, telemetry: null, desired: null,
        firstSeen: now, lastSeen: now,
      };
      const next: DeviceRecord = { ...cur, ...Object.fromEntries(Object.entries(patch).filter(([, v]) => v !== undefined)) } as DeviceRecord;
      const params = {
        id, online: next.online ? 1 : 0, grp: next.group, labels: JSON.stringify(next.labels ?? {}),
        model: next.model ? JSON.stringify(next.model) : null, phase: next.phase,
        state: next.state ? JSON.stringify(next.state) : null,
        telemetry: next.telemetry ? JSON.stringify(next.telemetry) : null,
        desired: next.desired ? JSON.stringify(next.desired) : null,
        first_seen: next.firstSeen, last_seen: next.lastSeen,
      };
      if (row) this.stmts.updateDevice.run(params); else this.stmts.insertDevice.run(params);
      return next;
    })();
  }

  getDevice(id: string): DeviceRecord | null {
    const r = this.stmts.getDevice.get(id);
    return r ? toDevice(r) : null;
  }

  listDevices(): DeviceRecord[] {
    return this.stmts.listDevices.all().map(toDevice);
  }

  insertTelemetry(rows: { deviceId: string; ts: number; data: Record<string, unknown> }[]): void {
    if (rows.length === 0) return;
    this.db.transaction(() => {
      for (const r of rows) this.stmts.insertTelemetry.run(r.deviceId, r.ts, JSON.stringify(r.data));
    })();
  }

  listTelemetry(q: { deviceId?: string; sinceSeq?: number; limit: number }): TelemetryRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.deviceId) { where.push('device_id = ?'); args.push(q.deviceId); }
    if (q.sinceSeq !== undefined) { where.push('seq > ?'); args.push(q.sinceSeq); }
    // newest `limit` rows, returned oldest first
    const sql = `SELECT * FROM (SELECT seq, device_id, ts, data FROM telemetry ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY seq ${q.sinceSeq !== undefined ? 'ASC' : 'DESC'} LIMIT ?) ORDER BY seq ASC`;
    args.push(q.limit);
    return (this.db.prepare(sql).all(...args) as { seq: number; device_id: string; ts: number; data: string }[])
      .map((r) => ({ seq: r.seq, deviceId: r.device_id, ts: r.ts, data: parseJson(r.data, {}) }));
  }

  countTelemetry(deviceId?: string): number {
    const r = deviceId
      ? this.db.prepare('SELECT COUNT(*) AS n FROM telemetry WHERE device_id = ?').get(deviceId)
      : this.db.prepare('SELECT COUNT(*) AS n FROM telemetry').get();
    return (r as { n: number }).n;
  }

  pruneTelemetry(olderThanTs: number, maxRowsPerDevice: number): number {
    return this.db.transaction(() => {
      let n = this.db.prepare('DELETE FROM telemetry WHERE ts < ?').run(olderThanTs).changes;
      const heavy = this.db.prepare('SELECT device_id, COUNT(*) AS n FROM telemetry GROUP BY device_id HAVING n > ?')
        .all(maxRowsPerDevice) as { device_id: string; n: number }[];
      for (const h of heavy) {
        n += this.db.prepare(`DELETE FROM telemetry WHERE device_id = ? AND seq <= (
            SELECT seq FROM telemetry WHERE device_id = ? ORDER BY seq DESC LIMIT 1 OFFSET ?)`)
          .run(h.device_id, h.device_id, maxRowsPerDevice).changes;
      }
      return n;
    })();
  }

  insertEvent(ev: { id: string; deviceId: string; ts: number; type: string; data: Record<string, unknown>; stream?: string; seq?: number }, now: number): boolean {
    return this.stmts.insertEvent.run(ev.id, ev.deviceId, ev.ts, ev.type, JSON.stringify(ev.data), now, ev.stream ?? null, ev.seq ?? null).changes === 1;
  }

  eventStreams(deviceId?: string): EventStreamStats[] {
    const rows = this.db.prepare(`SELECT device_id, stream, MIN(dseq) AS first, MAX(dseq) AS last, COUNT(*) AS received
        FROM events WHERE dseq IS NOT NULL ${deviceId ? 'AND device_id = ?' : ''} GROUP BY device_id, stream ORDER BY device_id, MAX(seq)`)
      .all(...(deviceId ? [deviceId] : [])) as { device_id: string; stream: string; first: number; last: number; received: number }[];
    // a stream starts at seq 1: anything below the last seq that is not stored never arrived
    return rows.map((r) => ({ deviceId: r.device_id, stream: r.stream, first: r.first, last: r.last, received: r.received, missing: r.last - r.received }));
  }

  missingSeqs(deviceId: string, stream: string, limit: number): number[] {
    const have = this.db.prepare('SELECT dseq FROM events WHERE device_id = ? AND stream = ? AND dseq IS NOT NULL ORDER BY dseq')
      .pluck().all(deviceId, stream) as number[];
    const out: number[] = [];
    let next = 1;
    for (const s of have) {
      for (; next < s && out.length < limit; next++) out.push(next);
      next = s + 1;
      if (out.length >= limit) break;
    }
    return out;
  }

  listEvents(q: { deviceId?: string; type?: string; sinceSeq?: number; limit: number }): EventRow[] {
    const where: string[] = [];
    const args: (string | number)[] = [];
    if (q.deviceId) { where.push('device_id = ?'); args.push(q.deviceId); }
    if (q.type) { where.push('type = ?'); args.push(q.type); }
    if (q.sinceSeq !== undefined) { where.push('seq > ?'); args.push(q.sinceSeq); }
    const sql = `SELECT * FROM (SELECT * FROM events ${where.length ? 'WHERE ' + where.join(' AND ') : ''}
      ORDER BY seq ${q.sinceSeq !== undefined ? 'ASC' : 'DESC'} LIMIT ?) ORDER BY seq ASC`;
    args.push(q.limit);
    return (this.db.prepare(sql).all(...args) as Record<string, unknown>[]).map((r) => ({
      seq: r.seq as number, id: r.id as string, deviceId: r.device_id as string, ts: r.ts as number,
      type: r.type as string, data: parseJson(r.data as string, {}), receivedAt: r.received_at as number,
    }));
  }

  audit(entry: { actor: string; action: string; target: string; details: Record<string, unknown> }, now: number): void {
    this.stmts.audit.run(now, entry.actor, entry.action, entry.target, JSON.stringify(entry.details));
  }

  listAudit(q: { limit: number; sinceSeq?: number }): AuditRow[] {
    const rows = (q.sinceSeq !== undefined
      ? this.db.prepare('SELECT * FROM audit WHERE seq > ? ORDER BY seq ASC LIMIT ?').all(q.sinceSeq, q.limit)
      : this.db.prepare('SELECT * FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?) ORDER BY seq ASC').all(q.limit)) as Record<string, unknown>[];
    return rows.map((r) => ({
      seq: r.seq as number, ts: r.ts as number, actor: r.actor as string, action: r.action as string,
      target: r.target as string, details: parseJson(r.details as string, {}),
    }));
  }

  putPackage(p: PackageRecord): void {
    this.stmts.putPackage.run(p);
  }

  private toPackage(r: Record<string, unknown>): PackageRecord {
    return {
      name: r.name as string, version: r.version as string, dir: r.dir as string, manifestSha256: r.manifest_sha256 as string,
      totalBytes: r.total_bytes as number, files: r.files as number, createdAt: r.created_at as number,
    };
  }

  getPackage(name: string, version: string): PackageRecord | null {
    const r = this.stmts.getPackage.get(name, version);
    return r ? this.toPackage(r) : null;
  }

  listPackages(): PackageRecord[] {
    return this.stmts.listPackages.all().map((r) => this.toPackage(r));
  }

  saveRollout(r: RolloutRecord): void {
    this.stmts.saveRollout.run({ id: r.id, status: r.status, createdAt: r.createdAt, updatedAt: r.updatedAt, doc: JSON.stringify(r) });
  }

  getRollout(id: string): RolloutRecord | null {
    const r = this.stmts.getRollout.get(id);
    return r ? (JSON.parse(r.doc) as RolloutRecord) : null;
  }

  listRollouts(limit: number): RolloutRecord[] {
    return this.stmts.listRollouts.all(limit).map((r) => JSON.parse(r.doc) as RolloutRecord);
  }

  close(): void {
    if (this.db.open) this.db.close();
  }
}
