// Tool calls in the templates' own formats, through the real tokenizer and
// chat-template path: a Mistral-style tokenizer (byte-level BPE, [TOOL_CALLS]
// a special token, the published Mistral-Nemo template) whose marker token is
// the only token the mask allows where the calls start and is never allowed
// elsewhere; parallel calls handed out one by one with their index; and
// several calls in one assistant message rendered back through the Mistral,
// Qwen3 and Llama-3.3 templates.
import t from 'tap';
import { byteLevelAlphabet } from '../src/token-trie.js';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { HfModelTokenizer } from '../src/tokenizer.js';
import { ConstraintCache, serveLoop, type Stepper, type StepControls } from '../src/serve.js';
import { toolFormat, withMarkerToken } from '../src/tool-format.js';
import type { ServeChunk, ServeOptions, ServeStats } from '../src/serve-options.js';
import type { ApiChatMessage } from '../src/chat-prompt.js';

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), '../../test/fixtures');
const template = (name: string) => readFileSync(path.join(FIX, 'templates', name), 'utf8');


/** A model folder's tokenizer files: byte-level BPE without merges (ids 0..255 = bytes), the specials after them. */
function tokenizerDir(special: string[], chatTemplate: string, bos: string, eos: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'shoal-tok-'));
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((ch, b) => { vocab[ch] = b; });
  special.forEach((s, k) => { vocab[s] = 256 + k; });
  writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify({
    version: '1.0', truncation: null, padding: null,
    added_tokens: special.map((s, k) => ({ id: 256 + k, content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  }));
  writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ chat_template: chatTemplate, bos_token: bos, eos_token: eos }));
  return dir;
}

const MISTRAL_SPECIAL = ['<s>', '</s>', '[INST]', '[/INST]', '[AVAILABLE_TOOLS]', '[/AVAILABLE_TOOLS]', '[TOOL_CALLS]', '[TOOL_RESULTS]', '[/TOOL_RESULTS]'];
const BOS = 256;
const EOS = 257;
const MARKER = 256 + MISTRAL_SPECIAL.indexOf('[TOOL_CALLS]');
const VOCAB = 256 + MISTRAL_SPECIAL.length;

const tools = [
  { type: 'function' as const, function: { name: 'move', parameters: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'], additionalProperties: false } } },
  { type: 'function' as const, function: { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] } } },
];

const allowedIds = (m: Uint32Array) => { const out: number[] = []; for (let id = 0; id < VOCAB; id++) if ((m[id >>> 5]! >>> (id & 31)) & 1) out.push(id); return out; };

/** Emits `script` (ids) then EOS; records every mask; fails when the mask forbids a scripted id. */
function scripted(t: { fail(m: string): void }, script: number[]) {
  let pos = 0;
  let i = 0;
  const masks: Array<Uint32Array | null> = [];
  const stepper: Stepper = {
    setSampler() {}, cancel() {}, position: () => pos, contextSize: () => 4096,
    async step(tokens: Int32Array, _h: Int32Array, c: StepControls) {
      pos += tokens.length;
      const id = i < script.length ? script[i]! : EOS;
      masks.push(c.allowed ?? null);
      if (c.allowed && !((c.allowed[id >>> 5]! >>> (id & 31)) & 1)) t.fail(`id ${id} at step ${i} not allowed by the mask`);
      i++;
      return { token: id, logprob: -0.1, topIds: new Int32Array([id]), topLogprobs: new Float32Array([-0.1]) };
    },
  };
  return { stepper, masks };
}

t.test('Mistral-style tokenizer: [TOOL_CALLS] is one special token, the only one allowed where the calls start', async (t) => {
  const dir = tokenizerDir(MISTRAL_SPECIAL, template('mistralai-Mistral-Nemo-Instruct-2407.jinja'), '<s>', '</s>');
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const tok = (await HfModelTokenizer.load(dir, { bos: BOS, eos: [EOS] }))!;
  const texts = tok.vocabTexts(VOCAB);
  t.equal(tok.encode('[TOOL_CALLS]', { addSpecialTokens: false }).length, 1, 'the marker encodes as one id');
  t.equal(texts[MARKER], null, 'a special token: no text of its own, so no text grammar can emit it');
  const fmt = withMarkerToken(toolFormat(tok.chatTemplateText), tok, texts);
  t.equal(fmt.markerId, MARKER);

  const body = '[{"name": "move", "arguments": {"x": 4}}, {"name": "say", "arguments": {"text": "on [TOOL_CALLS] my way"}}]';
  const run = async (opts: ServeOptions, script: number[]) => {
    const s = scripted(t, script);
    const ctx = { stepper: s.stepper, tokenizer: tok, eosIds: [EOS], vocabSize: VOCAB, constraints: new ConstraintCache(() => texts, VOCAB, [EOS]), toolFormat: fmt };
    const gen = serveLoop(ctx, tok.encode('[INST]go[/INST]', { addSpecialTokens: false }), opts);
    const chunks: ServeChunk[] = [];
    let stats: ServeStats;
    for (;;) { const r = await gen.next(); if (r.done) { stats = r.value; break; } chunks.push(r.value); }
    return { chunks, stats, masks: s.masks };
  };
  // the model spells "[TOOL_CALLS]" inside a string byte by byte (ids 0..255 are the bytes): the special id is not allowed there
  const script = [MARKER, ...Buffer.from(body)];

  // tool_choice required: constrained from the first token
  const req = await run({ tools, toolChoice: 'required' }, script);
  t.same(allowedIds(req.masks[0]!), [MARKER], 'first step: exactly the [TOOL_CALLS] id');
  t.ok(req.masks.slice(1).every((m) => m && !allowedIds(m).includes(MARKER)), 'never again (not even inside a string)');
  t.equal(req.stats.finishReason, 'tool_calls');
  t.same(req.stats.toolCalls.map((c) => [c.name, JSON.parse(c.arguments)]), [['move', { x: 4 }], ['say', { text: 'on [TOOL_CALLS] my way' }]]);
  const streamed = req.chunks.filter((c) => c.toolCall).map((c) => c.toolCall!);
  t.same(streamed.map((c) => [c.index, c.name, c.id]), req.stats.toolCalls.map((c, i) => [i, c.name, c.id]), 'each call handed out once, with its index');
  t.ok(req.stats.toolCalls.every((c) => /^[A-Za-z0-9]{9}$/.test(c.id)), 'ids Mistral accepts');
  t.equal(req.stats.text, '', 'no call text as content');

  // tool_choice auto: the marker token starts the calls
  const auto = await run({ tools, toolChoice: 'auto' }, script);
  t.equal(auto.masks[0], null, 'free until the marker');
  t.equal(auto.stats.finishReason, 'tool_calls');
  t.equal(auto.stats.toolCalls.length, 2);
  // plain text stays content
  const text = await run({ tools, toolChoice: 'auto' }, tok.encode('Hello there.', { addSpecialTokens: false }));
  t.equal(text.stats.text, 'Hello there.');
  t.equal(text.stats.toolCalls.length, 0);

  // parallel_tool_calls false: after the first call only the list's end may follow
  const one = await run({ tools, toolChoice: 'required', parallelToolCalls: false }, [MARKER, ...tok.encode('[{"name": "move", "arguments": {"x": 4}}]', { addSpecialTokens: false })]);
  t.equal(one.stats.toolCalls.length, 1);
  const afterCall = one.masks[one.masks.length - 2]!; // the step that drew ']'
  t.same(allowedIds(afterCall), [tok.encode(']', { addSpecialTokens: false })[0]!], 'no separator for a second call');

  // the history: several calls in one assistant message through the template, the marker as its id once
  const history: ApiChatMessage[] = [
    { role: 'user', content: 'go' },
    { role: 'assistant', content: null, tool_calls: [
      { id: 'a1B2c3D4e', type: 'function', function: { name: 'move', arguments: '{"x":4}' } },
      { id: 'f5G6h7I8j', type: 'function', function: { name: 'say', arguments: '{"text":"hi"}' } },
    ] },
    { role: 'tool', tool_call_id: 'a1B2c3D4e', content: 'ok' },
    { role: 'tool', tool_call_id: 'f5G6h7I8j', content: 'ok' },
  ];
  const rendered = tok.applyChatTemplate(history, { addGenerationPrompt: true, tools });
  t.match(rendered, '[TOOL_CALLS][{"name": "move", "arguments": {"x": 4}, "id": "a1B2c3D4e"}, {"name": "say", "arguments": {"text": "hi"}, "id": "f5G6h7I8j"}]</s>');
  const ids = tok.encodeChat(history, { addGenerationPrompt: true, tools });
  t.equal(ids.filter((id) => id === MARKER).length, 1, '[TOOL_CALLS] as its special id, once');
});

t.test('several calls in one assistant message through the Qwen3 and Llama-3.3 templates', async (t) => {
  const calls = [
    { id: 'a1B2c3D4e', type: 'function' as const, function: { name: 'move', arguments: '{"x":4}' } },
    { id: 'f5G6h7I8j', type: 'function' as const, function: { name: 'say', arguments: '{"text":"hi"}' } },
  ];
  const history: ApiChatMessage[] = [
    { role: 'user', content: 'go' }, { role: 'assistant', content: null, tool_calls: calls },
    { role: 'tool', tool_call_id: 'a1B2c3D4e', content: 'ok' }, { role: 'tool', tool_call_id: 'f5G6h7I8j', content: 'done' },
  ];
  const qdir = tokenizerDir(['<|endoftext|>', '<|im_start|>', '<|im_end|>'], template('Qwen-Qwen3-0.6B.jinja'), '', '<|im_end|>');
  const ldir = tokenizerDir(['<|begin_of_text|>', '<|eot_id|>', '<|start_header_id|>', '<|end_header_id|>', '<|eom_id|>', '<|python_tag|>'], template('meta-llama-Llama-3.3-70B-Instruct.jinja'), '<|begin_of_text|>', '<|eot_id|>');
  t.teardown(() => { rmSync(qdir, { recursive: true, force: true }); rmSync(ldir, { recursive: true, force: true }); });
  const qwen = (await HfModelTokenizer.load(qdir, { bos: null, eos: [258] }))!;
  t.match(qwen.applyChatTemplate(history, { tools }),
    '<tool_call>\n{"name": "move", "arguments": {"x": 4}}\n</tool_call>\n<tool_call>\n{"name": "say", "arguments": {"text": "hi"}}\n</tool_call><|im_end|>');
  // Llama 3.1/3.3 raise on two calls in one message: they are written as the model writes them, "; " between
  const llama = (await HfModelTokenizer.load(ldir, { bos: 256, eos: [257] }))!;
  const text = llama.applyChatTemplate(history, { tools });
  t.match(text, '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "move", "parameters": {"x": 4}}; {"name": "say", "parameters": {"text": "hi"}}<|eot_id|>');
  t.match(text, /<\|start_header_id\|>ipython<\|end_header_id\|>\n\n"?done"?<\|eot_id\|>/);
  // one call keeps the template's own rendering
  t.match(llama.applyChatTemplate([history[0]!, { ...history[1]!, tool_calls: [calls[0]!] }, history[2]!], { tools }),
    '<|start_header_id|>assistant<|end_header_id|>\n\n{"name": "move", "parameters": {"x": 4}}<|eot_id|>');
});
