// Payload schemas (zod) and types of the Shoal MQTT contract, version 1.
// Every payload is a UTF-8 JSON object carrying `v: 1`. Receivers validate with
// these schemas and answer a bad request with an error reply (never crash).
import { z } from 'zod';

export const PROTOCOL_VERSION = 1 as const;
/** Largest accepted payload on any topic, in bytes (requests larger than this are rejected). */
export const MAX_PAYLOAD_BYTES = 256 * 1024;
/** Largest accepted `desired` document (bytes): a few hundred bytes in practice. */
export const MAX_DESIRED_BYTES = 16 * 1024;
/**
 * Latest accepted request deadline, relative to now. Node timers hold at most 2^31-1 ms
 * (about 24.8 days; a longer delay fires at once), and no request should wait a week.
 */
export const MAX_DEADLINE_AHEAD_MS = 7 * 24 * 3600 * 1000;
/** Largest generate prompt (characters). */
export const MAX_PROMPT_CHARS = 64 * 1024;

const v = z.literal(1);
const name = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'name: [A-Za-z0-9_.-], 1-128 chars');
const version = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/, 'version: [A-Za-z0-9_.+-], 1-64 chars');
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'sha256: 64 lowercase hex chars');
const epochMs = z.number().int().nonnegative();

export const ErrorInfo = z.object({ code: z.string().min(1), message: z.string() });
export type ErrorInfo = z.infer<typeof ErrorInfo>;

export const ModelRef = z.object({ name, version });
export type ModelRef = z.infer<typeof ModelRef>;

// ---------------------------------------------------------------- desired
export const DesiredModel = z.object({
  name,
  version,
  /** http(s) URL of manifest.json; files are fetched relative to it. */
  manifestUrl: z.string().url().refine((u) => /^https?:\/\//.test(u), 'manifestUrl must be http(s)'),
  /** sha256 of the manifest bytes as served. */
  manifestSha256: sha256,
});
export type DesiredModel = z.infer<typeof DesiredModel>;

export const Desired = z.object({
  v,
  model: DesiredModel.nullable(),
  rolloutId: z.string().max(128).optional(),
  ts: epochMs,
  /**
   * Epoch ms until which the device retries transient install failures (download errors,
   * a full disk) with jittered backoff; the rollout sets it to the wave's timeout. Absent:
   * the device's own download.retryWindowSec.
   */
  retryUntil: epochMs.optional(),
});
export type Desired = z.infer<typeof Desired>;

// ---------------------------------------------------------------- state
export const PHASES = ['idle', 'downloading', 'verifying', 'health-check', 'activating', 'active', 'failed', 'rolled-back'] as const;
export const Phase = z.enum(PHASES);
export type Phase = z.infer<typeof Phase>;

export const StoreEntry = z.object({
  name,
  version,
  bytes: z.number().int().nonnegative(),
  active: z.boolean(),
  previous: z.boolean(),
});
export type StoreEntry = z.infer<typeof StoreEntry>;

export const State = z.object({
  v,
  deviceId: z.string(),
  online: z.boolean(),
  ts: epochMs,
  group: z.string().optional(),
  labels: z.record(z.string(), z.string()),
  model: ModelRef.nullable(),
  previous: ModelRef.nullable(),
  phase: Phase,
  desired: DesiredModel.nullable(),
  rolloutId: z.string().optional(),
  store: z.array(StoreEntry),
  engine: z.object({ backend: z.string(), isa: z.string(), threads: z.number().int() }).nullable(),
  lastError: ErrorInfo.optional(),
  /**
   * Revision of this state document: strictly increasing per device, across restarts
   * (persisted). Consumers ignore a state whose rev is below the last one they applied.
   */
  rev: z.number().int().nonnegative().optional(),
  /**
   * rev reserved when the current MQTT connection was opened; the Last Will of that
   * connection carries the same value, so a late will from an older connection is ignored.
   */
  conn: z.number().int().nonnegative().optional(),
  telemetryIntervalSec: z.number().positive().optional(),
  /** MQTT protocol version in use: 4 (3.1.1) or 5. */
  mqttVersion: z.union([z.literal(4), z.literal(5)]).optional(),
  agentVersion: z.string().optional(),
});
export type State = z.infer<typeof State>;

// ---------------------------------------------------------------- telemetry
export const InferenceStats = z.object({
  requests: z.number().int().nonnegative(),      // completed since start
  errors: z.number().int().nonnegative(),
  rejected: z.number().int().nonnegative(),      // queue full / deadline
  queueDepth: z.number().int().nonnegative(),
  active: z.number().int().nonnegative(),
  ttftMs: z.number().nonnegative().nullable(),   // last request
  decodeTokPerSec: z.number().nonnegative().nullable(),
  /** Prefix cache: KV slots, their memory and what they saved. */
  kvCache: z.object({
    slots: z.number().int().nonnegative(), inUse: z.number().int().nonnegative(), bytesPerSlot: z.number().nonnegative(),
    hits: z.number().int().nonnegative(), reusedTokens: z.number().int().nonnegative(), evaluatedTokens: z.number().int().nonnegative(),
    evictions: z.number().int().nonnegative(),
  }).optional(),
});
export type InferenceStats = z.infer<typeof InferenceStats>;

export const PowerRail = z.object({
  name: z.string(),
  voltageMv: z.number().optional(),
  currentMa: z.number().optional(),
  powerMw: z.number().optional(),
});
export type PowerRail = z.infer<typeof PowerRail>;

export const JetsonTelemetry = z.object({
  gpuLoadPct: z.number().optional(),
  power: z.array(PowerRail).optional(),
  thermal: z.array(z.object({ zone: z.string(), type: z.string(), tempC: z.number() })).optional(),
  emc: z.object({ rateHz: z.number().optional(), loadPct: z.number().optional() }).optional(),
});
export type JetsonTelemetry = z.infer<typeof JetsonTelemetry>;

export const Telemetry = z.object({
  v,
  deviceId: z.string(),
  ts: epochMs,
  uptimeSec: z.number().nonnegative(),
  cpu: z.object({ loadPct: z.number(), perCore: z.array(z.number()) }).optional(),
  memory: z.object({ totalBytes: z.number(), usedBytes: z.number(), availableBytes: z.number() }).optional(),
  swap: z.object({ totalBytes: z.number(), usedBytes: z.number() }).optional(),
  disk: z.object({ path: z.string(), totalBytes: z.number(), freeBytes: z.number() }).optional(),
  temperatures: z.record(z.string(), z.number()).optional(),
  jetson: JetsonTelemetry.optional(),
  /** Sources read this round, e.g. "si.cpu", "jetson.gpu", "jetson.ina3221". */
  sources: z.array(z.string()),
  /** Sources looked for and absent or unreadable. */
  missing: z.array(z.string()),
  inference: InferenceStats,
});
export type Telemetry = z.infer<typeof Telemetry>;

// ---------------------------------------------------------------- events
export const EVENT_TYPES = [
  'ota.started', 'ota.progress', 'ota.downloaded', 'ota.verified', 'ota.health-check',
  'ota.activated', 'ota.failed', 'ota.rolled-back', 'ota.retrying', 'model.activated', 'model.removed',
  'model.gc', 'device.started', 'device.stopping', 'request.rejected', 'store.recovered',
] as const;
export const EventType = z.enum(EVENT_TYPES);
export type EventType = z.infer<typeof EventType>;

export const Event = z.object({
  v,
  id: z.string().uuid(),
  deviceId: z.string(),
  ts: epochMs,
  type: EventType,
  data: z.record(z.string(), z.unknown()),
  /**
   * Position in the device's event stream: 1, 2, 3, ... with no gap within one `stream`
   * (the outbox database's random id; a new one starts at 1 again). Lets consumers store
   * idempotently by (deviceId, stream, seq) and detect events that never arrived.
   */
  seq: z.number().int().positive().optional(),
  stream: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional(),
});
export type Event = z.infer<typeof Event>;

/** `data` of ota.progress events. */
export const OtaProgressData = z.object({
  name, version,
  phase: Phase,
  bytes: z.number().int().nonnegative(),
  totalBytes: z.number().int().nonnegative(),
  percent: z.number().min(0).max(100),
  rateBytesPerSec: z.number().nonnegative(),
  file: z.string().optional(),
});
export type OtaProgressData = z.infer<typeof OtaProgressData>;

// ---------------------------------------------------------------- requests
export const OPS = ['ping', 'info', 'generate', 'cancel', 'activate', 'rollback', 'remove', 'set-telemetry-interval'] as const;
export const Op = z.enum(OPS);
export type Op = z.infer<typeof Op>;

const TextPart = z.object({ type: z.literal('text'), text: z.string().max(MAX_PROMPT_CHARS) }).strict();
const ToolCall = z.object({
  id: z.string().min(1).max(128),
  type: z.literal('function'),
  function: z.object({ name: z.string().min(1).max(64), arguments: z.string().max(MAX_PROMPT_CHARS) }).strict(),
}).strict();
const MessageContent = z.union([z.string().max(MAX_PROMPT_CHARS), z.array(TextPart).max(64)]);
/** A chat message as in OpenAI's API: text parts, developer (= system), tool results, assistant tool calls. */
export const ChatMessage = z.discriminatedUnion('role', [
  z.object({ role: z.enum(['system', 'developer', 'user']), content: MessageContent, name: z.string().max(64).optional() }).strict(),
  z.object({
    role: z.literal('assistant'), content: MessageContent.nullable(), name: z.string().max(64).optional(),
    tool_calls: z.array(ToolCall).min(1).max(16).optional(),
  }).strict().refine((m) => m.content !== null || m.tool_calls !== undefined, 'content may be null only with tool_calls'),
  z.object({ role: z.literal('tool'), content: MessageContent, tool_call_id: z.string().min(1).max(128) }).strict(),
]);
const FunctionName = z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/);
const JsonSchemaObject = z.record(z.string(), z.unknown());
export const FunctionTool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: FunctionName, description: z.string().max(MAX_PROMPT_CHARS).optional(),
    parameters: JsonSchemaObject.optional(), strict: z.boolean().optional(),
  }).strict(),
}).strict();
export const ResponseFormat = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }).strict(),
  z.object({ type: z.literal('json_object') }).strict(),
  z.object({ type: z.literal('json_schema'), name: FunctionName, schema: JsonSchemaObject, strict: z.boolean() }).strict(),
]);
export const ToolChoice = z.union([z.enum(['auto', 'none', 'required']), z.object({ name: FunctionName }).strict()]);

export const GenerateArgs = z.object({
  /** Raw prompt, or chat messages (rendered with the model's chat template). Exactly one. */
  prompt: z.string().max(MAX_PROMPT_CHARS).optional(),
  messages: z.array(ChatMessage).min(1).max(256).optional(),
  maxTokens: z.number().int().min(1).max(8192).optional(),
  temperature: z.number().min(0).max(5).optional(),
  topK: z.number().int().min(0).optional(),
  topP: z.number().gt(0).max(1).optional(),
  minP: z.number().min(0).max(1).optional(),
  repeatPenalty: z.number().min(0.01).max(100).optional(),
  seed: z.number().int().nonnegative().optional(),
  /** OpenAI penalties on tokens generated so far. */
  presencePenalty: z.number().min(-2).max(2).optional(),
  frequencyPenalty: z.number().min(-2).max(2).optional(),
  /** Token id (as a string key) → bias in [-100, 100]. */
  logitBias: z.record(z.string().regex(/^\d{1,7}$/), z.number().min(-100).max(100)).optional(),
  /** Up to 4 strings; the text ends before the first one. */
  stop: z.array(z.string().min(1).max(256)).min(1).max(4).optional(),
  /** Report each token's logprob and topLogprobs alternatives. */
  logprobs: z.boolean().optional(),
  topLogprobs: z.number().int().min(0).max(20).optional(),
  /** Structured output by constrained decoding. */
  responseFormat: ResponseFormat.optional(),
  tools: z.array(FunctionTool).min(1).max(64).optional(),
  toolChoice: ToolChoice.optional(),
  /** false: at most one tool call per answer (default: several, each in toolCalls). */
  parallelToolCalls: z.boolean().optional(),
  /** Stream chunk replies (default true); false = one final reply with the whole text. */
  stream: z.boolean().optional(),
}).strict()
  .refine((a) => (a.prompt === undefined) !== (a.messages === undefined), 'exactly one of prompt or messages')
  .refine((a) => a.topLogprobs === undefined || a.logprobs === true, { message: 'topLogprobs needs logprobs: true', path: ['topLogprobs'] })
  .refine((a) => a.tools === undefined || a.messages !== undefined, { message: 'tools need messages', path: ['tools'] })
  .refine((a) => a.toolChoice === undefined || a.toolChoice === 'none' || a.toolChoice === 'auto' || a.tools !== undefined, { message: 'toolChoice needs tools', path: ['toolChoice'] })
  .refine((a) => typeof a.toolChoice !== 'object' || (a.tools ?? []).some((t) => t.function.name === (a.toolChoice as { name: string }).name),
    { message: 'toolChoice names no tool in tools', path: ['toolChoice'] });
export type GenerateArgs = z.infer<typeof GenerateArgs>;

export const OP_ARGS = {
  ping: z.object({}).strict(),
  info: z.object({}).strict(),
  generate: GenerateArgs,
  cancel: z.object({ requestId: z.string().min(1).max(128) }).strict(),
  activate: z.object({ name, version }).strict(),
  rollback: z.object({}).strict(),
  remove: z.object({ name, version }).strict(),
  'set-telemetry-interval': z.object({ seconds: z.number().min(1).max(86400) }).strict(),
} as const satisfies Record<Op, z.ZodType>;
export type OpArgs = { [K in Op]: z.infer<(typeof OP_ARGS)[K]> };

/** Request envelope, published to shoal/v1/devices/{id}/cmd. Identical on MQTT 3.1.1 and 5. */
export const Request = z.object({
  v,
  id: z.string().min(1).max(128),
  op: Op,
  args: z.record(z.string(), z.unknown()).default({}),
  /** Topic where replies go, e.g. shoal/v1/clients/{clientId}/replies. */
  replyTo: z.string().min(1).max(256),
  /** Epoch ms after which the device drops the request (error DEADLINE_EXCEEDED). */
  deadline: epochMs.optional(),
});
export type Request = z.infer<typeof Request>;

// ---------------------------------------------------------------- replies
export const Usage = z.object({
  promptTokens: z.number().int(), completionTokens: z.number().int(), totalTokens: z.number().int(),
  /** Prompt tokens found in the device's prefix cache (not evaluated again). */
  cachedTokens: z.number().int().nonnegative().optional(),
});
export type Usage = z.infer<typeof Usage>;
export const Timings = z.object({
  queueMs: z.number(), ttftMs: z.number().nullable(), totalMs: z.number(),
  prefillTokPerSec: z.number().nullable(), decodeTokPerSec: z.number().nullable(),
});
export type Timings = z.infer<typeof Timings>;

/** Final result of generate. */
export const TokenLogprob = z.object({
  token: z.number().int(), text: z.string(), logprob: z.number(),
  top: z.array(z.object({ token: z.number().int(), text: z.string(), logprob: z.number() }).strict()),
}).strict();
export type TokenLogprob = z.infer<typeof TokenLogprob>;

export const GenerateResult = z.object({
  /** Content text (stop strings and tool calls removed). */
  text: z.string(),
  /** eos, max_tokens or context_full; stop: a stop string; tool_calls: the answer is toolCalls. */
  stopReason: z.enum(['eos', 'max_tokens', 'aborted', 'context_full', 'stop', 'tool_calls']),
  toolCalls: z.array(z.object({ id: z.string(), name: z.string(), arguments: z.string() }).strict()).optional(),
  /** Per generated token, when logprobs was asked for. */
  logprobs: z.array(TokenLogprob).optional(),
  model: ModelRef,
  usage: Usage,
  timings: Timings,
});
export type GenerateResult = z.infer<typeof GenerateResult>;

/** A streamed piece of a generate reply: text, or (text '', tokens 0) one tool call as soon as it is complete. */
export const GenerateChunk = z.object({
  text: z.string(), tokens: z.number().int().nonnegative(), logprobs: z.array(TokenLogprob).optional(),
  /** index: its place in result.toolCalls (0, 1, ...) */
  toolCall: z.object({ index: z.number().int().nonnegative(), id: z.string(), name: z.string(), arguments: z.string() }).strict().optional(),
}).strict();
export type GenerateChunk = z.infer<typeof GenerateChunk>;

/**
 * Reply, published to the request's replyTo. seq starts at 0 and increases by 1 per message of one
 * request. Non-final messages carry `chunk`; the last has done:true and either ok:true + result
 * or ok:false + error.
 */
export const Reply = z.object({
  v,
  id: z.string(),
  deviceId: z.string().optional(),
  seq: z.number().int().nonnegative(),
  done: z.boolean(),
  ok: z.boolean(),
  result: z.unknown().optional(),
  chunk: GenerateChunk.optional(),
  error: ErrorInfo.optional(),
});
export type Reply = z.infer<typeof Reply>;

// ---------------------------------------------------------------- helpers
export type ParseResult<T> = { ok: true; value: T } | { ok: false; code: 'PAYLOAD_TOO_LARGE' | 'INVALID_JSON' | 'INVALID_MESSAGE'; message: string };

/** Parses a raw MQTT payload against a schema with the size limit and readable errors. */
export function parsePayload<S extends z.ZodType>(schema: S, payload: Uint8Array | string): ParseResult<z.infer<S>> {
  const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
  if (size > MAX_PAYLOAD_BYTES) {
    return { ok: false, code: 'PAYLOAD_TOO_LARGE', message: `payload is ${size} bytes; the limit is ${MAX_PAYLOAD_BYTES}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'));
  } catch (e) {
    return { ok: false, code: 'INVALID_JSON', message: `payload is not JSON: ${(e as Error).message}` };
  }
  const r = schema.safeParse(json);
  if (!r.success) return { ok: false, code: 'INVALID_MESSAGE', message: formatIssues(r.error) };
  return { ok: true, value: r.data };
}

export function formatIssues(err: z.ZodError): string {
  return err.issues.slice(0, 5).map((i) => `${i.path.length ? i.path.join('.') : '(root)'}: ${i.message}`).join('; ');
}

export function encode(msg: object): Buffer {
  return Buffer.from(JSON.stringify(msg));
}
