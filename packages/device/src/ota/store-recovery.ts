// Store recovery at start: whatever a kill -9 or a power cut can leave in the model store
// is removed before the daemon uses it, and versions beyond keepVersions are collected.
//   - `*.tmp` files of atomic writes (active.json, desired.json, manifests) that never got renamed
//   - `.partial/.trash-*` directories of removals that did not finish
//   - `.partial/<name>/<version>` downloads other than the persisted desired model's (that one
//     is resumed: its bytes are kept)
//   - versions beyond store.keepVersions (never the active or the previous one)
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { ModelRef } from '@shoal/protocol';
import { type ModelStore, dirBytes } from './store.js';

export interface RecoveryReport {
  tmpFiles: string[];
  trash: number;
  partials: string[];
  gc: ModelRef[];
  freedBytes: number;
  /** Partial download kept for resuming (the desired model), if any. */
  resumable: string | null;
}

export function recoveredSomething(r: RecoveryReport): boolean {
  return r.tmpFiles.length + r.trash + r.partials.length + r.gc.length > 0;
}

const MAX_DEPTH = 4;

async function sweepTmp(dir: string, root: string, depth: number, out: string[]): Promise<number> {
  let freed = 0;
  const items = await fsp.readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const it of items) {
    const p = path.join(dir, it.name);
    if (it.isDirectory()) {
      if (depth < MAX_DEPTH) freed += await sweepTmp(p, root, depth + 1, out);
    } else if (it.isFile() && it.name.endsWith('.tmp')) {
      const st = await fsp.stat(p).catch(() => null);
      await fsp.rm(p, { force: true });
      freed += st?.size ?? 0;
      out.push(path.relative(root, p));
    }
  }
  return freed;
}

export async function recoverStore(store: ModelStore, keepVersions: number, keepPartial: ModelRef | null): Promise<RecoveryReport> {
  const report: RecoveryReport = { tmpFiles: [], trash: 0, partials: [], gc: [], freedBytes: 0, resumable: null };
  report.freedBytes += await sweepTmp(store.dir, store.dir, 0, report.tmpFiles);
  const items = await fsp.readdir(store.partialRoot, { withFileTypes: true }).catch(() => []);
  for (const it of items) {
    const p = path.join(store.partialRoot, it.name);
    if (it.name.startsWith('.trash-')) {
      report.freedBytes += await dirBytes(p);
      await fsp.rm(p, { recursive: true, force: true });
      report.trash++;
      continue;
    }
    if (!it.isDirectory()) continue;
    const versions = await fsp.readdir(p).catch(() => [] as string[]);
    for (const v of versions) {
      const rel = `${it.name}/${v}`;
      if (keepPartial && keepPartial.name === it.name && keepPartial.version === v) { report.resumable = rel; continue; }
      report.freedBytes += await dirBytes(path.join(p, v));
      await fsp.rm(path.join(p, v), { recursive: true, force: true });
      report.partials.push(rel);
    }
    await fsp.rmdir(p).catch(() => {}); // only when empty
  }
  const sizes = new Map((await store.list()).map((e) => [`${e.name}@${e.version}`, e.bytes]));
  report.gc = await store.gc(keepVersions);
  for (const r of report.gc) report.freedBytes += sizes.get(`${r.name}@${r.version}`) ?? 0;
  return report;
}
