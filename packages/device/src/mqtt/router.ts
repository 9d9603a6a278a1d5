// Turns raw `cmd` payloads into operations and replies. Transport-agnostic: the
// MQTT agent hands in payloads and a publish function. Every malformed input
// becomes an error reply (when a reply topic can be recovered) or a
// `request.rejected` event; nothing here throws to the caller.
import { z } from 'zod';
import {
  MAX_PAYLOAD_BYTES, OPS, OP_ARGS, Request, formatIssues, type Op, type OpArgs, type Reply, type GenerateChunk, type EventType, isValidReplyTopic,
} from '@shoal/protocol';
import { toErrorInfo } from '../errors.js';
import { Lru } from './lru.js';
import { ShoalError, type DeviceErrorCode } from '@shoal/common';

export interface OpContext {
  id: string;
  deadline: number;
  signal: AbortSignal;
  /** Streams a chunk reply (generate). */
  chunk(c: GenerateChunk): void;
}

export type OpHandler<K extends Op> = (args: OpArgs[K], ctx: OpContext) => Promise<unknown>;
export type OpHandlers = { [K in Op]: OpHandler<K> };

export interface RouterIo {
  publish(topic: string, reply: Reply): void;
  event(type: EventType, data: Record<string, unknown>): void;
  log: { warn(obj: object, msg: string): void; debug(obj: object, msg: string): void };
}

interface Entry { replyTo: string; final: Reply | null; controller: AbortController }

const LOOSE = z.object({ id: z.string().min(1).max(128), replyTo: z.string() }).loose();

export class RequestRouter {
  private recent: Lru<string, Entry>;
  accepting = true;
  constructor(private readonly deviceId: string, private readonly handlers: OpHandlers, private readonly io: RouterIo,
              private readonly defaultDeadlineMs: number, recentIds = 1024) {
    this.recent = new Lru(recentIds);
  }

  /** Aborts a running request (cancel op). */
  cancel(requestId: string): boolean {
    const e = this.recent.get(requestId);
    if (!e || e.final) return false;
    e.controller.abort(new ShoalError('CANCELLED', `request ${requestId} was cancelled`));
    return true;
  }

  private reject(code: DeviceErrorCode, message: string, raw: unknown, size: number): void {
    // try to recover an address for the error reply
    const loose = LOOSE.safeParse(raw);
    if (loose.success && isValidReplyTopic(loose.data.replyTo)) {
      this.io.publish(loose.data.replyTo, { v: 1, id: loose.data.id, deviceId: this.deviceId, seq: 0, done: true, ok: false, error: { code, message } });
    } else {
      this.io.event('request.rejected', { code, message, bytes: size });
    }
    this.io.log.warn({ code, bytes: size }, `rejected request: ${message}`);
  }

  handle(payload: Buffer): void {
    const size = payload.byteLength;
    let raw: unknown;
    if (size > MAX_PAYLOAD_BYTES) {
      // still try to find where to send the error (bounded: never parse more than 4x the limit)
      try { raw = size <= 4 * MAX_PAYLOAD_BYTES ? JSON.parse(payload.toString('utf8')) : null; } catch { raw = null; }
      return this.reject('PAYLOAD_TOO_LARGE', `request is ${size} bytes; the limit is ${MAX_PAYLOAD_BYTES}`, raw, size);
    }
    try {
      raw = JSON.parse(payload.toString('utf8'));
    } catch (e) {
      return this.reject('INVALID_JSON', `request is not JSON: ${(e as Error).message}`, null, size);
    }
    if (raw && typeof raw === 'object' && !Array.isArray(raw)) {
      const op = (raw as { op?: unknown }).op;
      if (typeof op === 'string' && !(OPS as readonly string[]).includes(op)) {
        return this.reject('UNKNOWN_OP', `unknown op '${op.slice(0, 64)}'; known ops: ${OPS.join(', ')}`, raw, size);
      }
    }
    const parsed = Request.safeParse(raw);
    if (!parsed.success) return this.reject('INVALID_MESSAGE', `invalid request: ${formatIssues(parsed.error)}`, raw, size);
    const req = parsed.data;
    if (!isValidReplyTopic(req.replyTo)) {
      return this.reject('INVALID_REPLY_TO', `replyTo '${req.replyTo.slice(0, 100)}' is not allowed (must be under shoal/v1/ outside devices/, no wildcards)`, null, size);
    }
    // duplicates: executed once; a repeat gets the cached final reply (or nothing while still running)
    const seen = this.recent.get(req.id);
    if (seen) {
      if (seen.final) this.io.publish(seen.replyTo, seen.final);
      this.io.log.debug({ id: req.id }, 'duplicate request id');
      return;
    }
    const entry: Entry = { replyTo: req.replyTo, final: null, controller: new AbortController() };
    this.recent.set(req.id, entry);
    let seq = 0;
    const send = (r: Omit<Reply, 'v' | 'id' | 'seq' | 'deviceId'>) => {
      const msg: Reply = { v: 1, id: req.id, deviceId: this.deviceId, seq: seq++, ...r };
      if (msg.done) entry.final = msg;
      this.io.publish(req.replyTo, msg);
    };
    const fail = (code: DeviceErrorCode, message: string) => send({ done: true, ok: false, error: { code, message } });
    if (!this.accepting) return fail('SHUTTING_DOWN', 'the daemon is shutting down');
    const deadline = req.deadline ?? Date.now() + this.defaultDeadlineMs;
    if (deadline <= Date.now()) return fail('DEADLINE_EXCEEDED', `request ${req.id} arrived after its deadline (${new Date(deadline).toISOString()})`);
    const schema = OP_ARGS[req.op] as z.ZodType;
    const args = schema.safeParse(req.args);
    if (!args.success) return fail('INVALID_ARGS', `invalid args for ${req.op}: ${formatIssues(args.error)}`);
    const ctx: OpContext = {
      id: req.id, deadline, signal: entry.controller.signal,
      chunk: (c) => { if (!entry.final) send({ done: false, ok: true, chunk: c }); },
    };
    const handler = this.handlers[req.op] as OpHandler<Op>;
    Promise.resolve()
      .then(() => handler(args.data as never, ctx))
      .then((result) => send({ done: true, ok: true, result }),
            (err) => { const info = toErrorInfo(err); fail(info.code, info.message); });
  }
}
