// Durable, bounded event outbox (SQLite, WAL, synchronous=FULL). An event is
// appended before any publish attempt and deleted only after the broker's
// PUBACK, so events survive broker outages and daemon restarts. When full, the
// oldest events are dropped (counted in `dropped`).
import Database from 'better-sqlite3';
import path from 'node:path';
import { mkdirSync } from 'node:fs';

export interface OutboxRow { seq: number; topic: string; payload: string }

export class Outbox {
  private db: Database.Database;
  dropped = 0;
  constructor(file: string, private readonly maxEvents: number) {
    mkdirSync(path.dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec('CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload TEXT NOT NULL, created INTEGER NOT NULL)');
    this.db.exec('CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL)');
    const row = this.db.prepare("SELECT v FROM meta WHERE k = 'dropped'").get() as { v: number } | undefined;
    this.dropped = row?.v ?? 0;
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
