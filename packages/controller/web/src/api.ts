// The controller's JSON API (docs/controller.md) with the bearer token, and the live
// stream (/api/stream, Server-Sent Events framing read with fetch so the token
// travels in the Authorization header, never in a URL).

const TOKEN_KEY = 'shoal.token';

export function getToken(): string | null {
  return localStorage.getItem(TOKEN_KEY);
}
export function setToken(t: string | null): void {
  if (t) localStorage.setItem(TOKEN_KEY, t);
  else localStorage.removeItem(TOKEN_KEY);
}

/** Text chunks of a response body as they arrive. */
async function* textChunks(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const reader = body.getReader();
  const dec = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) { const tail = dec.decode(); if (tail) yield tail; return; }
    yield dec.decode(value, { stream: true });
  }
}

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) { super(message); }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const t = getToken();
  return { ...(t ? { Authorization: `Bearer ${t}` } : {}), ...extra };
}

export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const res = await fetch(path, {
    method,
    headers: headers(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const e = json?.error;
    throw new ApiError(res.status, e?.code ?? 'HTTP_' + res.status, e?.message ?? `${method} ${path}: HTTP ${res.status}`);
  }
  return json as T;
}

/** Reads newline-delimited JSON from a POST (the infer route). */
export async function* ndjson(path: string, body: unknown, signal: AbortSignal): AsyncGenerator<Record<string, any>> {
  const res = await fetch(path, { method: 'POST', headers: headers({ 'Content-Type': 'application/json' }), body: JSON.stringify(body), signal });
  if (!res.ok || !res.body) {
    const j = await res.json().catch(() => null);
    throw new ApiError(res.status, j?.error?.code ?? 'HTTP_' + res.status, j?.error?.message ?? `HTTP ${res.status}`);
  }
  let buf = '';
  for await (const value of textChunks(res.body)) {
    buf += value;
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl).trim();
      buf = buf.slice(nl + 1);
      if (line) yield JSON.parse(line);
    }
  }
  if (buf.trim()) yield JSON.parse(buf);
}

export type StreamHandler = (event: string, data: any) => void;

/**
 * One live connection to /api/stream. Reconnects with backoff; each (re)connect
 * starts with `hello` and a full `devices` list, so nothing is missed for long.
 */
export class LiveStream {
  private abort: AbortController | null = null;
  private stopped = false;
  private retryMs = 500;

  constructor(private device: string | null, private readonly onMessage: StreamHandler, private readonly onStatus: (s: 'live' | 'connecting' | 'error', detail?: string) => void) {}

  start(): void {
    this.stopped = false;
    void this.loop();
  }

  /** Switches the device whose telemetry is streamed (reconnects). */
  setDevice(device: string | null): void {
    if (device === this.device) return;
    this.device = device;
    this.abort?.abort();
  }

  stop(): void {
    this.stopped = true;
    this.abort?.abort();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      this.abort = new AbortController();
      this.onStatus('connecting');
      try {
        const q = this.device ? `?device=${encodeURIComponent(this.device)}` : '';
        const res = await fetch(`/api/stream${q}`, { headers: headers({ Accept: 'text/event-stream' }), signal: this.abort.signal });
        if (res.status === 401) { this.onStatus('error', 'unauthorized'); this.onMessage('unauthorized', null); return; }
        if (res.status === 404 && this.device) { this.onMessage('device-unknown', this.device); this.device = null; continue; }
        if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
        this.retryMs = 500;
        await this.read(res.body);
      } catch (e) {
        if (this.stopped) return;
        if ((e as Error).name !== 'AbortError') {
          this.onStatus('error', (e as Error).message);
          await new Promise((r) => setTimeout(r, this.retryMs));
          this.retryMs = Math.min(this.retryMs * 2, 10_000);
        }
      }
    }
  }

  private async read(body: ReadableStream<Uint8Array>): Promise<void> {
    let buf = '';
    for await (const value of textChunks(body)) {
      buf += value;
      let end: number;
      while ((end = buf.indexOf('\n\n')) >= 0) {
        const frame = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let event = 'message';
        let data = '';
        for (const line of frame.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (!data) continue; // heartbeat comment
        if (event === 'hello') this.onStatus('live');
        this.onMessage(event, JSON.parse(data));
      }
    }
    throw new Error('stream ended');
  }
}
