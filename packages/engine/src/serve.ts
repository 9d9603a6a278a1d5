// serve.ts — one generation for an application: the step loop behind
// Session.serve(). Each step evaluates the fed tokens and draws one token in
// native code (shoal_session_step) with penalties, logit bias, an allowed-token
// mask and logprobs; this loop adds what needs text: stop strings, JSON /
// tool-call constraints (json-constraint.ts + token-trie.ts, formats in
// tool-format.ts), tool-call detection for tool_choice "auto" and each call
// handed out as soon as its JSON closes (parallel calls stream one by one).
import { ShoalError } from '@shoal/common';
import { JsonConstraint, SchemaError, type State } from './json-constraint.js';
import { ConstraintMasker, TokenTrie } from './token-trie.js';
import { StopMatcher } from './stop-matcher.js';
import { CallScanner, MAX_PARALLEL_TOOL_CALLS, TOOL_MARKER, toolCallId, type ToolFormat } from './tool-format.js';
import type { ServeChunk, ServeOptions, ServeStats, ToolCallOut } from './serve-options.js';
import type { Tokenizer } from './types.js';

export interface StepControls {
  presencePenalty?: number; frequencyPenalty?: number; counted?: Int32Array;
  biasIds?: Int32Array; biasValues?: Float32Array; allowed?: Uint32Array | null; topLogprobs?: number;
}
export interface StepResult { token: number; logprob: number; topIds: Int32Array; topLogprobs: Float32Array }

/** What the loop needs from a native session. */
export interface Stepper {
  setSampler(p: { temperature?: number; topK?: number; topP?: number; minP?: number; repeatPenalty?: number; repeatLastN?: number; seed?: number }): void;
  step(tokens: Int32Array, history: Int32Array, controls: StepControls): Promise<StepResult>;
  cancel(): void;
  position(): number;
  contextSize(): number;
}

/** Per-model caches: the vocabulary trie is built once (≈ 0.1 s for 32k tokens). */
export class ConstraintCache {
  private trie: TokenTrie | null = null;
  private usable: Array<string | null> | null = null;
  private readonly maskers = new Map<string, ConstraintMasker>();
  constructor(private readonly texts: () => Array<string | null>, private readonly vocabSize: number, private readonly eos: number[]) {}

  /** Token texts without any that contain TOOL_MARKER: only the special token may stand there. */
  private tokenTexts(): Array<string | null> {
    this.usable ??= this.texts().map((t) => (t !== null && t.includes(TOOL_MARKER) ? null : t));
    return this.usable;
  }

  masker(key: string, make: () => JsonConstraint, specials: ReadonlyArray<readonly [string, number]> = []): ConstraintMasker {
    key = `${key}:${JSON.stringify(specials)}`;
    let m = this.maskers.get(key);
    if (!m) {
      this.trie ??= new TokenTrie(this.tokenTexts());
      m = new ConstraintMasker(make(), this.trie, this.tokenTexts(), this.vocabSize, this.eos, specials);
      this.maskers.set(key, m);
      if (this.maskers.size > 64) this.maskers.delete(this.maskers.keys().next().value!);
    }
    return m;
  }
}

export interface ServeContext {
  stepper: Stepper;
  tokenizer: Tokenizer;
  eosIds: number[];
  vocabSize: number;
  constraints: ConstraintCache;
  /** Tool-call format of the model's template. */
  toolFormat: ToolFormat;
}

function constraintFor(ctx: ServeContext, o: ServeOptions): { masker: ConstraintMasker; mode: 'json' | 'tool' | 'tool-auto' } | null {
  const tools = o.tools ?? [];
  const choice = o.toolChoice ?? 'auto';
  try {
    if (tools.length && choice !== 'none') {
      const pick = typeof choice === 'object' ? tools.filter((t) => t.function.name === choice.name) : tools;
      const specs = pick.map((t) => ({ name: t.function.name, ...(t.function.parameters ? { parameters: t.function.parameters } : {}) }));
      // a named tool_choice asks for that function: one call of it
      const maxCalls = o.parallelToolCalls === false || typeof choice === 'object' ? 1 : MAX_PARALLEL_TOOL_CALLS;
      const f = ctx.toolFormat;
      const key = `tool:${JSON.stringify(f)}:${maxCalls}:${JSON.stringify(specs)}`;
      const specials: Array<[string, number]> = f.markerId !== null ? [[TOOL_MARKER, f.markerId]] : [];
      const masker = ctx.constraints.masker(key, () => JsonConstraint.toolCall(specs, f, maxCalls), specials);
      return { masker, mode: choice === 'auto' ? 'tool-auto' : 'tool' };
    }
    const rf = o.responseFormat;
    if (rf && rf.type !== 'text') {
      const schema = rf.type === 'json_schema' ? rf.schema : null;
      return { masker: ctx.constraints.masker(`json:${JSON.stringify(schema)}`, () => new JsonConstraint(schema)), mode: 'json' };
    }
  } catch (e) {
    if (e instanceof SchemaError)
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `schema not supported for constrained decoding at ${e.path}: ${e.message}`, undefined, { cause: e });
    throw e;
  }
  return null;
}

/**
 * Generates from `prompt` (ids); the session's KV cache must hold
 * prompt[0..position()) already (prefix cache) — the rest is evaluated.
 */
export async function* serveLoop(ctx: ServeContext, prompt: number[], o: ServeOptions & { signal?: AbortSignal }): AsyncGenerator<ServeChunk, ServeStats, void> {
  const { stepper, tokenizer } = ctx;
  const cached = stepper.position();
  if (cached >= prompt.length) throw new ShoalError('SHOAL_ERR_INVALID_ARG', 'serve: at least one prompt token must be evaluated');
  const room = stepper.contextSize() - cached;
  if (prompt.length - cached > room)
    throw new ShoalError('SHOAL_ERR_CONTEXT_FULL', `the prompt has ${prompt.length} tokens but the context holds ${stepper.contextSize()}`);
  const c = constraintFor(ctx, o);
  stepper.setSampler({
    temperature: o.temperature ?? 0, topK: o.topK ?? 0, topP: o.topP ?? 1, minP: o.minP ?? 0,
    repeatPenalty: o.repeatPenalty ?? 1, repeatLastN: o.repeatLastN ?? 64, seed: o.seed ?? 0,
  });
  const biasIds = Int32Array.from(Object.keys(o.logitBias ?? {}).map(Number));
  const biasValues = Float32Array.from(Object.values(o.logitBias ?? {}));
  for (const id of biasIds) if (id < 0 || id >= ctx.vocabSize) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `logit_bias names token ${id}, outside the vocabulary of ${ctx.vocabSize}`);
  const maxTokens = o.maxTokens ?? Infinity;
  const stop = new StopMatcher(o.stop ?? []);
  const decoder = tokenizer.createStreamDecoder(prompt);
  const history = prompt.slice();
  const generated: number[] = [];
  let feed = prompt.slice(cached);
  // constraint state: json/tool from the start; tool-auto once the text starts like a call
  let mode: 'free' | 'detect' | 'constrained' = c && c.mode !== 'tool-auto' ? 'constrained' : c ? 'detect' : 'free';
  let state: State | null = c && mode === 'constrained' ? c.masker.constraint.initial() : null;
  let held = ''; // detect mode: text that may be the start of a tool call
  // free text after which a call may still come (tool_choice auto, formats with a distinct marker):
  // `pending` holds back a tail that may be the start of the marker text
  const watch = c?.mode === 'tool-auto' && ctx.toolFormat.afterText;
  let pending = '';
  let content = '';
  const f = ctx.toolFormat;
  const calls = new CallScanner(); // tool-call text → each call's JSON as it closes
  const toolCalls: ToolCallOut[] = [];
  /** Tool-call text: complete calls are handed out as chunks. */
  const callChunks = (text: string): ServeChunk[] => calls.push(text).map((call) => {
    const out = { id: toolCallId(), name: String(call.name), arguments: JSON.stringify(call[f.argsKey] ?? {}) };
    toolCalls.push(out);
    return { token: -1, text: '', toolCall: { index: toolCalls.length - 1, ...out } };
  });
  let finish: ServeStats['finishReason'] = 'length';
  let stoppedByString = false;
  let contextFull = false;
  const started = performance.now();
  let firstAt = 0;
  let lastAt = 0;
  let constraintMs = 0;
  const onAbort = () => stepper.cancel();
  o.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    while (generated.length < maxTokens) {
      if (o.signal?.aborted) throw new ShoalError('SHOAL_ERR_CANCELLED', 'generation cancelled');
      if (stepper.position() + feed.length > stepper.contextSize()) { contextFull = true; break; } // 'length'
      const m0 = performance.now();
      const allowed = state ? c!.masker.mask(state) : null;
      constraintMs += performance.now() - m0;
      const r = await stepper.step(Int32Array.from(feed), Int32Array.from(history), {
        presencePenalty: o.presencePenalty ?? 0, frequencyPenalty: o.frequencyPenalty ?? 0, counted: Int32Array.from(generated),
        biasIds, biasValues, allowed, topLogprobs: o.logprobs ? o.topLogprobs ?? 0 : 0,
      });
      const now = performance.now();
      if (!firstAt) firstAt = now;
      lastAt = now;
      if (ctx.eosIds.includes(r.token)) { finish = 'stop'; break; }
      generated.push(r.token);
      history.push(r.token);
      feed = [r.token];
      let piece = decoder.push(r.token);
      const lp = o.logprobs ? { logprob: r.logprob, top: Array.from(r.topIds, (token, i) => ({ token, logprob: r.topLogprobs[i]! })) } : {};
      if (state) {
        const a0 = performance.now();
        state = c!.masker.advance(state, r.token);
        constraintMs += performance.now() - a0;
        if (!state) throw new ShoalError('SHOAL_ERR_INTERNAL', `constrained decoding drew token ${r.token}, which its mask did not allow`);
      }
      let done: ServeChunk[] = [];
      if (mode === 'detect') {
        held += piece;
        piece = '';
        const lead = held.trimStart();
        if (f.markerId !== null) {
          // the marker is a special token: a call starts with that token, text before it is content
          if (r.token === f.markerId) {
            const a0 = performance.now();
            state = c!.masker.advance(c!.masker.constraint.initial(), r.token);
            constraintMs += performance.now() - a0;
            mode = 'constrained';
            held = '';
          } else if (lead) { mode = 'free'; piece = held; held = ''; }
        } else if (lead.length >= f.trigger.length ? lead.startsWith(f.trigger) : f.trigger.startsWith(lead)) {
          if (lead.length >= f.trigger.length) {
            // a tool call: constrain the rest; the text so far must fit the call's format
            const s = c!.masker.constraint.feedText(c!.masker.constraint.initial(), lead);
            if (s) { mode = 'constrained'; state = s; done = callChunks(lead); held = ''; }
            else { mode = 'free'; piece = held; held = ''; }
          }
        } else { mode = 'free'; piece = held; held = ''; }
      } else if (mode === 'constrained' && c!.mode !== 'json') {
        done = callChunks(piece);
        piece = '';
      }
      let callAfterText = false;
      if (mode === 'free' && watch) {
        if (f.markerId !== null) {
          if (r.token === f.markerId) {
            state = c!.masker.advance(c!.masker.constraint.initial(), r.token);
            mode = 'constrained';
            callAfterText = true;
            piece = '';
          }
        } else {
          pending += piece;
          const at = pending.indexOf(f.trigger);
          const s = at >= 0 ? c!.masker.constraint.feedText(c!.masker.constraint.initial(), pending.slice(at)) : null;
          if (s) {
            // the text before the marker is content; the marker starts the calls
            done = callChunks(pending.slice(at));
            piece = pending.slice(0, at);
            state = s;
            mode = 'constrained';
            callAfterText = true;
            pending = '';
          } else {
            // hold back the longest tail that could begin the marker
            let k = at >= 0 ? 0 : Math.min(pending.length, f.trigger.length - 1);
            while (k > 0 && !f.trigger.startsWith(pending.slice(pending.length - k))) k--;
            piece = pending.slice(0, pending.length - k);
            pending = pending.slice(pending.length - k);
          }
        }
      }
      if (piece) {
        const s = stop.push(piece);
        content += s.text;
        yield { token: r.token, text: s.text, ...lp };
        if (s.stopped) { finish = 'stop'; stoppedByString = true; break; }
      } else {
        yield { token: r.token, text: '', ...lp };
      }
      if (callAfterText) {
        // a partial stop-string match held back in the content is content after all
        const rest = stop.flush();
        if (rest) { content += rest; yield { token: -1, text: rest }; }
      }
      for (const d of done) yield d;
    }
    if (!stoppedByString) {
      // release what was held back (a UTF-8 tail, a partial stop string, an undecided tool-call start)
      let tail = decoder.flush();
      if (mode === 'constrained' && c!.mode !== 'json') { for (const d of callChunks(tail)) yield d; tail = ''; }
      if (mode === 'detect') { tail = held + tail; held = ''; }
      if (pending) { tail = pending + tail; pending = ''; }
      const s = stop.push(tail);
      const rest = s.stopped ? s.text : s.text + stop.flush();
      if (rest) { content += rest; yield { token: -1, text: rest }; }
    }
  } finally {
    o.signal?.removeEventListener('abort', onAbort);
  }
  if (o.signal?.aborted) throw new ShoalError('SHOAL_ERR_CANCELLED', 'generation cancelled');
  // all calls complete (EOS or the closing text reached): the answer is the calls; cut short by a limit, those that closed
  if (toolCalls.length && c && c.mode !== 'json' && state && c.masker.constraint.isComplete(state)) finish = 'tool_calls';
  const span = (lastAt - firstAt) / 1000;
  const ttft = firstAt ? (firstAt - started) / 1000 : 0;
  return {
    promptTokens: prompt.length,
    cachedTokens: cached,
    completionTokens: generated.length,
    finishReason: finish,
    reason: finish === 'tool_calls' ? 'tool_calls' : stoppedByString ? 'stop_string' : finish === 'stop' ? 'eos' : contextFull ? 'context_full' : 'max_tokens',
    text: content,
    toolCalls,
    tokens: [...prompt, ...generated],
    timeToFirstToken: ttft,
    constraintSeconds: constraintMs / 1000,
    prefillTokensPerSecond: ttft > 0 ? (prompt.length - cached) / ttft : 0,
    decodeTokensPerSecond: generated.length > 1 && span > 0 ? (generated.length - 1) / span : 0,
  };
}
