// chat-prompt.ts — the one path from OpenAI-style chat messages to token ids,
// used by the CLI, HTTP and MQTT alike. Messages are normalised (text parts
// joined, developer → system, content null → "", tool-call arguments parsed),
// the model's chat template from tokenizer_config.json is rendered once with
// @huggingface/jinja, and the text is tokenized WITHOUT the tokenizer's own
// special tokens: the template already writes BOS where the model wants it
// (as transformers' apply_chat_template(tokenize=True) does).
import { Template } from '@huggingface/jinja';
import { ShoalError } from '@shoal/common';
import { callsAsText, toolFormat } from './tool-format.js';

/** A problem with the caller's messages; `param` is the JSON path of the culprit, e.g. `messages[2].content[0].type`. */
export class PromptError extends ShoalError {
  constructor(message: string, readonly param: string) {
    super('SHOAL_ERR_INVALID_ARG', message, { param });
    this.name = 'PromptError';
  }
}

export interface ToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: unknown }
  | { type: 'input_audio'; input_audio: unknown }
  | { type: 'file'; file: unknown }
  | { type: string; [k: string]: unknown };

/** A chat message as the OpenAI API accepts it. */
export interface ApiChatMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: string | ContentPart[] | null;
  name?: string;
  tool_calls?: ToolCall[];
  tool_call_id?: string;
}

export interface FunctionTool {
  type: 'function';
  function: { name: string; description?: string; parameters?: Record<string, unknown>; strict?: boolean | null };
}

/** A message as chat templates expect it (Hugging Face convention). */
export interface TemplateMessage {
  role: 'system' | 'user' | 'assistant' | 'tool';
  content: string;
  name?: string;
  tool_calls?: Array<{ id: string; type: 'function'; function: { name: string; arguments: unknown } }>;
  tool_call_id?: string;
}

/** Joins text parts; any non-text part is a clear error until the engine has vision or audio. */
export function contentText(content: ApiChatMessage['content'], param: string): string {
  if (content === null || content === undefined) return '';
  if (typeof content === 'string') return content;
  let out = '';
  content.forEach((part, i) => {
    if (part.type === 'text' && typeof (part as { text?: unknown }).text === 'string') out += (part as { text: string }).text;
    else if (part.type === 'text') throw new PromptError(`${param}[${i}].text must be a string`, `${param}[${i}].text`);
    else
      throw new PromptError(
        `${param}[${i}] is a '${part.type}' part; this model takes text only (send the content as a string or text parts)`,
        `${param}[${i}].type`,
      );
  });
  return out;
}

/** OpenAI messages → template messages; throws PromptError naming the first bad field. */
export function normalizeMessages(messages: ApiChatMessage[]): TemplateMessage[] {
  return messages.map((m, i) => {
    const p = `messages[${i}]`;
    const content = contentText(m.content, `${p}.content`);
    switch (m.role) {
      case 'system':
      case 'developer':
        return { role: 'system', content, ...(m.name ? { name: m.name } : {}) };
      case 'user':
        return { role: 'user', content, ...(m.name ? { name: m.name } : {}) };
      case 'tool':
        if (!m.tool_call_id) throw new PromptError(`${p}.tool_call_id is required for a tool message`, `${p}.tool_call_id`);
        return { role: 'tool', content, tool_call_id: m.tool_call_id };
      case 'assistant': {
        const msg: TemplateMessage = { role: 'assistant', content };
        if (m.tool_calls?.length) {
          msg.tool_calls = m.tool_calls.map((tc, j) => {
            let args: unknown = tc.function.arguments;
            // Templates write arguments with `| tojson` (Llama 3.1, Mistral) or
            // as-is when a string (Qwen): an object renders right in both.
            try { args = JSON.parse(tc.function.arguments); } catch {
              throw new PromptError(`${p}.tool_calls[${j}].function.arguments is not valid JSON`, `${p}.tool_calls[${j}].function.arguments`);
            }
            return { id: tc.id, type: 'function', function: { name: tc.function.name, arguments: args } };
          });
        } else if (m.content === null || m.content === undefined) {
          throw new PromptError(`${p}.content may be null only when tool_calls are given`, `${p}.content`);
        }
        return msg;
      }
      default:
        throw new PromptError(`${p}.role '${(m as { role: string }).role}' is not one of system, developer, user, assistant, tool`, `${p}.role`);
    }
  });
}

export interface ChatTemplateSource {
  /** tokenizer_config.json's chat_template: a string or named templates. */
  chatTemplate?: string | Array<{ name: string; template: string }> | null;
  bosToken?: string;
  eosToken?: string;
}

export interface PromptTokenizer {
  /** Tokenizes text; special-token strings in the text become their ids. */
  encode(text: string, opts: { addSpecialTokens: boolean }): number[];
  bosTokenId: number | null;
}

export interface RenderOptions {
  tools?: FunctionTool[];
  addGenerationPrompt?: boolean;
  /** Extra template variables, e.g. `enable_thinking: false` for Qwen3. */
  extra?: Record<string, unknown>;
}

export class ChatPrompt {
  private readonly templates = new Map<string, Template>();
  private readonly defaultName: string | null;

  constructor(private readonly src: ChatTemplateSource, private readonly tok: PromptTokenizer) {
    const t = src.chatTemplate;
    if (typeof t === 'string') this.templates.set('default', new Template(t));
    else if (Array.isArray(t)) for (const { name, template } of t) this.templates.set(name, new Template(template));
    this.defaultName = this.templates.has('default') ? 'default' : (this.templates.keys().next().value ?? null);
  }

  /** True when the model has a chat template (instruct models); base models get a plain fallback. */
  get hasTemplate(): boolean { return this.defaultName !== null; }

  /** True when the template itself renders the `tools` variable (a native tool format). */
  get templateHandlesTools(): boolean {
    const name = this.templates.has('tool_use') ? 'tool_use' : this.defaultName;
    if (!name) return false;
    return /\btools\b/.test(this.templateText(name));
  }

  /** Source text of a named template. */
  private templateText(name: string): string {
    const src = this.src.chatTemplate;
    return typeof src === 'string' ? src : src?.find((x) => x.name === name)?.template ?? '';
  }

  /** The prompt text (special tokens as their strings). */
  render(messages: TemplateMessage[], opts: RenderOptions = {}): string {
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    const name = opts.tools?.length && this.templates.has('tool_use') ? 'tool_use' : this.defaultName;
    if (name) {
      // Templates that render one call per assistant message (Llama 3.1 raises
      // on more) get parallel calls as the text the model writes for them
      // (tool-format.ts), so the history reads as it was generated.
      const fmt = toolFormat(this.templateText(name));
      if (fmt.oneCallPerMessage)
        messages = messages.map((m) => (m.tool_calls && m.tool_calls.length > 1
          ? { role: m.role, content: m.content + callsAsText(m.tool_calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })), fmt) }
          : m));
    }
    if (!name) {
      // No template (base models such as stories260K): the turns as plain
      // text, so a completion model simply continues the conversation. BOS is
      // added as an id by encode(). Tool calls as the model was told to write
      // them (one JSON object per line, toolSystemPrompt).
      const plain = toolFormat('');
      return messages.map((m) => (m.tool_calls?.length
        ? callsAsText(m.tool_calls.map((c) => ({ name: c.function.name, arguments: c.function.arguments })), plain)
        : m.content.trim())).join('\n') + (addGenerationPrompt ? '\n' : '');
    }
    try {
      return this.templates.get(name)!.render({
        messages,
        ...(opts.tools?.length ? { tools: opts.tools } : {}),
        add_generation_prompt: addGenerationPrompt,
        bos_token: this.src.bosToken ?? '',
        eos_token: this.src.eosToken ?? '',
        ...opts.extra,
      });
    } catch (e) {
      // raise_exception() in templates: e.g. "roles must alternate"
      throw new PromptError(`the model's chat template rejected the messages: ${(e as Error).message}`, 'messages');
    }
  }

  /** The prompt as token ids, BOS exactly once where the model expects it. */
  encode(messages: TemplateMessage[], opts: RenderOptions = {}): number[] {
    const text = this.render(messages, opts);
    const ids = this.tok.encode(text, { addSpecialTokens: false });
    if (!this.hasTemplate && this.tok.bosTokenId !== null) ids.unshift(this.tok.bosTokenId);
    return ids;
  }
}
