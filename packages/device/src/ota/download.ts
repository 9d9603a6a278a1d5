// HTTP(S) fetching for OTA: the manifest (size-limited) and package files with
// Range resume. A partial file is re-hashed on resume so only missing bytes are
// fetched; after a network drop the download continues from the bytes on disk.
import http from 'node:http';
import https from 'node:https';
import { createHash, type Hash } from 'node:crypto';
import { promises as fsp, createReadStream, existsSync } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { ShoalError } from '@shoal/common';

function get(url: string, headers: Record<string, string>, signal: AbortSignal | undefined, idleTimeoutMs: number): Promise<http.IncomingMessage> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const mod = u.protocol === 'https:' ? https : u.protocol === 'http:' ? http : null;
    if (!mod) return reject(new ShoalError('DOWNLOAD_FAILED', `unsupported URL scheme in ${url}`));
    const req = mod.get(u, { headers: { 'user-agent': 'shoal-device/1', ...headers }, signal }, (res) => resolve(res));
    req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no data from ${u.host} for ${idleTimeoutMs} ms`)));
    req.on('error', reject);
  });
}

/** Fetches a small document fully (e.g. the manifest), refusing more than maxBytes. */
export async function fetchBytes(url: string, maxBytes: number, opts: { signal?: AbortSignal; idleTimeoutMs?: number; retries?: number } = {}): Promise<Buffer> {
  let lastErr: unknown;
  for (let attempt = 0; attempt <= (opts.retries ?? 3); attempt++) {
    if (attempt > 0) await sleep(backoffMs(attempt), undefined, { signal: opts.signal });
    try {
      const res = await get(url, {}, opts.signal, opts.idleTimeoutMs ?? 30000);
      if (res.statusCode !== 200) {
        res.resume();
        const err = new ShoalError('MANIFEST_FETCH_FAILED', `GET ${url} answered HTTP ${res.statusCode}`);
        if ((res.statusCode ?? 500) < 500) throw err;
        lastErr = err;
        continue;
      }
      const chunks: Buffer[] = [];
      let n = 0;
      for await (const c of res as AsyncIterable<Buffer>) {
        n += c.length;
        if (n > maxBytes) { res.destroy(); throw new ShoalError('MANIFEST_INVALID', `${url} is larger than ${maxBytes} bytes`); }
        chunks.push(c);
      }
      return Buffer.concat(chunks);
    } catch (e) {
      if (e instanceof ShoalError && e.code !== 'MANIFEST_FETCH_FAILED') throw e;
      if (e instanceof ShoalError) throw e;
      if (opts.signal?.aborted) throw e;
      lastErr = e;
    }
  }
  throw new ShoalError('MANIFEST_FETCH_FAILED', `could not fetch ${url}: ${(lastErr as Error)?.message ?? lastErr}`);
}

export function backoffMs(attempt: number, baseMs = 250, maxMs = 10000): number {
  const exp = Math.min(maxMs, baseMs * 2 ** (attempt - 1));
  return Math.round(exp / 2 + Math.random() * (exp / 2));
}

async function hashExisting(file: string, hash: Hash): Promise<number> {
  let n = 0;
  for await (const c of createReadStream(file) as AsyncIterable<Buffer>) { hash.update(c); n += c.length; }
  return n;
}

export interface FileDownloadOptions {
  signal?: AbortSignal;
  retries: number;
  idleTimeoutMs: number;
  /** Called with the number of new bytes written (and once with bytes found on disk, as resumed). */
  onBytes?: (n: number, resumed: boolean) => void;
}

/**
 * Downloads url into dest (appending to what is already there), verifying size and sha256.
 * On success the file is fsynced. On a hash mismatch the file is deleted and FILE_HASH_MISMATCH thrown.
 */
export async function downloadFile(url: string, dest: string, expect: { size: number; sha256: string }, opts: FileDownloadOptions): Promise<void> {
  let hash = createHash('sha256');
  let have = 0;
  if (existsSync(dest)) {
    const st = await fsp.stat(dest);
    if (st.size > expect.size) {
      await fsp.rm(dest, { force: true });
    } else {
      have = await hashExisting(dest, hash);
      if (have > 0) opts.onBytes?.(have, true);
    }
  }
  let attempt = 0;
  let lastErr: unknown = null;
  while (have < expect.size || (have === 0 && expect.size === 0 && !existsSync(dest))) {
    if (opts.signal?.aborted) throw opts.signal.reason ?? new ShoalError('CANCELLED');
    if (attempt > opts.retries) {
      throw new ShoalError('DOWNLOAD_FAILED', `download of ${url} failed after ${opts.retries + 1} attempts at byte ${have} of ${expect.size}: ${(lastErr as Error)?.message ?? lastErr}`);
    }
    if (attempt > 0) await sleep(backoffMs(attempt), undefined, { signal: opts.signal });
    attempt++;
    if (expect.size === 0) { await fsp.writeFile(dest, ''); break; }
    let res: http.IncomingMessage;
    try {
      res = await get(url, have > 0 ? { range: `bytes=${have}-` } : {}, opts.signal, opts.idleTimeoutMs);
    } catch (e) {
      if (opts.signal?.aborted) throw e;
      lastErr = e;
      continue;
    }
    const status = res.statusCode ?? 0;
    if (status === 200 && have > 0) {
      // server ignored the Range header: start over
      await fsp.rm(dest, { force: true });
      hash = createHash('sha256');
      have = 0;
    } else if (status === 206) {
      const m = /^bytes (\d+)-/.exec(String(res.headers['content-range'] ?? ''));
      if (!m || Number(m[1]) !== have) {
        res.destroy();
        lastErr = new Error(`unexpected Content-Range '${res.headers['content-range']}' for resume at ${have}`);
        await fsp.rm(dest, { force: true });
        hash = createHash('sha256');
        have = 0;
        continue;
      }
    } else if (status === 416) {
      res.resume();
      lastErr = new Error('HTTP 416 (range not satisfiable)');
      await fsp.rm(dest, { force: true });
      hash = createHash('sha256');
      have = 0;
      continue;
    } else if (status !== 200) {
      res.resume();
      lastErr = new Error(`HTTP ${status}`);
      if (status >= 400 && status < 500 && status !== 408 && status !== 429) {
        throw new ShoalError('DOWNLOAD_FAILED', `GET ${url} answered HTTP ${status}`);
      }
      continue;
    }
    const haveBefore = have;
    const fh = await fsp.open(dest, 'a');
    let streamErr: unknown = null;
    try {
      streamErr = await pumpToFile(res, fh, expect.size - have, (chunk) => {
        hash.update(chunk);
        have += chunk.length;
        opts.onBytes?.(chunk.length, false);
      }, url);
      await fh.sync();
    } finally {
      await fh.close().catch(() => {});
    }
    if (streamErr instanceof ShoalError) { await fsp.rm(dest, { force: true }); throw streamErr; }
    if (streamErr && opts.signal?.aborted) throw opts.signal.reason ?? streamErr;
    if (streamErr) lastErr = streamErr;
    if (have === expect.size) break;
    if (have > haveBefore) attempt = 1; // progress was made: keep retrying from the new offset
    if (!lastErr) lastErr = new Error(`connection closed at byte ${have} of ${expect.size}`);
  }
  const digest = hash.digest('hex');
  if (digest !== expect.sha256) {
    await fsp.rm(dest, { force: true });
    throw new ShoalError('FILE_HASH_MISMATCH', `sha256 of ${url} is ${digest}, the manifest says ${expect.sha256}`);
  }
}

const HIGH_WATER = 8 * 1024 * 1024;

/**
 * Writes a response body to an open file in arrival order. Unlike `for await`, chunks that
 * already reached this process are still written when the connection drops, so a resume
 * never fetches bytes the device had received. Resolves with the stream error (or null).
 */
function pumpToFile(res: http.IncomingMessage, fh: FileHandle, maxBytes: number, written: (c: Buffer) => void, url: string): Promise<unknown> {
  return new Promise((resolve) => {
    const queue: Buffer[] = [];
    let queued = 0;
    let received = 0;
    let writing = false;
    let ended = false;
    let error: unknown = null;
    let settled = false;
    const finish = () => {
      if (settled || writing || queue.length > 0 || !ended) return;
      settled = true;
      resolve(error);
    };
    const drain = async () => {
      if (writing) return;
      writing = true;
      try {
        while (queue.length > 0) {
          const c = queue.shift()!;
          queued -= c.length;
          await fh.write(c);
          written(c);
          if (queued < HIGH_WATER / 2 && res.isPaused() && !ended) res.resume();
        }
      } catch (e) {
        error = error ?? e;
        queue.length = 0;
        ended = true;
        res.destroy();
      }
      writing = false;
      finish();
    };
    const fail = (e: unknown) => { error = error ?? e; ended = true; finish(); };
    res.on('data', (c: Buffer) => {
      if (ended) return;
      received += c.length;
      if (received > maxBytes) {
        fail(new ShoalError('FILE_SIZE_MISMATCH', `${url} sends more bytes than the manifest's size`));
        res.destroy();
        return;
      }
      queue.push(c);
      queued += c.length;
      if (queued > HIGH_WATER) res.pause();
      void drain();
    });
    res.on('end', () => { ended = true; finish(); });
    res.on('aborted', () => fail(new Error('connection aborted')));
    res.on('error', (e) => fail(e));
    res.on('close', () => { if (!res.complete) fail(new Error('connection closed before the end of the body')); else { ended = true; finish(); } });
  });
}
