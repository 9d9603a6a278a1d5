// The on-disk model store.
//
//   <dir>/<name>/<version>/...        complete, verified packages (manifest.json inside)
//   <dir>/.partial/<name>/<version>/  downloads in progress (resumable)
//   <dir>/active.json                 {current, previous} written atomically
//   <dir>/desired.json                last desired state seen (so an offline restart converges)
import { promises as fsp, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { type ModelRef, type StoreEntry, type DesiredModel, MANIFEST_FILE } from '@shoal/protocol';
import { writeJsonAtomic, fsyncDir, ShoalError } from '@shoal/common';

export interface ActivePointer { current: ModelRef | null; previous: ModelRef | null; updatedAt: number }

const SEG = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

export class ModelStore {
  readonly dir: string;
  readonly partialRoot: string;
  private active: ActivePointer = { current: null, previous: null, updatedAt: 0 };

  constructor(dir: string) {
    this.dir = dir;
    this.partialRoot = path.join(dir, '.partial');
  }

  async init(): Promise<void> {
    await fsp.mkdir(this.partialRoot, { recursive: true });
    const f = path.join(this.dir, 'active.json');
    if (existsSync(f)) {
      try {
        const a = JSON.parse(readFileSync(f, 'utf8')) as ActivePointer;
        this.active = { current: a.current ?? null, previous: a.previous ?? null, updatedAt: a.updatedAt ?? 0 };
      } catch (e) {
        throw new ShoalError('STORE_IO', `store ${f} is unreadable: ${(e as Error).message}`);
      }
    }
    // drop pointers to versions that vanished
    if (this.active.current && !this.has(this.active.current)) this.active.current = null;
    if (this.active.previous && !this.has(this.active.previous)) this.active.previous = null;
  }

  versionDir(ref: ModelRef): string {
    if (!SEG.test(ref.name) || !SEG.test(ref.version)) throw new ShoalError('INVALID_ARGS', `invalid model name/version '${ref.name}'/'${ref.version}'`);
    return path.join(this.dir, ref.name, ref.version);
  }

  partialDir(ref: ModelRef): string {
    this.versionDir(ref);
    return path.join(this.partialRoot, ref.name, ref.version);
  }

  has(ref: ModelRef): boolean {
    return existsSync(path.join(this.versionDir(ref), MANIFEST_FILE));
  }

  getActive(): ActivePointer {
    return { ...this.active };
  }

  /** Atomically sets the active pointer (the current version becomes previous unless given). */
  async setActive(current: ModelRef | null, previous: ModelRef | null): Promise<void> {
    const next: ActivePointer = { current, previous, updatedAt: Date.now() };
    await writeJsonAtomic(path.join(this.dir, 'active.json'), next);
    this.active = next;
  }

  async saveDesired(d: { model: DesiredModel | null; rolloutId?: string } | null): Promise<void> {
    await writeJsonAtomic(path.join(this.dir, 'desired.json'), d);
  }

  loadDesired(): { model: DesiredModel | null; rolloutId?: string } | null {
    const f = path.join(this.dir, 'desired.json');
    if (!existsSync(f)) return null;
    try { return JSON.parse(readFileSync(f, 'utf8')); } catch { return null; }
  }

  async list(): Promise<StoreEntry[]> {
    const out: StoreEntry[] = [];
    const names = await fsp.readdir(this.dir, { withFileTypes: true }).catch(() => []);
    for (const n of names) {
      if (!n.isDirectory() || n.name.startsWith('.')) continue;
      const versions = await fsp.readdir(path.join(this.dir, n.name), { withFileTypes: true }).catch(() => []);
      for (const v of versions) {
        if (!v.isDirectory() || v.name.startsWith('.')) continue;
        const ref = { name: n.name, version: v.name };
        if (!SEG.test(ref.name) || !SEG.test(ref.version) || !this.has(ref)) continue;
        out.push({
          ...ref,
          bytes: await dirBytes(this.versionDir(ref)),
          active: sameRef(this.active.current, ref),
          previous: sameRef(this.active.previous, ref),
        });
      }
    }
    out.sort((a, b) => (a.name === b.name ? a.version.localeCompare(b.version, undefined, { numeric: true }) : a.name.localeCompare(b.name)));
    return out;
  }

  /** Removes a stored version (never the active or previous one). */
  async remove(ref: ModelRef): Promise<void> {
    if (sameRef(this.active.current, ref) || sameRef(this.active.previous, ref)) {
      throw new ShoalError('VERSION_ACTIVE', `${ref.name}@${ref.version} is ${sameRef(this.active.current, ref) ? 'active' : 'kept for rollback'}; it cannot be removed`);
    }
    const dir = this.versionDir(ref);
    if (!existsSync(dir)) throw new ShoalError('NOT_FOUND', `${ref.name}@${ref.version} is not in the store`);
    // rename out of the way first so a crash never leaves a half-deleted version that looks complete
    const trash = path.join(this.partialRoot, `.trash-${ref.name}-${ref.version}-${Date.now()}`);
    await fsp.rename(dir, trash);
    await fsyncDir(path.dirname(dir));
    await fsp.rm(trash, { recursive: true, force: true });
    await fsp.rmdir(path.dirname(dir)).catch(() => {});
  }

  /** Deletes the oldest versions beyond keepVersions, never active or previous; returns what was removed. */
  async gc(keepVersions: number): Promise<ModelRef[]> {
    const entries = await this.list();
    if (entries.length <= keepVersions) return [];
    const withTime = await Promise.all(entries.map(async (e) => ({ e, mtime: (await fsp.stat(this.versionDir(e))).mtimeMs })));
    withTime.sort((a, b) => a.mtime - b.mtime);
    const removed: ModelRef[] = [];
    let count = entries.length;
    for (const { e } of withTime) {
      if (count <= keepVersions) break;
      if (e.active || e.previous) continue;
      await this.remove(e);
      removed.push({ name: e.name, version: e.version });
      count--;
    }
    return removed;
  }

  /** Removes leftover trash and partial downloads other than `keep`. */
  async cleanPartials(keep?: ModelRef): Promise<void> {
    const items = await fsp.readdir(this.partialRoot, { withFileTypes: true }).catch(() => []);
    for (const it of items) {
      if (it.name.startsWith('.trash-')) await fsp.rm(path.join(this.partialRoot, it.name), { recursive: true, force: true });
    }
    if (!keep) return;
    for (const it of items) {
      if (!it.isDirectory() || it.name.startsWith('.')) continue;
      const vers = await fsp.readdir(path.join(this.partialRoot, it.name)).catch(() => [] as string[]);
      for (const v of vers) {
        if (it.name === keep.name && v === keep.version) continue;
        await fsp.rm(path.join(this.partialRoot, it.name, v), { recursive: true, force: true });
      }
    }
  }
}

export function sameRef(a: ModelRef | null | undefined, b: ModelRef | null | undefined): boolean {
  return !!a && !!b && a.name === b.name && a.version === b.version;
}

export async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  const items = await fsp.readdir(dir, { withFileTypes: true, recursive: true }).catch(() => []);
  for (const it of items) {
    if (it.isFile()) total += (await fsp.stat(path.join(it.parentPath ?? (it as unknown as { path: string }).path, it.name))).size;
  }
  return total;
}
