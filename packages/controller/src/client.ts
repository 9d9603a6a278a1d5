// HTTP client for the controller API, used by the `shoal fleet` commands.
// Connection: --api/--token, else SHOAL_API/SHOAL_TOKEN, else the file `shoal up` writes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { Manifest } from '@shoal/protocol';
import { ShoalError } from '@shoal/common';

export interface ApiConnection { api: string; token: string }

/** Where `shoal up` writes the connection settings of the fleet it started. */
export function upConnectionFile(): string {
  return process.env.SHOAL_CONNECTION ?? path.join(os.homedir(), '.shoal', 'connection.json');
}

export function resolveConnection(o: { api?: string; token?: string }): ApiConnection {
  let api = o.api ?? process.env.SHOAL_API;
  let token = o.token ?? process.env.SHOAL_TOKEN;
  if (!api || !token) {
    const f = upConnectionFile();
    if (fs.existsSync(f)) {
      try {
        const j = JSON.parse(fs.readFileSync(f, 'utf8')) as Partial<ApiConnection>;
        api ??= j.api;
        token ??= j.token;
      } catch (e) {
        throw new ShoalError('NO_API_CONFIG', `${f} is not valid JSON (${(e as Error).message}); delete it or pass --api and --token`);
      }
    }
  }
  if (!api || !token) {
    throw new ShoalError('NO_API_CONFIG', 'no controller to talk to: pass --api URL --token T, set SHOAL_API and SHOAL_TOKEN, or start a fleet with `shoal up`');
  }
  return { api: api.replace(/\/+$/, ''), token };
}

export class ControllerClient {
  constructor(readonly conn: ApiConnection) {}

  private async fetch(method: string, p: string, body?: unknown, extra: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetch(`${this.conn.api}${p}`, {
        method,
        headers: { Authorization: `Bearer ${this.conn.token}`, ...(body !== undefined && !(body instanceof Uint8Array) ? { 'Content-Type': 'application/json' } : {}) },
        body: body === undefined ? undefined : body instanceof Uint8Array ? body : JSON.stringify(body),
        ...extra,
      });
    } catch (e) {
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new ShoalError('API_UNREACHABLE', `cannot reach the controller at ${this.conn.api} (${cause?.code ?? cause?.message ?? (e as Error).message}); is \`shoal controller\` running?`);
    }
    if (!res.ok && !(res.headers.get('content-type') ?? '').includes('ndjson')) {
      const text = await res.text();
      let err: { code?: string; message?: string } | undefined;
      try { err = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error; } catch { /* not JSON */ }
      // keep the controller's stable code so scripts can branch on it
      throw Object.assign(new ShoalError('API_ERROR', err?.message ?? `HTTP ${res.status}: ${text.slice(0, 200)}`), { code: err?.code ?? 'API_ERROR', status: res.status });
    }
    return res;
  }

  async json<T = Record<string, unknown>>(method: string, p: string, body?: unknown): Promise<T> {
    const res = await this.fetch(method, p, body);
    return (await res.json()) as T;
  }

  /** POSTs and yields each NDJSON line of a streamed answer. */
  async *stream(p: string, body: unknown, signal?: AbortSignal): AsyncGenerator<Record<string, unknown>> {
    const res = await this.fetch('POST', p, body, { signal });
    if (!res.body) return;
    const decoder = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl).trim();
        buf = buf.slice(nl + 1);
        if (line) yield JSON.parse(line) as Record<string, unknown>;
      }
    }
    if (buf.trim()) yield JSON.parse(buf) as Record<string, unknown>;
  }

  /** Uploads a package directory (manifest, then every file, then commit). */
  async uploadPackage(dir: string, onBytes?: (sent: number, total: number, file: string) => void): Promise<Record<string, unknown>> {
    const manifestBytes = fs.readFileSync(path.join(dir, 'manifest.json'));
    const manifest = JSON.parse(manifestBytes.toString('utf8')) as Manifest;
    const begin = await this.json<{ uploadId: string }>('POST', '/api/packages/uploads', new Uint8Array(manifestBytes));
    const total = manifest.files.reduce((s, f) => s + f.size, 0);
    let sent = 0;
    for (const f of manifest.files) {
      const file = path.join(dir, f.path);
      const size = fs.statSync(file).size;
      const src = fs.createReadStream(file, { highWaterMark: 1 << 20 });
      const stream = Readable.from((async function* () {
        for await (const c of src as AsyncIterable<Buffer>) {
          sent += c.length;
          onBytes?.(sent, total, f.path);
          yield c;
        }
      })());
      const url = `/api/packages/uploads/${encodeURIComponent(begin.uploadId)}/files/${f.path.split('/').map(encodeURIComponent).join('/')}`;
      await this.fetch('PUT', url, undefined, {
        body: stream as unknown as RequestInit['body'], headers: { Authorization: `Bearer ${this.conn.token}`, 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
        duplex: 'half',
      } as RequestInit);
    }
    return this.json('POST', `/api/packages/uploads/${encodeURIComponent(begin.uploadId)}/commit`);
  }
}
