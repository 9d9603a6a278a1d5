// Local OpenAI-compatible HTTP API (node:http, loopback by default):
//   POST /v1/chat/completions, POST /v1/completions (stream via SSE or not),
//   GET /v1/models, GET /healthz, GET /metrics.
// A client that disconnects aborts its request (AbortSignal into the engine).
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { ChatMessage, MAX_PROMPT_CHARS, formatIssues, type GenerateResult } from '@shoal/protocol';
import { toErrorInfo } from '../errors.js';
import { PRIORITY_LOCAL, type Scheduler, type GenerateInput } from '../scheduler.js';
import type { ServingModel } from '../model/loader.js';
import type { DeviceMetrics } from '../metrics.js';
import type { Logger } from '@shoal/common';
import { ShoalError } from '@shoal/common';

const MAX_BODY = 1024 * 1024;

const Common = {
  model: z.string().optional(),
  max_tokens: z.number().int().min(1).max(8192).optional(),
  max_completion_tokens: z.number().int().min(1).max(8192).optional(),
  temperature: z.number().min(0).max(5).optional(),
  top_p: z.number().gt(0).max(1).optional(),
  top_k: z.number().int().min(0).optional(),
  seed: z.number().int().nonnegative().optional(),
  stream: z.boolean().optional(),
  user: z.string().optional(),
  n: z.literal(1).optional(),
};
const ChatBody = z.object({ ...Common, messages: z.array(ChatMessage).min(1).max(256) });
const CompletionBody = z.object({ ...Common, prompt: z.string().max(MAX_PROMPT_CHARS) });

const STATUS: Record<string, number> = {
  INVALID_JSON: 400, INVALID_MESSAGE: 400, INVALID_ARGS: 400, PAYLOAD_TOO_LARGE: 413, NOT_FOUND: 404,
  QUEUE_FULL: 429, METHOD_NOT_ALLOWED: 405, NO_ACTIVE_MODEL: 503, SHUTTING_DOWN: 503, DEADLINE_EXCEEDED: 504, CANCELLED: 499,
};

export interface HttpApiDeps {
  scheduler: Scheduler;
  models: Pick<ServingModel, 'current'>;
  metrics: DeviceMetrics;
  log: Logger;
  defaultDeadlineMs: number;
  healthy(): { ok: boolean; detail: Record<string, unknown> };
}

export class HttpApi {
  private server: http.Server;
  private sockets = new Set<import('node:net').Socket>();
  constructor(private readonly d: HttpApiDeps) {
    this.server = http.createServer((req, res) => {
      this.route(req, res).catch((e) => this.sendError(res, e));
    });
    this.server.on('connection', (s) => { this.sockets.add(s); s.on('close', () => this.sockets.delete(s)); });
  }

  listen(port: number, host: string): Promise<AddressInfo> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(port, host, () => { this.server.off('error', reject); resolve(this.server.address() as AddressInfo); });
    });
  }

  /** Stops accepting connections; in-flight responses finish (sockets are closed after `graceMs`). */
  async close(graceMs = 0): Promise<void> {
    await new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      this.server.closeIdleConnections();
      setTimeout(() => { for (const s of this.sockets) s.destroy(); }, graceMs).unref();
    });
  }

  private json(res: http.ServerResponse, status: number, body: unknown): void {
    const data = JSON.stringify(body);
    res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
    res.end(data);
  }

  private sendError(res: http.ServerResponse, err: unknown): void {
    const info = toErrorInfo(err);
    if (res.headersSent) {
      if (!res.writableEnded) { res.write(`data: ${JSON.stringify({ error: { message: info.message, code: info.code } })}\n\n`); res.end(); }
      return;
    }
    const status = STATUS[info.code] ?? 500;
    this.json(res, status, { error: { message: info.message, type: status < 500 ? 'invalid_request_error' : 'server_error', code: info.code } });
  }

  private async readBody(req: http.IncomingMessage): Promise<unknown> {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of req as AsyncIterable<Buffer>) {
      n += c.length;
      if (n > MAX_BODY) throw new ShoalError('PAYLOAD_TOO_LARGE', `request body exceeds ${MAX_BODY} bytes`);
      chunks.push(c);
    }
    try { return JSON.parse(Buffer.concat(chunks).toString('utf8')); } catch (e) {
      throw new ShoalError('INVALID_JSON', `request body is not JSON: ${(e as Error).message}`);
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    if (req.method === 'GET' && p === '/healthz') {
      const h = this.d.healthy();
      return this.json(res, h.ok ? 200 : 503, { status: h.ok ? 'ok' : 'unavailable', ...h.detail });
    }
    if (req.method === 'GET' && p === '/metrics') {
      this.d.metrics.queueDepth.set(this.d.scheduler.depth);
      this.d.metrics.refresh();
      const body = await this.d.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': this.d.metrics.registry.contentType });
      res.end(body);
      return;
    }
    if (req.method === 'GET' && p === '/v1/models') {
      const cur = this.d.models.current;
      return this.json(res, 200, {
        object: 'list',
        data: cur ? [{ id: cur.ref.name, object: 'model', created: 0, owned_by: 'shoal', version: cur.ref.version }] : [],
      });
    }
    if (req.method === 'POST' && (p === '/v1/chat/completions' || p === '/v1/completions')) {
      return this.completions(req, res, p === '/v1/chat/completions');
    }
    if (['/healthz', '/metrics', '/v1/models', '/v1/chat/completions', '/v1/completions'].includes(p)) {
      throw new ShoalError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${p}`);
    }
    throw new ShoalError('NOT_FOUND', `no route ${req.method} ${p}`);
  }

  private async completions(req: http.IncomingMessage, res: http.ServerResponse, chat: boolean): Promise<void> {
    const raw = await this.readBody(req);
    const parsed = (chat ? ChatBody : CompletionBody).safeParse(raw);
    if (!parsed.success) throw new ShoalError('INVALID_ARGS', `invalid request body: ${formatIssues(parsed.error)}`);
    const b = parsed.data as z.infer<typeof ChatBody> & z.infer<typeof CompletionBody>;
    const input: GenerateInput = chat ? { messages: b.messages } : { prompt: b.prompt };
    const maxTokens = b.max_completion_tokens ?? b.max_tokens;
    if (maxTokens !== undefined) input.maxTokens = maxTokens;
    if (b.temperature !== undefined) input.temperature = b.temperature;
    if (b.top_p !== undefined) input.topP = b.top_p;
    if (b.top_k !== undefined) input.topK = b.top_k;
    if (b.seed !== undefined) input.seed = b.seed;
    const id = `${chat ? 'chatcmpl' : 'cmpl'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = this.d.models.current?.ref.name ?? 'none';
    // client gone → abort
    const ctl = new AbortController();
    res.on('close', () => { if (!res.writableFinished) ctl.abort(new ShoalError('CANCELLED', `HTTP client of ${id} disconnected`)); });
    const stream = b.stream === true;
    let started = false;
    const startStream = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      if (chat) sse(res, { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] });
    };
    const result: GenerateResult = await this.d.scheduler.submit({
      id, source: 'http', priority: PRIORITY_LOCAL, input, deadline: Date.now() + this.d.defaultDeadlineMs, signal: ctl.signal,
      onChunk: stream ? (text) => {
        startStream();
        sse(res, chat
          ? { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { content: text }, finish_reason: null }] }
          : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text, finish_reason: null }] });
      } : undefined,
    });
    const finish = result.stopReason === 'eos' ? 'stop' : 'length';
    const usage = { prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, total_tokens: result.usage.totalTokens };
    if (stream) {
      startStream();
      sse(res, chat
        ? { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: {}, finish_reason: finish }], usage, timings: result.timings }
        : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text: '', finish_reason: finish }], usage, timings: result.timings });
      res.write('data: [DONE]\n\n');
      res.end();
      return;
    }
    this.json(res, 200, chat
      ? { id, object: 'chat.completion', created, model: modelName, choices: [{ index: 0, message: { role: 'assistant', content: result.text }, finish_reason: finish }], usage, timings: result.timings }
      : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text: result.text, finish_reason: finish }], usage, timings: result.timings });
  }
}

function sse(res: http.ServerResponse, obj: unknown): void {
  if (!res.writableEnded) res.write(`data: ${JSON.stringify(obj)}\n\n`);
}
