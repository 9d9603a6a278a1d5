// pull.ts — `shoal pull org/name[@revision]`: a model repository from the Hugging Face
// Hub (or $HF_ENDPOINT) into the standard cache layout (common/hf-cache.ts), so
// Transformers and Shoal share one copy.
//
// The official @huggingface/hub client does the API calls (modelInfo for the commit a
// revision names, listFiles with expand for each file's git oid and LFS sha256). Its
// downloader (downloadFileToCacheDir / snapshotDownload) is not used: it fetches files
// one at a time, restarts an interrupted file from zero, checks no hash and reports no
// progress. The transfer here is small and does those: files in parallel, each
// streamed into blobs/<etag>.incomplete with an HTTP Range resume (within a run after a
// dropped connection, and across runs), hashed while it arrives — LFS files against
// their sha256, small files against their git blob sha1 — then renamed into place and
// linked from snapshots/<commit>/<path>. A hash mismatch downloads the file once more
// from zero; a second mismatch is an error.
import { createHash, type Hash } from 'node:crypto';
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeSync, lstatSync, readlinkSync } from 'node:fs';
import path from 'node:path';
import { listFiles, modelInfo } from '@huggingface/hub';
import { COMMIT_HASH, hfHubCacheDir, parseRepoSpec, repoFolder } from '@shoal/common';
import { ShoalError, writeFileAtomicSync } from '@shoal/common';

export const DEFAULT_ENDPOINT = 'https://huggingface.co';

const backoff = (failures: number) => new Promise((r) => setTimeout(r, Math.min(4000, 100 * 2 ** failures)));

export interface PullOptions {
  /** "org/name" or "org/name@revision" (branch, tag or commit; default main) */
  spec: string;
  /** default $HF_HUB_CACHE / $HF_HOME/hub / ~/.cache/huggingface/hub */
  cacheDir?: string;
  /** default $HF_ENDPOINT or https://huggingface.co */
  endpoint?: string;
  /** default $HF_TOKEN */
  token?: string;
  /** fnmatch-style patterns on repository paths (as huggingface_hub's allow_patterns): `*` also crosses `/` */
  include?: string[];
  exclude?: string[];
  /** files downloaded at once (default 4) */
  jobs?: number;
  /** dropped connections resumed per file before giving up (default 3) */
  retries?: number;
  onProgress?: (p: PullProgress) => void;
  fetch?: typeof fetch;
  env?: NodeJS.ProcessEnv;
}

export interface PullProgress { bytesDone: number; bytesTotal: number; filesDone: number; filesTotal: number }

export interface PulledFile {
  path: string;
  size: number;
  /** LFS sha256, or null for a small (git) file */
  sha256: string | null;
  status: 'downloaded' | 'resumed' | 'cached';
}

export interface PullResult {
  repo: string;
  revision: string;
  commit: string;
  snapshot: string;
  files: PulledFile[];
  bytesDownloaded: number;
  seconds: number;
}

interface Entry { path: string; size: number; oid: string; lfs: { oid: string; size: number } | null }

/** fnmatch: `*` any run of characters (including `/`), `?` one, `[...]` a class. */
export function fnmatch(pattern: string, s: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const j = pattern.indexOf(']', i + 1);
      if (j < 0) { re += '\\['; continue; }
      let body = pattern.slice(i + 1, j).replace(/\\/g, '\\\\');
      if (body.startsWith('!')) body = '^' + body.slice(1);
      re += `[${body}]`;
      i = j;
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's').test(s);
}

function hubError(err: unknown, what: string, token: string | undefined): ShoalError {
  const e = err as { statusCode?: number; message?: string };
  const status = e.statusCode;
  if (status === 401 || status === 403) {
    return new ShoalError('SHOAL_ERR_HUB_AUTH', `${what}: the Hub answered ${status}: the model is gated or private. `
      + (token ? 'HF_TOKEN was sent but has no access: accept the model\'s terms on its page with that account, or use another token'
        : 'Set HF_TOKEN to an access token (https://huggingface.co/settings/tokens) of an account that accepted the model\'s terms'));
  }
  if (status === 404) return new ShoalError('SHOAL_ERR_HUB_NOT_FOUND', `${what}: not found on the Hub (check the name and revision)`);
  if (status !== undefined) return new ShoalError('SHOAL_ERR_HUB', `${what}: the Hub answered ${status}: ${e.message ?? ''}`);
  return new ShoalError('SHOAL_ERR_HUB', `${what}: ${(err as Error).message ?? String(err)} (check the network or HF_ENDPOINT)`);
}

/** A repository path that stays inside the snapshot folder. */
function safeRelPath(p: string): string {
  const n = path.posix.normalize(p);
  if (!p || n.startsWith('../') || n === '..' || path.posix.isAbsolute(n) || n.includes('\0')) {
    throw new ShoalError('SHOAL_ERR_HUB', `the Hub listed a file path ${JSON.stringify(p)} outside the repository`);
  }
  return n;
}

function encodePath(p: string): string {
  return p.split('/').map(encodeURIComponent).join('/');
}

/** sha256 for LFS files; git's blob sha1 ("blob <size>\0" + content) for the others. */
function newHash(e: Entry): Hash {
  if (e.lfs) return createHash('sha256');
  const h = createHash('sha1');
  h.update(`blob ${e.size}\0`);
  return h;
}

async function hashFile(file: string, h: Hash): Promise<void> {
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
}

function link(pointer: string, blob: string): void {
  mkdirSync(path.dirname(pointer), { recursive: true });
  const target = path.relative(path.dirname(pointer), blob);
  try {
    if (lstatSync(pointer).isSymbolicLink() && readlinkSync(pointer) === target) return;
    unlinkSync(pointer);
  } catch { /* absent */ }
  symlinkSync(target, pointer);
}

class Downloader {
  bytesDone = 0;
  bytesDownloaded = 0;
  filesDone = 0;
  constructor(private readonly o: Required<Pick<PullOptions, 'retries'>> & { endpoint: string; token?: string; repo: string; commit: string; fetch: typeof fetch },
    private readonly bytesTotal: number, private readonly filesTotal: number, private readonly onProgress?: (p: PullProgress) => void) {}

  progress(): void {
    this.onProgress?.({ bytesDone: this.bytesDone, bytesTotal: this.bytesTotal, filesDone: this.filesDone, filesTotal: this.filesTotal });
  }

  /** Downloads e into blob (resuming blob.incomplete); returns whether bytes were already there. */
  async fetchBlob(e: Entry, blob: string): Promise<boolean> {
    const want = e.lfs ? e.lfs.oid : e.oid;
    let restarts = 0;
    for (let attempt = 0; attempt < 2; attempt++) {
      const partial = `${blob}.incomplete`;
      let have = existsSync(partial) ? statSync(partial).size : 0;
      if (have > e.size) { rmSync(partial); have = 0; }
      const resumed = have > 0;
      const h = newHash(e);
      if (have > 0) await hashFile(partial, h);
      this.bytesDone += have;
      this.progress();
      have = await this.stream(e, partial, have, h);
      if (have < 0) { // the server ignored Range: the partial file was dropped, start over once
        if (++restarts > 1) throw new ShoalError('SHOAL_ERR_HUB', `${e.path}: the server does not resume downloads (no 206 to a Range request)`);
        attempt--;
        continue;
      }
      const got = h.digest('hex');
      if (have === e.size && got === want) {
        renameSync(partial, blob);
        return resumed;
      }
      rmSync(partial, { force: true });
      this.bytesDone -= have;
      if (attempt === 1) {
        throw new ShoalError('SHOAL_ERR_HASH_MISMATCH', `${e.path}: downloaded twice, and twice its ${e.lfs ? 'sha256' : 'git sha1'} `
          + `(${got}, ${have} bytes) is not the Hub's (${want}, ${e.size} bytes); the file on the server or a proxy is corrupt — try again later or another HF_ENDPOINT`);
      }
    }
    return false;
  }

  /** Appends e's bytes from offset `have` to partial, retrying dropped connections with Range; returns the final size. */
  private async stream(e: Entry, partial: string, have: number, h: Hash): Promise<number> {
    const url = `${this.o.endpoint}/${this.o.repo}/resolve/${this.o.commit}/${encodePath(e.path)}`;
    let failures = 0;
    for (;;) {
      if (have === e.size) return have;
      const headers: Record<string, string> = {};
      if (this.o.token) headers.authorization = `Bearer ${this.o.token}`;
      if (have > 0) headers.range = `bytes=${have}-`;
      let res: Response;
      try {
        res = await this.o.fetch(url, { headers, redirect: 'follow' });
      } catch (err) {
        if (++failures > this.o.retries) throw hubError(err, `${this.o.repo}/${e.path}`, this.o.token);
        await backoff(failures);
        continue;
      }
      if (res.status === 416 && have > 0) { // the range starts at the end: nothing left
        await res.body?.cancel();
        return have;
      }
      if (!res.ok) {
        await res.body?.cancel();
        throw hubError({ statusCode: res.status, message: res.statusText }, `${this.o.repo}/${e.path}`, this.o.token);
      }
      if (have > 0 && res.status !== 206) {
        // the server ignored Range: drop the partial file, the caller starts over
        await res.body?.cancel();
        rmSync(partial, { force: true });
        this.bytesDone -= have;
        return -1;
      }
      const fd = openSync(partial, 'a');
      try {
        const reader = res.body!.getReader();
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (have + value.length > e.size) throw new ShoalError('SHOAL_ERR_HUB', `${e.path}: the server sent more than the ${e.size} bytes the Hub lists`);
          writeSync(fd, value);
          h.update(value);
          have += value.length;
          this.bytesDone += value.length;
          this.bytesDownloaded += value.length;
          this.progress();
        }
      } catch (err) {
        if (err instanceof ShoalError) throw err;
        // dropped mid-file: keep what arrived and resume from there
        if (++failures > this.o.retries) {
          throw new ShoalError('SHOAL_ERR_HUB', `${e.path}: the connection dropped ${failures} times (${have} of ${e.size} bytes kept in the cache); run shoal pull again to resume`);
        }
        await backoff(failures);
        continue;
      } finally {
        closeSync(fd);
      }
      if (have < e.size) {
        if (++failures > this.o.retries) {
          throw new ShoalError('SHOAL_ERR_HUB', `${e.path}: the download ended early ${failures} times (${have} of ${e.size} bytes kept in the cache); run shoal pull again to resume`);
        }
        continue;
      }
      return have;
    }
  }
}

/** Downloads a Hub repository into the cache; see PullOptions. */
export async function pullModel(opts: PullOptions): Promise<PullResult> {
  const t0 = performance.now();
  const env = opts.env ?? process.env;
  const spec = parseRepoSpec(opts.spec);
  if (!spec) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${opts.spec}: expected org/name or org/name@revision`);
  const endpoint = (opts.endpoint ?? env.HF_ENDPOINT ?? DEFAULT_ENDPOINT).replace(/\/+$/, '');
  const token = opts.token ?? (env.HF_TOKEN || undefined);
  const cacheDir = opts.cacheDir ?? hfHubCacheDir(env);
  const doFetch = opts.fetch ?? fetch;
  const revision = spec.revision ?? 'main';
  const cred = token ? { accessToken: token } : {};
  if (token && !token.startsWith('hf_')) throw new ShoalError('SHOAL_ERR_INVALID_ARG', 'HF_TOKEN must be a Hugging Face access token (it starts with hf_)');

  let commit: string;
  try {
    const info = await modelInfo({ name: spec.repo, revision, hubUrl: endpoint, additionalFields: ['sha'], fetch: doFetch, ...cred });
    commit = String((info as { sha?: unknown }).sha ?? '');
  } catch (err) {
    throw hubError(err, `${spec.repo}@${revision}`, token);
  }
  if (!COMMIT_HASH.test(commit)) throw new ShoalError('SHOAL_ERR_HUB', `${spec.repo}@${revision}: the Hub returned no commit hash`);

  const entries: Entry[] = [];
  try {
    for await (const f of listFiles({ repo: { type: 'model', name: spec.repo }, revision: commit, recursive: true, expand: true, hubUrl: endpoint, fetch: doFetch, ...cred })) {
      if (f.type !== 'file') continue;
      const lfs = f.lfs ? { oid: String(f.lfs.oid), size: Number(f.lfs.size) } : null;
      entries.push({ path: safeRelPath(f.path), size: lfs ? lfs.size : Number(f.size), oid: String(f.oid), lfs });
    }
  } catch (err) {
    if (err instanceof ShoalError) throw err;
    throw hubError(err, `${spec.repo}@${revision}: listing files`, token);
  }
  const include = opts.include ?? [];
  const exclude = opts.exclude ?? [];
  const chosen = entries.filter((e) => (include.length === 0 || include.some((p) => fnmatch(p, e.path))) && !exclude.some((p) => fnmatch(p, e.path)));
  if (chosen.length === 0) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${spec.repo}@${revision}: no file matches --include/--exclude (${entries.length} files in the repository)`);

  const root = repoFolder(cacheDir, spec.repo);
  const snapshot = path.join(root, 'snapshots', commit);
  mkdirSync(path.join(root, 'blobs'), { recursive: true });
  mkdirSync(snapshot, { recursive: true });
  const dl = new Downloader({ endpoint, ...(token ? { token } : {}), repo: spec.repo, commit, fetch: doFetch, retries: opts.retries ?? 3 },
    chosen.reduce((a, e) => a + e.size, 0), chosen.length, opts.onProgress);
  const files: PulledFile[] = [];
  const queue = [...chosen];
  let failed = false;
  const worker = async () => {
    for (let e = queue.shift(); e && !failed; e = queue.shift()) {
      const etag = e.lfs ? e.lfs.oid : e.oid;
      if (!/^[0-9a-f]{40,64}$/.test(etag)) throw new ShoalError('SHOAL_ERR_HUB', `${e.path}: the Hub listed an invalid object id ${JSON.stringify(etag)}`);
      const blob = path.join(root, 'blobs', etag);
      let status: PulledFile['status'] = 'cached';
      if (!(existsSync(blob) && statSync(blob).size === e.size)) {
        try {
          status = (await dl.fetchBlob(e, blob)) ? 'resumed' : 'downloaded';
        } catch (err) {
          failed = true; // the other workers finish their file and stop
          throw err;
        }
      } else dl.bytesDone += e.size;
      link(path.join(snapshot, e.path), blob);
      dl.filesDone++;
      dl.progress();
      files.push({ path: e.path, size: e.size, sha256: e.lfs ? e.lfs.oid : null, status });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.jobs ?? 4, chosen.length)) }, worker));
  if (!COMMIT_HASH.test(revision)) {
    mkdirSync(path.dirname(path.join(root, 'refs', revision)), { recursive: true });
    writeFileAtomicSync(path.join(root, 'refs', revision), commit);
  }
  files.sort((a, b) => a.path.localeCompare(b.path));
  return { repo: spec.repo, revision, commit, snapshot, files, bytesDownloaded: dl.bytesDownloaded, seconds: (performance.now() - t0) / 1000 };
}
