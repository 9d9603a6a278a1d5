// Crash-safe file writes, the one implementation every package uses: write a
// temporary sibling, fsync it, rename it over the target, fsync the directory
// (so the rename itself survives a power cut). A reader sees the old file or
// the new one, never a torn one.
import { promises as fsp, closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, chmodSync, writeSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';

export interface AtomicWriteOptions {
  /** File mode of the result, applied after the umask (default 0o644; keys use 0o600). */
  mode?: number;
}

/** A unique temporary path beside `target` (same directory, so rename is atomic). */
export function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
}

// Some filesystems cannot fsync a directory; the rename is still atomic there.
const NO_DIR_FSYNC = new Set(['EINVAL', 'ENOTSUP', 'EISDIR', 'EPERM']);

export async function fsyncDir(dir: string): Promise<void> {
  let fh: fsp.FileHandle;
  try { fh = await fsp.open(dir, 'r'); } catch (e) { if (NO_DIR_FSYNC.has((e as NodeJS.ErrnoException).code ?? '')) return; throw e; }
  try { await fh.sync(); } catch (e) { if (!NO_DIR_FSYNC.has((e as NodeJS.ErrnoException).code ?? '')) throw e; } finally { await fh.close(); }
}

export function fsyncDirSync(dir: string): void {
  let fd: number;
  try { fd = openSync(dir, 'r'); } catch (e) { if (NO_DIR_FSYNC.has((e as NodeJS.ErrnoException).code ?? '')) return; throw e; }
  try { fsyncSync(fd); } catch (e) { if (!NO_DIR_FSYNC.has((e as NodeJS.ErrnoException).code ?? '')) throw e; } finally { closeSync(fd); }
}

/** Writes `data` to `file` atomically (the parent folder is created when missing). */
export async function writeFileAtomic(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): Promise<void> {
  const mode = opts.mode ?? 0o644;
  const dir = path.dirname(file);
  await fsp.mkdir(dir, { recursive: true });
  const tmp = tempSibling(file);
  const fh = await fsp.open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode);
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => {});
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fh.close();
  try {
    await fsp.rename(tmp, file);
  } catch (e) {
    await fsp.rm(tmp, { force: true });
    throw e;
  }
  await fsyncDir(dir);
}

/** writeFileAtomic for synchronous callers (CLI tools, start-up). */
export function writeFileAtomicSync(file: string, data: string | Uint8Array, opts: AtomicWriteOptions = {}): void {
  const mode = opts.mode ?? 0o644;
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true });
  const tmp = tempSibling(file);
  const fd = openSync(tmp, 'wx', mode);
  try {
    const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < b.length) done += writeSync(fd, b, done, b.length - done);
    chmodSync(tmp, mode);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw e;
  }
  closeSync(fd);
  try {
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDirSync(dir);
}

export async function writeJsonAtomic(file: string, value: unknown): Promise<void> {
  await writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}
