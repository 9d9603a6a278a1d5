// Token ids of chat prompts for Llama-2, Llama-3, Mistral, Qwen2 and Qwen3
// templates (published text in fixtures/templates) against ids computed
// independently by scripts/gen-chat-fixtures.py (Python jinja2 as transformers
// configures it + a hand tokenizer). The tokenizer here is a byte-level BPE
// without merges whose post-processor adds BOS like Llama's: a BOS added twice
// or a special token split into bytes changes the ids.
import t from 'tap';
import { byteLevelAlphabet } from '../src/token-trie.js';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer } from '@huggingface/tokenizers';
import { ChatPrompt, PromptError, normalizeMessages, type ApiChatMessage, type TemplateMessage } from '../src/chat-prompt.js';

function fixturesDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const f = path.join(dir, 'packages/engine/test/fixtures');
    if (existsSync(f)) return f;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find packages/engine/test/fixtures');
    dir = up;
  }
}
const FIX = fixturesDir();

interface Style {
  style: string; template: string; bos: string | null; eos: string; add_bos: boolean; special: string[];
  cases: Array<{ name: string; messages: TemplateMessage[]; tools: unknown; add_generation_prompt: boolean; text: string; ids: number[] }>;
}


export function byteTokenizer(special: string[], bos: string | null, addBos: boolean): Tokenizer {
  const vocab: Record<string, number> = {};
  byteLevelAlphabet().forEach((ch, b) => { vocab[ch] = b; });
  special.forEach((s, k) => { vocab[s] = 256 + k; });
  const bosId = bos ? 256 + special.indexOf(bos) : -1;
  const json = {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: special.map((s, k) => ({ id: 256 + k, content: s, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true })),
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: addBos && bos
      ? {
          type: 'TemplateProcessing',
          single: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
          pair: [{ SpecialToken: { id: bos, type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { SpecialToken: { id: bos, type_id: 1 } }, { Sequence: { id: 'B', type_id: 1 } }],
          special_tokens: { [bos]: { id: bos, ids: [bosId], tokens: [bos] } },
        }
      : null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, vocab, merges: [] },
  };
  return new Tokenizer(json as never, { bos_token: bos, add_bos_token: addBos } as never);
}

const styles = JSON.parse(readFileSync(path.join(FIX, 'chat-cases.json'), 'utf8')) as Style[];

for (const st of styles) {
  t.test(`${st.style} template (${st.template})`, async (t) => {
    const hf = byteTokenizer(st.special, st.bos, st.add_bos);
    const bosId = st.bos ? 256 + st.special.indexOf(st.bos) : null;
    // the tokenizer's own encode adds BOS: the prompt path must not
    if (st.add_bos) t.same(hf.encode('x', { add_special_tokens: true }).ids, [bosId, 120], 'the fixture tokenizer adds BOS itself');
    const prompt = new ChatPrompt(
      { chatTemplate: readFileSync(path.join(FIX, 'templates', st.template), 'utf8'), bosToken: st.bos ?? '', eosToken: st.eos },
      { bosTokenId: bosId, encode: (text, o) => hf.encode(text, { add_special_tokens: o.addSpecialTokens }).ids },
    );
    for (const c of st.cases) {
      const opts = { addGenerationPrompt: c.add_generation_prompt, ...(c.tools ? { tools: c.tools as never } : {}) };
      t.equal(prompt.render(c.messages, opts), c.text, `${c.name}: text`);
      const ids = prompt.encode(c.messages, opts);
      t.same(ids, c.ids, `${c.name}: token ids`);
      if (bosId !== null && ids.includes(bosId)) t.ok(ids[0] === bosId && ids[1] !== bosId, `${c.name}: BOS once at the start`);
    }
  });
}

t.test('normalizeMessages: parts, developer, tool, tool_calls with content null', async (t) => {
  const msgs: ApiChatMessage[] = [
    { role: 'developer', content: [{ type: 'text', text: 'Be ' }, { type: 'text', text: 'brief.' }] },
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: null, tool_calls: [{ id: 'a1B2c3D4e', type: 'function', function: { name: 'w', arguments: '{"city":"Oslo"}' } }] },
    { role: 'tool', tool_call_id: 'a1B2c3D4e', content: '{"temp":4}' },
  ];
  t.same(normalizeMessages(msgs), [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Weather?' },
    { role: 'assistant', content: '', tool_calls: [{ id: 'a1B2c3D4e', type: 'function', function: { name: 'w', arguments: { city: 'Oslo' } } }] },
    { role: 'tool', content: '{"temp":4}', tool_call_id: 'a1B2c3D4e' },
  ]);
  const bad = (m: ApiChatMessage[], param: string, re: RegExp) => {
    try { normalizeMessages(m); t.fail(`expected an error for ${param}`); } catch (e) {
      t.ok(e instanceof PromptError, 'PromptError');
      t.equal((e as PromptError).param, param, `param ${param}`);
      t.match((e as Error).message, re);
    }
  };
  bad([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }], 'messages[0].content[0].type', /text only/);
  bad([{ role: 'tool', content: 'x' }], 'messages[0].tool_call_id', /required/);
  bad([{ role: 'assistant', content: null }], 'messages[0].content', /null only when tool_calls/);
  bad([{ role: 'assistant', content: '', tool_calls: [{ id: 'x', type: 'function', function: { name: 'f', arguments: '{' } }] }], 'messages[0].tool_calls[0].function.arguments', /not valid JSON/);
});

t.test('a template that raises gives a PromptError, not a crash', async (t) => {
  const st = styles.find((s) => s.style === 'llama2')!;
  const hf = byteTokenizer(st.special, st.bos, st.add_bos);
  const prompt = new ChatPrompt({ chatTemplate: readFileSync(path.join(FIX, 'templates', st.template), 'utf8'), bosToken: '<s>', eosToken: '</s>' },
    { bosTokenId: 256, encode: (text, o) => hf.encode(text, { add_special_tokens: o.addSpecialTokens }).ids });
  t.throws(() => prompt.render([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }]), PromptError);
});

t.test('no template: plain turns, BOS once as an id', async (t) => {
  const hf = byteTokenizer(['<s>', '</s>'], '<s>', true);
  const prompt = new ChatPrompt({}, { bosTokenId: 256, encode: (text, o) => hf.encode(text, { add_special_tokens: o.addSpecialTokens }).ids });
  t.notOk(prompt.hasTemplate);
  t.same(prompt.encode([{ role: 'user', content: ' hi ' }]), [256, 104, 105, 10]);
  // tool calls come back as the model was told to write them, one per line
  const calls = [{ id: 'a1B2c3D4e', type: 'function' as const, function: { name: 'f', arguments: { a: 1 } } }, { id: 'b1B2c3D4e', type: 'function' as const, function: { name: 'g', arguments: {} } }];
  t.equal(prompt.render([{ role: 'user', content: 'go' }, { role: 'assistant', content: '', tool_calls: calls }, { role: 'tool', content: 'ok', tool_call_id: 'a1B2c3D4e' }]),
    'go\n{"name": "f", "arguments": {"a": 1}}\n{"name": "g", "arguments": {}}\nok\n');
});
