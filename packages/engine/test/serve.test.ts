// The serve loop without a model: a scripted stepper "samples" a fixed text one
// character-token at a time (and checks each one against the mask it was
// given), so stop strings, tool-call detection for tool_choice "auto",
// constrained tool calls and JSON output are tested exactly.
import t from 'tap';
import { ConstraintCache, serveLoop, type Stepper, type StepControls } from '../src/serve.js';
import { toolFormat } from '../src/tool-format.js';
import type { Tokenizer } from '../src/types.js';
import type { ServeChunk, ServeOptions, ServeStats } from '../src/serve-options.js';

// vocabulary: id 0 = EOS, ids 1..95 = the printable ASCII characters, 96 = '\n'
const texts: Array<string | null> = [null, ...Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)), '\n'];
const idOf = (c: string) => texts.indexOf(c);
const tokenizer = {
  encode: (s: string) => [...s].map(idOf), decode: (ids: number[]) => ids.map((i) => texts[i] ?? '').join(''),
  createStreamDecoder: () => ({ push: (id: number) => texts[id] ?? '', flush: () => '' }),
  vocabTexts: () => texts, bosTokenId: null, eosTokenIds: [0],
} as unknown as Tokenizer;

/** Emits `script` then EOS; fails the test if the mask forbids what it emits. */
function stepper(t: Tap, script: string, ctx = 4096): Stepper & { masked: number } {
  let pos = 0;
  let i = 0;
  const s = {
    masked: 0,
    setSampler() {},
    cancel() {},
    position: () => pos,
    contextSize: () => ctx,
    async step(tokens: Int32Array, _h: Int32Array, c: StepControls) {
      pos += tokens.length;
      const id = i < script.length ? idOf(script[i]!) : 0;
      i++;
      if (c.allowed) {
        s.masked++;
        if (!((c.allowed[id >>> 5]! >>> (id & 31)) & 1)) t.fail(`token ${JSON.stringify(texts[id])} at ${i - 1} not allowed by the mask`);
      }
      return { token: id, logprob: -0.5, topIds: new Int32Array([id]), topLogprobs: new Float32Array([-0.5]) };
    },
  };
  return s;
}
type Tap = { fail(m: string): void };

async function run(st: Stepper, opts: ServeOptions, template = ''): Promise<{ chunks: ServeChunk[]; stats: ServeStats }> {
  const ctx = { stepper: st, tokenizer, eosIds: [0], vocabSize: texts.length, constraints: new ConstraintCache(() => texts, texts.length, [0]), toolFormat: toolFormat(template) };
  const gen = serveLoop(ctx, [idOf('>')], opts);
  const chunks: ServeChunk[] = [];
  for (;;) { const r = await gen.next(); if (r.done) return { chunks, stats: r.value }; chunks.push(r.value); }
}

const QWEN = '{%- if tools %}<tool_call>{% endif %}';
const tools = [{ type: 'function' as const, function: { name: 'move', parameters: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'] } } }];

t.test('plain text, stop string across tokens, logprobs', async (t) => {
  const { chunks, stats } = await run(stepper(t, 'Hello world. END more'), { stop: ['END'], logprobs: true, topLogprobs: 1 });
  t.equal(stats.text, 'Hello world. ');
  t.equal(chunks.map((c) => c.text).join(''), 'Hello world. ');
  t.equal(stats.reason, 'stop_string');
  t.ok(chunks.every((c) => c.token < 0 || (c.logprob === -0.5 && c.top!.length === 1)));
  const m = await run(stepper(t, 'abc'), { maxTokens: 2 });
  t.equal(m.stats.text, 'ab');
  t.equal(m.stats.reason, 'max_tokens');
});

t.test('tool_choice auto: a call in the template format is detected, constrained and returned as tool_calls', async (t) => {
  const st = stepper(t, '<tool_call>\n{"name": "move", "arguments": {"x":3}}\n</tool_call>');
  const { chunks, stats } = await run(st, { tools, toolChoice: 'auto' }, QWEN);
  t.equal(stats.finishReason, 'tool_calls');
  t.same(stats.toolCalls.map((c) => [c.name, c.arguments]), [['move', '{"x":3}']]);
  t.match(stats.toolCalls[0]!.id, /^[A-Za-z0-9]{9}$/);
  t.equal(chunks.map((c) => c.text).join(''), '', 'no call text streamed as content');
  t.ok(st.masked > 20, 'constrained once the call started');
});

t.test('tool_choice auto: plain text that is not a call is released', async (t) => {
  const st = stepper(t, '<b>bold</b>');
  const { chunks, stats } = await run(st, { tools, toolChoice: 'auto' }, QWEN);
  t.equal(stats.finishReason, 'stop');
  t.equal(stats.text, '<b>bold</b>');
  t.equal(chunks.map((c) => c.text).join(''), '<b>bold</b>');
  t.equal(st.masked, 0, 'never constrained');
});

t.test('tool_choice auto: a call after text (Qwen3 thinks first) is detected; the text stays content', async (t) => {
  const st = stepper(t, '<think>\nx is 3\n</think>\n\n<tool_call>\n{"name": "move", "arguments": {"x":3}}\n</tool_call>');
  const { chunks, stats } = await run(st, { tools, toolChoice: 'auto' }, QWEN);
  t.equal(stats.finishReason, 'tool_calls');
  t.same(stats.toolCalls.map((c) => [c.name, c.arguments]), [['move', '{"x":3}']]);
  t.equal(stats.text, '<think>\nx is 3\n</think>\n\n', 'content: the text before the marker');
  t.equal(chunks.map((c) => c.text).join(''), stats.text, 'streamed content never shows a piece of the marker');
  t.ok(st.masked > 20, 'constrained once the marker was written');
  // Mistral's marker as text (no special token in this vocabulary)
  const ms = stepper(t, 'Sure. [TOOL_CALLS][{"name": "move", "arguments": {"x": 2}}]');
  const m = await run(ms, { tools, toolChoice: 'auto' }, '[TOOL_CALLS]');
  t.same(m.stats.toolCalls.map((c) => [c.name, c.arguments]), [['move', '{"x":2}']]);
  t.equal(m.stats.text, 'Sure. ');
  // text that only looks like the marker's start, and a stop string next to it
  const near = await run(stepper(t, 'a <tool b <tool_cal END c'), { tools, toolChoice: 'auto', stop: ['END'] }, QWEN);
  t.equal(near.stats.text, 'a <tool b <tool_cal ', 'held-back marker prefixes released as content');
  t.equal(near.chunks.map((c) => c.text).join(''), near.stats.text);
  t.equal(near.stats.reason, 'stop_string');
  // Llama-3.1 JSON: a call must be the whole answer, not follow text
  const ll = await run(stepper(t, 'ok {"name": "move", "parameters": {"x": 1}}'), { tools, toolChoice: 'auto' }, '"parameters": ... <|python_tag|>');
  t.equal(ll.stats.toolCalls.length, 0);
  t.equal(ll.stats.text, 'ok {"name": "move", "parameters": {"x": 1}}');
});

t.test('tool_choice required / named: constrained from the first token (Llama-3.1 format)', async (t) => {
  const llama = '"parameters": ... <|python_tag|>';
  const st = stepper(t, '{"name": "move", "parameters": {"x": -12}}');
  const { stats } = await run(st, { tools, toolChoice: { name: 'move' } }, llama);
  t.same(stats.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [['move', { x: -12 }]]);
  t.equal(st.masked, 43, 'every token masked');
});

t.test('json_schema output; a schema it cannot enforce is an error', async (t) => {
  const schema = { type: 'object', properties: { a: { type: 'string' } }, required: ['a'], additionalProperties: false };
  const { stats } = await run(stepper(t, '{"a": "x\\"y"}'), { responseFormat: { type: 'json_schema', name: 's', schema, strict: true } });
  t.same(JSON.parse(stats.text), { a: 'x"y' });
  t.equal(stats.reason, 'eos');
  await t.rejects(run(stepper(t, '{}'), { responseFormat: { type: 'json_schema', name: 's', schema: { type: 'string', format: 'email' }, strict: true } }), { code: 'SHOAL_ERR_INVALID_ARG' });
});

t.test('context full ends with length; a prompt that does not fit is an error', async (t) => {
  const r = await run(stepper(t, 'abcdefgh', 4), {});
  t.equal(r.stats.reason, 'context_full');
  t.equal(r.stats.finishReason, 'length');
  await t.rejects(run(stepper(t, 'a', 0), {}), { code: 'SHOAL_ERR_CONTEXT_FULL' });
});

t.test('parallel tool calls (Qwen blocks): each handed out as it closes, with its index; false allows one', async (t) => {
  const both = [{ type: 'function' as const, function: { name: 'say', parameters: { type: 'object', properties: { t: { type: 'string' } }, required: ['t'] } } }, ...tools];
  const script = '<tool_call>\n{"name": "move", "arguments": {"x": 1}}\n</tool_call>\n<tool_call>\n{"name": "say", "arguments": {"t": "}"}}\n</tool_call>';
  const { chunks, stats } = await run(stepper(t, script), { tools: both, toolChoice: 'auto' }, QWEN);
  t.equal(stats.finishReason, 'tool_calls');
  t.same(stats.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [['move', { x: 1 }], ['say', { t: '}' }]]);
  const handed = chunks.map((c, i) => [i, c.toolCall] as const).filter(([, c]) => c);
  t.same(handed.map(([, c]) => c!.index), [0, 1]);
  t.ok(handed[0]![0] < chunks.findIndex((c) => c.token === idOf('y')), 'the first call is out before the second is generated');
  // parallel_tool_calls false: the same script is refused at the second call
  const fails: string[] = [];
  await run(stepper({ fail: (m) => fails.push(m) }, script), { tools: both, toolChoice: 'required', parallelToolCalls: false }, QWEN).catch(() => {});
  t.match(fails[0], /at 64 not allowed/, 'no second <tool_call> (nor a blank after the call)');
});
