// responses.ts — POST /v1/responses (OpenAI's Responses API, what new SDK code
// uses by default) over the same request path as chat completions: input as
// text or items (messages, function_call, function_call_output), instructions
// as a system message, text.format for structured output, function tools, and
// the streaming events the SDKs assemble (response.created …
// response.output_text.delta … response.completed).
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import type { ApiChatMessage, FunctionTool, ServeOptions } from '@shoal/engine';
import type { GenerateResult } from '@shoal/protocol';
import { badParam } from './openai-errors.js';
import { MAX_TEXT_CHARS, fromZod, type ParsedRequest } from './openai-request.js';

const text = z.string().max(MAX_TEXT_CHARS);
const FUNCTION_NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const ContentPart = z.object({ type: z.enum(['input_text', 'output_text', 'text']), text }).passthrough();
const OtherPart = z.object({ type: z.string() }).passthrough();
const MessageItem = z.object({
  type: z.literal('message').optional(),
  role: z.enum(['user', 'system', 'developer', 'assistant']),
  content: z.union([text, z.array(z.union([ContentPart, OtherPart])).max(256)]),
  id: z.string().optional(), status: z.string().optional(),
});
const FunctionCallItem = z.object({
  type: z.literal('function_call'), call_id: z.string().min(1).max(128), name: z.string().min(1).max(64), arguments: text,
  id: z.string().optional(), status: z.string().optional(),
});
const FunctionOutputItem = z.object({ type: z.literal('function_call_output'), call_id: z.string().min(1).max(128), output: text, id: z.string().optional(), status: z.string().optional() });
const Item = z.union([FunctionCallItem, FunctionOutputItem, MessageItem]);
const Format = z.discriminatedUnion('type', [
  z.object({ type: z.literal('text') }),
  z.object({ type: z.literal('json_object') }),
  z.object({ type: z.literal('json_schema'), name: z.string().regex(FUNCTION_NAME), schema: z.record(z.string(), z.unknown()), strict: z.boolean().nullable().optional(), description: z.string().optional() }),
]);
const Tool = z.object({
  type: z.literal('function'), name: z.string().regex(FUNCTION_NAME, 'must be 1-64 characters of a-z, A-Z, 0-9, _ and -'),
  description: z.string().nullable().optional(), parameters: z.record(z.string(), z.unknown()).nullable().optional(), strict: z.boolean().nullable().optional(),
});
const Body = z.strictObject({
  model: z.string().min(1).max(256).optional(),
  input: z.union([text, z.array(Item).min(1).max(1024)]),
  instructions: text.nullable().optional(),
  max_output_tokens: z.number().int().min(1).nullable().optional(),
  temperature: z.number().min(0).max(2).nullable().optional(),
  top_p: z.number().gt(0).max(1).nullable().optional(),
  stream: z.boolean().nullable().optional(),
  text: z.object({ format: Format.optional() }).passthrough().optional(),
  tools: z.array(Tool).max(128).optional(),
  tool_choice: z.union([z.enum(['none', 'auto', 'required']), z.object({ type: z.literal('function'), name: z.string() })]).optional(),
  parallel_tool_calls: z.boolean().nullable().optional(),
  previous_response_id: z.string().nullable().optional(),
  // accepted, not used on a device
  store: z.boolean().nullable().optional(),
  metadata: z.record(z.string(), z.string()).nullable().optional(),
  user: z.string().optional(),
  truncation: z.enum(['disabled', 'auto']).nullable().optional(),
  service_tier: z.string().nullable().optional(),
  include: z.array(z.string()).nullable().optional(),
});

/** Responses items → chat messages; parts other than text are a clear 400. */
function toMessages(b: z.infer<typeof Body>): ApiChatMessage[] {
  const out: ApiChatMessage[] = [];
  if (b.instructions) out.push({ role: 'system', content: b.instructions });
  if (typeof b.input === 'string') { out.push({ role: 'user', content: b.input }); return out; }
  b.input.forEach((item, i) => {
    if ('type' in item && item.type === 'function_call') {
      const call = { id: item.call_id, type: 'function' as const, function: { name: item.name, arguments: item.arguments } };
      const last = out[out.length - 1];
      if (last?.role === 'assistant' && last.tool_calls) last.tool_calls.push(call);
      else out.push({ role: 'assistant', content: null, tool_calls: [call] });
    } else if ('type' in item && item.type === 'function_call_output') {
      out.push({ role: 'tool', tool_call_id: item.call_id, content: item.output });
    } else {
      const m = item as z.infer<typeof MessageItem>;
      let content: string;
      if (typeof m.content === 'string') content = m.content;
      else {
        content = '';
        m.content.forEach((p, j) => {
          if (typeof (p as { text?: unknown }).text === 'string' && ['input_text', 'output_text', 'text'].includes(p.type)) content += (p as { text: string }).text;
          else throw badParam(`input[${i}].content[${j}].type`, `Invalid 'input[${i}].content[${j}]': a '${p.type}' part; this model takes text only`, 'unsupported_value');
        });
      }
      out.push({ role: m.role, content });
    }
  });
  return out;
}

export function parseResponsesRequest(raw: unknown): ParsedRequest & { instructions: string | null } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw badParam('body', 'The request body must be a JSON object', 'invalid_json');
  const r = Body.safeParse(raw);
  if (!r.success) throw fromZod(r.error);
  const b = r.data;
  if (b.previous_response_id) throw badParam('previous_response_id', "Invalid 'previous_response_id': this device stores no responses; send the whole conversation as input", 'unsupported_value');
  const o: ServeOptions = {};
  if (b.max_output_tokens != null) o.maxTokens = b.max_output_tokens;
  if (b.temperature != null) o.temperature = b.temperature;
  if (b.top_p != null) o.topP = b.top_p;
  const f = b.text?.format;
  if (f && f.type !== 'text') o.responseFormat = f.type === 'json_object' ? { type: 'json_object' } : { type: 'json_schema', name: f.name, schema: f.schema, strict: f.strict === true };
  if (b.tools?.length) {
    o.tools = b.tools.map((t): FunctionTool => ({
      type: 'function',
      function: { name: t.name, ...(t.description ? { description: t.description } : {}), ...(t.parameters ? { parameters: t.parameters } : {}) },
    }));
  }
  if (b.tool_choice !== undefined) {
    const tc = b.tool_choice;
    if (tc !== 'none' && tc !== 'auto' && !b.tools?.length) throw badParam('tool_choice', "Invalid 'tool_choice': needs 'tools'");
    if (typeof tc === 'object' && !b.tools!.some((t) => t.name === tc.name)) throw badParam('tool_choice', `Invalid 'tool_choice': no tool named '${tc.name}'`);
    o.toolChoice = typeof tc === 'string' ? tc : { name: tc.name };
  }
  if (b.parallel_tool_calls != null) o.parallelToolCalls = b.parallel_tool_calls;
  return { model: b.model, stream: b.stream === true, includeUsage: true, messages: toMessages(b), options: o, instructions: b.instructions ?? null,
    promptParam: 'input', maxTokensParam: 'max_output_tokens' };
}

type Emit = (ev: { type: string; [k: string]: unknown }) => void;

/** Builds the response object and, when streaming, its events in order. */
export class ResponsesWriter {
  private seq = 0;
  private text = '';
  private readonly msgId = `msg_${randomUUID().replaceAll('-', '')}`;
  private opened = false;
  private closed = false;
  /** call ids whose events were streamed as the call completed */
  private readonly streamedCalls = new Set<string>();

  constructor(private readonly id: string, private readonly created: number, private readonly model: string,
    private readonly req: ParsedRequest, private readonly emit: Emit | null) {}

  private send(type: string, body: Record<string, unknown>): void {
    this.emit?.({ type, sequence_number: this.seq++, ...body });
  }

  private shell(status: string, output: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
    const o = this.req.options;
    return {
      id: this.id, object: 'response', created_at: this.created, status, error: null, incomplete_details: null,
      instructions: (this.req as { instructions?: string | null }).instructions ?? null, max_output_tokens: o.maxTokens ?? null,
      model: this.model, output, parallel_tool_calls: o.parallelToolCalls !== false, previous_response_id: null,
      temperature: o.temperature ?? 0, top_p: o.topP ?? 1,
      text: { format: o.responseFormat ? (o.responseFormat.type === 'json_schema' ? { type: 'json_schema', name: o.responseFormat.name, schema: o.responseFormat.schema, strict: o.responseFormat.strict } : o.responseFormat) : { type: 'text' } },
      tool_choice: typeof o.toolChoice === 'object' ? { type: 'function', name: o.toolChoice.name } : o.toolChoice ?? 'auto',
      tools: (o.tools ?? []).map((t) => ({ type: 'function', name: t.function.name, description: t.function.description ?? null, parameters: t.function.parameters ?? null, strict: false })),
      usage: null, metadata: {}, ...extra,
    };
  }

  start(): void {
    this.send('response.created', { response: this.shell('in_progress', []) });
    this.send('response.in_progress', { response: this.shell('in_progress', []) });
  }

  private openMessage(): void {
    if (this.opened) return;
    this.opened = true;
    this.send('response.output_item.added', { output_index: 0, item: { id: this.msgId, type: 'message', status: 'in_progress', role: 'assistant', content: [] } });
    this.send('response.content_part.added', { item_id: this.msgId, output_index: 0, content_index: 0, part: { type: 'output_text', text: '', annotations: [] } });
  }

  delta(text: string): void {
    if (!text) return;
    this.openMessage();
    this.text += text;
    this.send('response.output_text.delta', { item_id: this.msgId, output_index: 0, content_index: 0, delta: text, logprobs: [] });
  }

  private messageItem(text: string): Record<string, unknown> {
    return { id: this.msgId, type: 'message', status: 'completed', role: 'assistant', content: [{ type: 'output_text', text, annotations: [], logprobs: [] }] };
  }

  private closeMessage(text: string): void {
    if (this.closed) return;
    this.closed = true;
    this.openMessage();
    const item = this.messageItem(text);
    this.send('response.output_text.done', { item_id: this.msgId, output_index: 0, content_index: 0, text, logprobs: [] });
    this.send('response.content_part.done', { item_id: this.msgId, output_index: 0, content_index: 0, part: (item.content as unknown[])[0] });
    this.send('response.output_item.done', { output_index: 0, item });
  }

  private functionCallItem(c: { id: string; name: string; arguments: string }): Record<string, unknown> {
    return { id: `fc_${c.id}`, type: 'function_call', status: 'completed', call_id: c.id, name: c.name, arguments: c.arguments };
  }

  private sendFunctionCall(c: { id: string; name: string; arguments: string }, output_index: number): void {
    const item = this.functionCallItem(c);
    this.send('response.output_item.added', { output_index, item: { ...item, status: 'in_progress', arguments: '' } });
    this.send('response.function_call_arguments.delta', { item_id: item.id, output_index, delta: c.arguments });
    this.send('response.function_call_arguments.done', { item_id: item.id, output_index, arguments: c.arguments });
    this.send('response.output_item.done', { output_index, item });
    this.streamedCalls.add(c.id);
  }

  /** A tool call as soon as it is complete (streaming): after the message item when text came first. */
  toolCall(c: { index: number; id: string; name: string; arguments: string }): void {
    if (!this.emit) return;
    if (this.opened) this.closeMessage(this.text);
    this.sendFunctionCall(c, (this.opened ? 1 : 0) + c.index);
  }

  /** The final response object (also sent as response.completed when streaming). */
  finish(r: GenerateResult): Record<string, unknown> {
    const output: Array<Record<string, unknown>> = [];
    if (r.text || !r.toolCalls?.length) {
      if (this.emit) this.closeMessage(r.text);
      output.push(this.messageItem(r.text));
    }
    for (const c of r.toolCalls ?? []) {
      if (this.emit && !this.streamedCalls.has(c.id)) this.sendFunctionCall(c, output.length);
      output.push(this.functionCallItem(c));
    }
    const incomplete = r.stopReason === 'max_tokens' || r.stopReason === 'context_full';
    const usage = {
      input_tokens: r.usage.promptTokens, input_tokens_details: { cached_tokens: r.usage.cachedTokens ?? 0 },
      output_tokens: r.usage.completionTokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: r.usage.totalTokens,
    };
    const resp = this.shell(incomplete ? 'incomplete' : 'completed', output, {
      usage, ...(incomplete ? { incomplete_details: { reason: 'max_output_tokens' } } : {}),
    });
    this.send(incomplete ? 'response.incomplete' : 'response.completed', { response: resp });
    return resp;
  }
}
