// Durable, bounded event outbox (SQLite, WAL, synchronous=FULL). An event is
// appended before any publish attempt and deleted only after the broker's
// PUBACK, so events survive broker outages and daemon restarts. When full, the
// oldest events are dropped (counted in `dropped`).
//
// Each event gets `seq` (the row id: 1, 2, 3, ... AUTOINCREMENT never reuses a value,
// and a rolled-back insert rolls the counter back too, so within one database the only
// gaps are events dropped when full) and `stream` (a random id of this database), so the
// controller stores by (device, stream, seq) idempotently and sees gaps.
import Database from 'better-sqlite3';
import path from 'node:path';
import { mkdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';

export interface OutboxRow { seq: number; topic: string; payload: string }

export class Outbox {
  private db: Database.Database;
  dropped = 0;
  /** Random id of this outbox database (the events' `stream`). */
  readonly stream: string;
  constructor(file: string, private readonly maxEvents: number) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec('CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload TEXT NOT NULL, created INTEGER NOT NULL)');
    this.db.exec('CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)');
    const row = this.db.prepare("SELECT v FROM meta WHERE k = 'dropped'").get() as { v: number } | undefined;
    this.dropped = row?.v ?? 0;
    this.db.exec('CREATE TABLE IF NOT EXISTS meta_text (k TEXT PRIMARY KEY, v TEXT NOT NULL)');
    this.db.prepare("INSERT OR IGNORE INTO meta_text (k, v) VALUES ('stream', ?)").run(randomBytes(8).toString('hex'));
    this.stream = (this.db.prepare("SELECT v FROM meta_text WHERE k = 'stream'").get() as { v: string }).v;
  }

  /**
   * Appends an event, stamping it with its `seq` and `stream` inside the same transaction
   * (the row id is only known after the insert). Returns the seq.
   */
  appendEvent(topic: string, event: Record<string, unknown>): number {
    const tx = this.db.transaction(() => {
      const seq = this.append(topic, '{}');
      this.db.prepare('UPDATE outbox SET payload = ? WHERE seq = ?').run(JSON.stringify({ ...event, seq, stream: this.stream }), seq);
      return seq;
    });
    return tx();
  }

  /**
   * Reserves `count` durable revision numbers above both the last reservation and `floor`;
   * returns the first. Callers hand them out from memory, so a crash skips at most the rest
   * of one block and a revision is never issued twice, even across restarts.
   */
  reserveRevisions(count: number, floor: number): number {
    const tx = this.db.transaction(() => {
      const row = this.db.prepare("SELECT v FROM meta WHERE k = 'rev'").get() as { v: number } | undefined;
      const first = Math.max((row?.v ?? 0) + 1, floor);
      this.db.prepare("INSERT INTO meta (k, v) VALUES ('rev', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v").run(first + count - 1);
      return first;
    });
    return tx();
  }

  append(topic: string, payload: string): number {
    const tx = this.db.transaction(() => {
      const info = this.db.prepare('INSERT INTO outbox (topic, payload, created) VALUES (?, ?, ?)').run(topic, payload, Date.now());
      const count = (this.db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n;
      if (count > this.maxEvents) {
        const excess = count - this.maxEvents;
        this.db.prepare('DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)').run(excess);
        this.dropped += excess;
        this.db.prepare("INSERT INTO meta (k, v) VALUES ('dropped', ?) ON CONFLICT(k) DO UPDATE SET v = excluded.v").run(this.dropped);
      }
      return Number(info.lastInsertRowid);
    });
    return tx();
  }

  pending(limit = 1000, afterSeq = 0): OutboxRow[] {
    return this.db.prepare('SELECT seq, topic, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as OutboxRow[];
  }

  ack(seq: number): void {
    this.db.prepare('DELETE FROM outbox WHERE seq = ?').run(seq);
  }

  size(): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM outbox').get() as { n: number }).n;
  }

  close(): void {
    try { this.db.close(); } catch { /* already closed */ }
  }
}
