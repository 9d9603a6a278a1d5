// openai-request.ts — validates the bodies of POST /v1/chat/completions,
// /v1/completions and /v1/responses at the edge and turns them into one
// transport-free request (ServeOptions). Every rejection is a 400 naming the
// parameter as OpenAI does (`messages[1].content[0].type`), unknown arguments
// included; accepted-but-irrelevant ones (user, metadata, store, ...) pass.
import { z } from 'zod';
import type { ApiChatMessage, FunctionTool } from '@shoal/engine';
import { MAX_STOP_STRINGS, MAX_TOP_LOGPROBS, type ResponseFormat, type ServeOptions, type ToolChoice } from '@shoal/engine';
import { OpenAIError, badParam } from './openai-errors.js';

export const MAX_TEXT_CHARS = 256 * 1024;
const text = z.string().max(MAX_TEXT_CHARS);

const TextPart = z.object({ type: z.literal('text'), text }).passthrough();
const OtherPart = z.object({ type: z.string() }).passthrough();
const Content = z.union([text, z.array(z.union([TextPart, OtherPart])).max(256)]);
const ToolCallSchema = z.object({
  id: z.string().min(1).max(128),
  type: z.literal('function'),
  function: z.object({ name: z.string().min(1).max(64), arguments: z.string().max(MAX_TEXT_CHARS) }),
});
const Message = z.discriminatedUnion('role', [
  z.object({ role: z.literal('system'), content: Content, name: z.string().optional() }),
  z.object({ role: z.literal('developer'), content: Content, name: z.string().optional() }),
  z.object({ role: z.literal('user'), content: Content, name: z.string().optional() }),
  z.object({
    role: z.literal('assistant'), content: Content.nullable().optional(), name: z.string().optional(),
    tool_calls: z.array(ToolCallSchema).max(64).optional(), refusal: z.string().nullable().optional(),
  }),
  z.object({ role: z.literal('tool'), content: Content, tool_call_id: z.string().min(1).max(128) }),
]);

const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const JsonSchemaObject = z.record(z.string(), z.unknown());
const Tool = z.object({
  type: z.literal('function'),
  function: z.object({
    name: z.string().regex(FUNCTION_NAME, 'must be 1-64 characters of a-z, A-Z, 0-9, _ and -'),
    description: z.string().max(MAX_TEXT_CHARS).optional(),
    parameters: JsonSchemaObject.optional(),
    strict: z.boolean().nullable().optional(),
  }),
});
const ToolChoiceSchema = z.union([
  z.enum(['none', 'auto', 'required']),
  z.object({ type: z.literal('function'), function: z.object({ name: z.string() }) }),
]);
const ResponseFormatSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({
    type: z.literal('json_schema'),
    json_schema: z.object({
      name: z.string().regex(FUNCTION_NAME, 'must be 1-64 characters of a-z, A-Z, 0-9, _ and -'),
      description: z.string().optional(),
      schema: JsonSchemaObject.optional(),
      strict: z.boolean().nullable().optional(),
    }),
  }),
]);
const Stop = z.union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).max(MAX_STOP_STRINGS)]).nullable();
const LogitBias = z.record(z.string().regex(/^\d+$/, 'keys must be token ids'), z.number().min(-100).max(100)).refine((r) => Object.keys(r).length <= 1024, 'at most 1024 entries');

const Sampling = {
  /** Optional here (the active model is used); the SDKs always send it. */
  model: z.string().min(1).max(256).optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  top_k: z.number().int().min(0).max(1 << 20).optional(),
  min_p: z.number().min(0).max(1).optional(),
  repeat_penalty: z.number().min(0.01).max(100).optional(),
  seed: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable().optional(),
  presence_penalty: z.number().min(-2).max(2).nullable().optional(),
  frequency_penalty: z.number().min(-2).max(2).nullable().optional(),
  logit_bias: LogitBias.nullable().optional(),
  stop: Stop.optional(),
  n: z.number().int().nullable().optional(),
  stream: z.boolean().nullable().optional(),
  stream_options: z.object({ include_usage: z.boolean().optional() }).passthrough().nullable().optional(),
  // accepted and not used on a device
  user: z.string().optional(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
  store: z.boolean().nullable().optional(),
  service_tier: z.string().nullable().optional(),
  prompt_cache_key: z.string().optional(),
  safety_identifier: z.string().optional(),
};

const ChatBody = z.strictObject({
  ...Sampling,
  messages: z.array(Message).min(1).max(1024),
  max_tokens: z.number().int().min(1).nullable().optional(),
  max_completion_tokens: z.number().int().min(1).nullable().optional(),
  logprobs: z.boolean().nullable().optional(),
  top_logprobs: z.number().int().min(0).max(MAX_TOP_LOGPROBS).nullable().optional(),
  response_format: ResponseFormatSchema.optional(),
  tools: z.array(Tool).max(128).optional(),
  tool_choice: ToolChoiceSchema.optional(),
  parallel_tool_calls: z.boolean().optional(),
});

const CompletionBody = z.strictObject({
  ...Sampling,
  prompt: z.union([text, z.array(text).length(1), z.array(z.number().int().min(0)).min(1).max(1 << 20)]),
  max_tokens: z.number().int().min(1).nullable().optional(),
  logprobs: z.number().int().min(0).max(5).nullable().optional(),
  echo: z.boolean().nullable().optional(),
  best_of: z.number().int().nullable().optional(),
  suffix: z.string().nullable().optional(),
});

export interface ParsedRequest {
  model?: string;
  stream: boolean;
  includeUsage: boolean;
  /** Chat: messages; completions: prompt text or token ids. */
  messages?: ApiChatMessage[];
  prompt?: string | number[];
  options: ServeOptions;
  /** Wire names for errors: the prompt's parameter and the one that set options.maxTokens. */
  promptParam: 'messages' | 'prompt' | 'input';
  maxTokensParam: 'max_tokens' | 'max_completion_tokens' | 'max_output_tokens';
}

/** `["messages", 0, "content"]` → `messages[0].content` */
export function paramPath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out ? `.${String(p)}` : String(p);
  return out;
}

function fromZod(err: z.ZodError): OpenAIError {
  const issue = err.issues[0]!;
  if (issue.code === 'unrecognized_keys') {
    const key = (issue as { keys: string[] }).keys[0]!;
    const at = paramPath([...issue.path, key]);
    return badParam(at, `Unrecognized request argument supplied: ${at}`, 'unknown_parameter');
  }
  // report the deepest path zod reached inside unions
  let path = issue.path;
  let msg = issue.message;
  if (issue.code === 'invalid_union') {
    const errors = (issue as { errors?: z.core.$ZodIssue[][] }).errors ?? [];
    const deepest = errors.flat().sort((a, b) => b.path.length - a.path.length)[0];
    if (deepest) { path = [...issue.path, ...deepest.path]; msg = deepest.message; }
  }
  const param = paramPath(path) || 'body';
  return badParam(param, `Invalid '${param}': ${msg}`);
}

function common(b: z.infer<typeof ChatBody> | z.infer<typeof CompletionBody>): ServeOptions {
  if (b.n != null && b.n !== 1) throw badParam('n', `Invalid 'n': this device generates one choice per request; use n=1 (got ${b.n})`, 'unsupported_value');
  const o: ServeOptions = {};
  if (b.temperature != null) o.temperature = b.temperature;
  if (b.top_p != null) o.topP = b.top_p;
  if (b.top_k !== undefined) o.topK = b.top_k;
  if (b.min_p !== undefined) o.minP = b.min_p;
  if (b.repeat_penalty !== undefined) o.repeatPenalty = b.repeat_penalty;
  if (b.seed != null) o.seed = b.seed;
  if (b.presence_penalty) o.presencePenalty = b.presence_penalty;
  if (b.frequency_penalty) o.frequencyPenalty = b.frequency_penalty;
  if (b.logit_bias && Object.keys(b.logit_bias).length) {
    o.logitBias = {};
    for (const [k, v] of Object.entries(b.logit_bias)) o.logitBias[Number(k)] = v;
  }
  if (b.stop != null) o.stop = typeof b.stop === 'string' ? [b.stop] : b.stop;
  return o;
}

function parse<T extends z.ZodType>(schema: T, raw: unknown): z.infer<T> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw badParam('body', 'The request body must be a JSON object', 'invalid_json');
  const r = schema.safeParse(raw);
  if (!r.success) throw fromZod(r.error);
  return r.data;
}

export function parseChatRequest(raw: unknown): ParsedRequest {
  const b = parse(ChatBody, raw);
  const options = common(b);
  const maxTokens = b.max_completion_tokens ?? b.max_tokens;
  if (maxTokens != null) options.maxTokens = maxTokens;
  if (b.top_logprobs != null && b.top_logprobs > 0 && !b.logprobs)
    throw badParam('top_logprobs', "Invalid 'top_logprobs': requires logprobs to be true");
  if (b.logprobs) { options.logprobs = true; options.topLogprobs = b.top_logprobs ?? 0; }
  if (b.response_format) options.responseFormat = responseFormat(b.response_format);
  if (b.tools?.length) {
    options.tools = b.tools as FunctionTool[];
    const names = new Set<string>();
    b.tools.forEach((t, i) => {
      if (names.has(t.function.name)) throw badParam(`tools[${i}].function.name`, `Invalid 'tools[${i}].function.name': duplicate function name '${t.function.name}'`);
      names.add(t.function.name);
    });
  }
  if (b.tool_choice !== undefined) {
    const tc: ToolChoice = typeof b.tool_choice === 'string' ? b.tool_choice : { name: b.tool_choice.function.name };
    if (tc !== 'none' && tc !== 'auto' && !b.tools?.length)
      throw badParam('tool_choice', "Invalid 'tool_choice': a tool choice other than 'none' or 'auto' needs 'tools'");
    if (typeof tc === 'object' && !b.tools!.some((t) => t.function.name === tc.name))
      throw badParam('tool_choice', `Invalid 'tool_choice': no tool named '${tc.name}' in 'tools'`);
    options.toolChoice = tc;
  }
  if (b.parallel_tool_calls !== undefined) options.parallelToolCalls = b.parallel_tool_calls;
  if (options.tools && options.responseFormat && options.responseFormat.type !== 'text' && options.toolChoice !== 'none')
    throw badParam('response_format', "Invalid 'response_format': combine structured output with tools only with tool_choice 'none'");
  return {
    model: b.model,
    stream: b.stream === true,
    includeUsage: b.stream_options?.include_usage === true,
    messages: b.messages as ApiChatMessage[],
    options,
    promptParam: 'messages',
    maxTokensParam: b.max_completion_tokens != null ? 'max_completion_tokens' : 'max_tokens',
  };
}

export function parseCompletionRequest(raw: unknown): ParsedRequest {
  const b = parse(CompletionBody, raw);
  const options = common(b);
  if (b.max_tokens != null) options.maxTokens = b.max_tokens;
  if (b.echo) throw badParam('echo', "Invalid 'echo': echoing the prompt is not supported", 'unsupported_value');
  if (b.suffix) throw badParam('suffix', "Invalid 'suffix': insertion is not supported", 'unsupported_value');
  if (b.best_of != null && b.best_of !== 1) throw badParam('best_of', "Invalid 'best_of': only 1 is supported", 'unsupported_value');
  if (b.logprobs != null && b.logprobs > 0) { options.logprobs = true; options.topLogprobs = b.logprobs; }
  else if (b.logprobs === 0) { options.logprobs = true; options.topLogprobs = 0; }
  const prompt = typeof b.prompt === 'string' ? b.prompt : typeof b.prompt[0] === 'string' ? (b.prompt[0] as string) : (b.prompt as number[]);
  return { model: b.model, stream: b.stream === true, includeUsage: b.stream_options?.include_usage === true, prompt, options, promptParam: 'prompt', maxTokensParam: 'max_tokens' };
}

export function responseFormat(rf: z.infer<typeof ResponseFormatSchema>): ResponseFormat {
  if (rf.type !== 'json_schema') return { type: rf.type };
  return { type: 'json_schema', name: rf.json_schema.name, schema: rf.json_schema.schema ?? {}, strict: rf.json_schema.strict === true };
}

export { ResponseFormatSchema, Tool as ToolSchema, ToolChoiceSchema, Message as MessageSchema, fromZod };
