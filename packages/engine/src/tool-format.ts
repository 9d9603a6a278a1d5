// tool-format.ts — how a chat template writes tool calls, read from its
// source, for generation (the constrained-decoding grammar of json-constraint.ts,
// call detection in serve.ts) and for the history (chat-prompt.ts):
//   Qwen2.5 / Qwen3:  <tool_call>\n{"name": …, "arguments": …}\n</tool_call>, one block per call, "\n" between
//   Mistral:          [TOOL_CALLS][{"name": …, "arguments": …}, {…}]   ([TOOL_CALLS] is one special token)
//   Llama 3.1 (JSON): {"name": …, "parameters": …}; {…}                 (the template renders one call per message)
//   no tool format:   {"name": …, "arguments": …}, one per line (told in a system message)
import { randomBytes } from 'node:crypto';

/**
 * Stands for a special token (Mistral's [TOOL_CALLS]) in the character-level
 * grammar: a private-use character no token text may contain (token-trie.ts
 * drops such tokens) and JSON strings never accept, so only the special
 * token's id can take its place.
 */
export const TOOL_MARKER = '\uE000';

/** Most calls in one answer (parallel_tool_calls); the MQTT history accepts as many per message. */
export const MAX_PARALLEL_TOOL_CALLS = 16;

export interface ToolFormat {
  /** Before the first call ("[TOOL_CALLS][" with TOOL_MARKER for the special token when markerId is set). */
  open: string;
  /** Around each call's JSON object. */
  callPrefix: string;
  callSuffix: string;
  /** Between two calls. */
  separator: string;
  /** After the last call. */
  close: string;
  argsKey: 'arguments' | 'parameters';
  /** Text that starts a call in free text (tool_choice auto); unused when markerId is set (the token starts it). */
  trigger: string;
  /** The special token's text that opens the calls (Mistral), null when none. */
  marker: string | null;
  /** Its id when the tokenizer has it as one special token (set by withMarkerToken). */
  markerId: number | null;
  /** The template has a tool format of its own (else tools go into a system message). */
  native: boolean;
  /** The template renders only one call per assistant message (Llama 3.1 raises on more). */
  oneCallPerMessage: boolean;
  /**
   * Calls may follow text (tool_choice auto): the marker cannot be mistaken for prose, so it is
   * watched for all along (Qwen3 thinks first, then calls). Llama-3.1 JSON and the system-prompt
   * format: only an answer that starts as a call is one.
   */
  afterText: boolean;
}

export function toolFormat(templateText: string): ToolFormat {
  const base = { callPrefix: '', callSuffix: '', separator: '\n', open: '', close: '', argsKey: 'arguments' as const, marker: null, markerId: null, native: true, oneCallPerMessage: false, afterText: false };
  if (templateText.includes('<tool_call>'))
    return { ...base, callPrefix: '<tool_call>\n', callSuffix: '\n</tool_call>', trigger: '<tool_call>', afterText: true };
  if (templateText.includes('[TOOL_CALLS]'))
    return { ...base, open: '[TOOL_CALLS][', separator: ', ', close: ']', trigger: '[TOOL_CALLS]', marker: '[TOOL_CALLS]', afterText: true };
  if (templateText.includes('"parameters": ') && /ipython|python_tag/.test(templateText))
    return { ...base, separator: '; ', argsKey: 'parameters', trigger: '{"name"', oneCallPerMessage: /tool_calls\s*\|\s*length\s*[!=]=\s*1\b/.test(templateText) };
  return { ...base, trigger: '{"name"', native: false };
}

/**
 * The format with its marker as a token: when the tokenizer encodes the marker
 * text as one id that is not plain text (a special token), the grammar writes
 * TOOL_MARKER there and the mask allows exactly that id; otherwise the marker
 * stays text the model spells out.
 */
export function withMarkerToken(f: ToolFormat, tok: { encode(text: string, o: { addSpecialTokens: boolean }): number[] }, texts: ReadonlyArray<string | null>): ToolFormat {
  if (!f.marker) return f;
  const ids = tok.encode(f.marker, { addSpecialTokens: false });
  if (ids.length !== 1 || texts[ids[0]!] !== null) return { ...f, markerId: null };
  return { ...f, open: f.open.replace(f.marker, TOOL_MARKER), markerId: ids[0]!, trigger: '' };
}

/** For templates without a tool format: the tools and the answer format as a system message. */
export function toolSystemPrompt(tools: Array<{ function: { name: string; description?: string; parameters?: Record<string, unknown> } }>, fmt: ToolFormat, parallel = true): string {
  return 'You can call these functions:\n' + tools.map((t) => JSON.stringify(t.function)).join('\n') +
    `\nTo call one, answer only with ${fmt.callPrefix}{"name": <function name>, "${fmt.argsKey}": <arguments object>}${fmt.callSuffix}` +
    (parallel ? '\nTo call several, write one such call per line.' : '');
}

/** 9 alphanumeric characters: accepted by every template (Mistral insists on exactly that). */
export function toolCallId(): string {
  const a = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  return [...randomBytes(9)].map((b) => a[b % a.length]).join('');
}

/** JSON as Python's json.dumps and the templates' `tojson` write it: ", " and ": " separators. */
export function pyJson(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(pyJson).join(', ')}]`;
  if (v !== null && typeof v === 'object') return `{${Object.entries(v).map(([k, x]) => `${JSON.stringify(k)}: ${pyJson(x)}`).join(', ')}}`;
  return JSON.stringify(v) ?? 'null';
}

/** Several calls as the model writes them in this format (the history of a one-call-per-message template). */
export function callsAsText(calls: Array<{ name: string; arguments: unknown }>, f: ToolFormat): string {
  const open = f.marker ? f.open.replace(TOOL_MARKER, f.marker) : f.open;
  return open + calls.map((c) => `${f.callPrefix}{"name": ${JSON.stringify(c.name)}, ${JSON.stringify(f.argsKey)}: ${pyJson(c.arguments)}}${f.callSuffix}`).join(f.separator) + f.close;
}

/**
 * Finds the top-level JSON objects in a stream of call text, as each one
 * closes: the text between them (call markers, separators) holds no braces,
 * and braces inside strings are skipped. Hand-written: a few lines, and no
 * streaming JSON library reports object boundaries in mixed text.
 */
export class CallScanner {
  private depth = 0;
  private inString = false;
  private escaped = false;
  private current = '';

  /** Feeds text; returns the objects that closed in it, parsed. */
  push(text: string): Array<Record<string, unknown>> {
    const out: Array<Record<string, unknown>> = [];
    for (const ch of text) {
      if (this.depth === 0) {
        if (ch === '{') { this.depth = 1; this.current = ch; }
        continue;
      }
      this.current += ch;
      if (this.inString) {
        if (this.escaped) this.escaped = false;
        else if (ch === '\\') this.escaped = true;
        else if (ch === '"') this.inString = false;
      } else if (ch === '"') this.inString = true;
      else if (ch === '{' || ch === '[') this.depth++;
      else if (ch === '}' || ch === ']') {
        if (--this.depth === 0) {
          try { out.push(JSON.parse(this.current) as Record<string, unknown>); } catch { /* not a call: the grammar makes this unreachable */ }
          this.current = '';
        }
      }
    }
    return out;
  }
}
