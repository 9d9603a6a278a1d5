// Local OpenAI-compatible HTTP API (node:http, loopback by default):
//   POST /v1/chat/completions, POST /v1/completions (stream via SSE or not),
//   GET /v1/models, GET /healthz, GET /metrics.
// A client that disconnects aborts its request (AbortSignal into the engine).
import http from 'node:http';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import type { GenerateResult, TokenLogprob } from '@shoal/protocol';
import { toErrorInfo } from '../errors.js';
import { OpenAIError, contextLengthExceeded, fromDeviceCode, modelNotFound } from './openai-errors.js';
import { parseChatRequest, parseCompletionRequest, type ParsedRequest } from './openai-request.js';
import { parseResponsesRequest, ResponsesWriter } from './responses.js';
import { PRIORITY_LOCAL, type Scheduler, type GenerateInput } from '../scheduler.js';
import type { ServingModel } from '../model/loader.js';
import type { DeviceMetrics } from '../metrics.js';
import type { Logger } from '@shoal/common';
import { ShoalError } from '@shoal/common';

const MAX_BODY = 1024 * 1024;
export interface HttpApiDeps {
  scheduler: Scheduler;
  models: Pick<ServingModel, 'current' | 'contextSizeFor'>;
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

  /** Any error → OpenAI's error shape with the status the SDKs act on (never a 5xx for a client's mistake). */
  private toOpenAI(err: unknown): OpenAIError {
    if (err instanceof OpenAIError) return err;
    const info = toErrorInfo(err);
    const d = ((err as ShoalError).details ?? {}) as Record<string, unknown>;
    if (info.code === 'CONTEXT_LENGTH_EXCEEDED')
      return contextLengthExceeded(Number(d.promptTokens ?? 0), Number(d.maxTokens ?? 0), Number(d.contextSize ?? 0), {
        ...(typeof d.promptParam === 'string' ? { promptParam: d.promptParam } : {}),
        ...(typeof d.maxTokensParam === 'string' ? { maxTokensParam: d.maxTokensParam } : {}),
      });
    const e = fromDeviceCode(info.code, info.message, { retryAfterSec: this.retryAfterSec() });
    if (info.code === 'INVALID_ARGS' && typeof d.param === 'string') return new OpenAIError(400, info.message, 'invalid_request_error', 'invalid_value', d.param);
    return e;
  }

  /** Seconds until a queue slot is likely free: queue depth × the last request's duration, at least 1. */
  private retryAfterSec(): number {
    return Math.max(1, Math.ceil((this.d.scheduler.depth + 1) * (this.lastRequestMs / 1000)));
  }
  private lastRequestMs = 1000;

  private sendError(res: http.ServerResponse, err: unknown): void {
    const e = this.toOpenAI(err);
    if (e.status >= 500) this.d.log.warn({ code: e.code, err: e.message }, 'request failed');
    if (res.headersSent) {
      if (!res.writableEnded) { res.write(`data: ${JSON.stringify(e.body())}\n\n`); res.end(); }
      return;
    }
    const data = JSON.stringify(e.body());
    res.writeHead(e.status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...e.headers });
    res.end(data);
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
      throw new OpenAIError(400, `We could not parse the JSON body of your request: ${(e as Error).message}`, 'invalid_request_error', 'invalid_json');
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
      return this.json(res, 200, { object: 'list', data: cur ? [this.modelObject()] : [] });
    }
    if (req.method === 'GET' && p.startsWith('/v1/models/')) {
      const id = decodeURIComponent(p.slice('/v1/models/'.length));
      if (!this.modelMatches(id)) throw modelNotFound(id, this.modelIds());
      return this.json(res, 200, this.modelObject());
    }
    if (req.method === 'POST' && p === '/v1/chat/completions') return this.serve(req, res, 'chat');
    if (req.method === 'POST' && p === '/v1/completions') return this.serve(req, res, 'completion');
    if (req.method === 'POST' && p === '/v1/responses') return this.serve(req, res, 'responses');
    if (['/healthz', '/metrics', '/v1/models', '/v1/chat/completions', '/v1/completions', '/v1/responses'].includes(p)) {
      throw new ShoalError('METHOD_NOT_ALLOWED', `${req.method} is not allowed on ${p}`);
    }
    throw new ShoalError('NOT_FOUND', `no route ${req.method} ${p}`);
  }

  private modelObject(): Record<string, unknown> {
    const cur = this.d.models.current!;
    return { id: cur.ref.name, object: 'model', created: 0, owned_by: 'shoal', version: cur.ref.version,
      context_length: this.d.models.contextSizeFor(cur.model) };
  }

  /** The active model answers to its name and to name@version. */
  private modelIds(): string[] {
    const cur = this.d.models.current;
    return cur ? [cur.ref.name, `${cur.ref.name}@${cur.ref.version}`] : [];
  }
  private modelMatches(id: string): boolean { return this.modelIds().includes(id); }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse, kind: 'chat' | 'completion' | 'responses'): Promise<void> {
    const raw = await this.readBody(req);
    const parsed: ParsedRequest = kind === 'chat' ? parseChatRequest(raw) : kind === 'completion' ? parseCompletionRequest(raw) : parseResponsesRequest(raw);
    if (!this.d.models.current && !this.d.scheduler.swapping) throw new ShoalError('NO_ACTIVE_MODEL', 'no model is active on this device yet');
    if (this.d.models.current && parsed.model !== undefined && !this.modelMatches(parsed.model)) throw modelNotFound(parsed.model, this.modelIds());
    const input: GenerateInput = { ...parsed.options, promptParam: parsed.promptParam, maxTokensParam: parsed.maxTokensParam };
    if (parsed.messages) input.messages = parsed.messages; else input.prompt = parsed.prompt!;
    const chat = kind === 'chat';
    const id = `${chat ? 'chatcmpl' : kind === 'completion' ? 'cmpl' : 'resp'}-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const modelName = this.d.models.current?.ref.name ?? parsed.model ?? 'none';
    // client gone → abort
    const ctl = new AbortController();
    res.on('close', () => { if (!res.writableFinished) ctl.abort(new ShoalError('CANCELLED', `HTTP client of ${id} disconnected`)); });
    const stream = parsed.stream;
    const t0 = Date.now();
    const chatLp = (lp: TokenLogprob[]) => lp.map((x) => ({
      token: x.text, logprob: x.logprob, bytes: [...Buffer.from(x.text, 'utf8')],
      top_logprobs: x.top.map((y) => ({ token: y.text, logprob: y.logprob, bytes: [...Buffer.from(y.text, 'utf8')] })),
    }));
    const complLp = (lp: TokenLogprob[]) => ({
      tokens: lp.map((x) => x.text), token_logprobs: lp.map((x) => x.logprob),
      top_logprobs: lp.map((x) => Object.fromEntries(x.top.map((y) => [y.text, y.logprob]))), text_offset: [] as number[],
    });
    const responses = kind === 'responses' ? new ResponsesWriter(id, created, modelName, parsed, stream ? (ev) => sseEvent(res, ev) : null) : null;
    let started = false;
    const startStream = () => {
      if (started) return;
      started = true;
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      if (chat) sse(res, { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, logprobs: null, finish_reason: null }] });
      responses?.start();
    };
    // Content text is streamed as it comes, each tool call once it is complete.
    const holdText = chat && !!parsed.options.tools?.length && parsed.options.toolChoice !== 'none';
    const result: GenerateResult = await this.d.scheduler.submit({
      id, source: 'http', priority: PRIORITY_LOCAL, input, deadline: Date.now() + this.d.defaultDeadlineMs, signal: ctl.signal,
      onChunk: stream ? (text, _n, lp) => {
        startStream();
        if (kind === 'responses') return responses!.delta(text);
        if (holdText && !text && !lp) return;
        sse(res, chat
          ? { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { content: text }, logprobs: lp ? { content: chatLp(lp) } : null, finish_reason: null }] }
          : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text, logprobs: lp ? complLp(lp) : null, finish_reason: null }] });
      } : undefined,
      // each call as it completes: id, type and name first, then the arguments, under the call's index (the SDKs merge by index)
      onToolCall: stream && (chat || kind === 'responses') ? (call) => {
        startStream();
        if (kind === 'responses') return responses!.toolCall(call);
        const chunk = (tc: Record<string, unknown>) => sse(res, { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: { tool_calls: [tc] }, logprobs: null, finish_reason: null }] });
        chunk({ index: call.index, id: call.id, type: 'function', function: { name: call.name, arguments: '' } });
        chunk({ index: call.index, function: { arguments: call.arguments } });
      } : undefined,
    });
    this.lastRequestMs = Date.now() - t0;
    const finish = result.stopReason === 'tool_calls' ? 'tool_calls' : result.stopReason === 'eos' || result.stopReason === 'stop' ? 'stop' : 'length';
    const usage = {
      prompt_tokens: result.usage.promptTokens, completion_tokens: result.usage.completionTokens, total_tokens: result.usage.totalTokens,
      prompt_tokens_details: { cached_tokens: result.usage.cachedTokens ?? 0 },
    };
    const toolCalls = (result.toolCalls ?? []).map((c, index) => ({ index, id: c.id, type: 'function' as const, function: { name: c.name, arguments: c.arguments } }));
    if (kind === 'responses') {
      if (stream) { startStream(); responses!.finish(result); res.end(); return; }
      return this.json(res, 200, responses!.finish(result));
    }
    if (stream) {
      startStream();
      sse(res, chat
        ? { id, object: 'chat.completion.chunk', created, model: modelName, choices: [{ index: 0, delta: {}, logprobs: null, finish_reason: finish }], usage, timings: result.timings }
        : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text: '', logprobs: null, finish_reason: finish }], usage, timings: result.timings });
      // usage: in its own chunk with empty choices when asked for (stream_options.include_usage), as OpenAI does
      if (parsed.includeUsage) sse(res, { id, object: chat ? 'chat.completion.chunk' : 'text_completion', created, model: modelName, choices: [], usage });
      res.write('data: [DONE]\n\n');
      res.end();
      return;
    }
    const lp = result.logprobs;
    this.json(res, 200, chat
      ? {
          id, object: 'chat.completion', created, model: modelName,
          choices: [{
            index: 0,
            message: { role: 'assistant', content: toolCalls.length && !result.text ? null : result.text, refusal: null, ...(toolCalls.length ? { tool_calls: toolCalls.map(({ index: _i, ...c }) => c) } : {}) },
            logprobs: lp ? { content: chatLp(lp) } : null, finish_reason: finish,
          }],
          usage, timings: result.timings,
        }
      : { id, object: 'text_completion', created, model: modelName, choices: [{ index: 0, text: result.text, logprobs: lp ? complLp(lp) : null, finish_reason: finish }], usage, timings: result.timings });
  }
}

function sse(res: http.ServerResponse, obj: unknown): void {
  if (!res.writableEnded) res.write(`data: ${JSON.stringify(obj)}\n\n`);
}

/** A Responses API event: `event: <type>` + data. */
function sseEvent(res: http.ServerResponse, ev: { type: string }): void {
  if (!res.writableEnded) res.write(`event: ${ev.type}\ndata: ${JSON.stringify(ev)}\n\n`);
}
