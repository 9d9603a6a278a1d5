// Tokenizer: llama.cpp's Llama-2 test vectors encode to the expected ids and
// decode back; the stream decoder never emits broken UTF-8.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { HfModelTokenizer } from '../src/tokenizer.js';
import { sharedPath, skipUnlessShared, storiesPath } from '@shoal/testkit';

const LLAMA = ['models', 'llama2-tokenizer-32k'];

t.test('llama.cpp Llama-2 SPM test vectors', { skip: skipUnlessShared(...LLAMA) }, async (t) => {
  const tok = await HfModelTokenizer.load(sharedPath(...LLAMA), { bos: 1, eos: [2] });
  t.ok(tok, 'tokenizer.json loads');
  const inputs = readFileSync(sharedPath(...LLAMA, 'ggml-vocab-llama-spm.gguf.inp'), 'utf8').split('\n__ggml_vocab_test__\n');
  const outputs = readFileSync(sharedPath(...LLAMA, 'ggml-vocab-llama-spm.gguf.out'), 'utf8').split('\n');
  // the .inp file ends with a separator line; the last element is then empty
  if (inputs.at(-1) === '' || inputs.at(-1) === '\n') inputs.pop();
  t.ok(inputs.length >= 40, `${inputs.length} vectors`);
  let encoded = 0;
  let roundTrips = 0;
  for (let i = 0; i < inputs.length; i++) {
    const text = inputs[i]!.replace(/\n__ggml_vocab_test__$/, '');
    const want = outputs[i]!.trim() === '' ? [] : outputs[i]!.trim().split(/\s+/).map(Number);
    const got = tok!.encode(text, { addSpecialTokens: false });
    t.same(got, want, `encode ${JSON.stringify(text).slice(0, 40)}`);
    if (JSON.stringify(got) === JSON.stringify(want)) encoded++;
    // SentencePiece normalisation drops the leading space it adds; compare
    // against the text with one leading space removed, as sentencepiece decodes
    const back = tok!.decode(got);
    const expected = text.startsWith(' ') ? text.slice(1) : text;
    if (back === expected || back === text) roundTrips++;
  }
  t.equal(encoded, inputs.length, 'every vector encodes exactly');
  t.ok(roundTrips >= inputs.length - 3, `${roundTrips}/${inputs.length} decode back to the input`);
});

t.test('stories260K tokenizer matches the reference prompts', async (t) => {
  const tok = (await HfModelTokenizer.load(storiesPath(), { bos: 1, eos: [2] }))!;
  const ref = JSON.parse(readFileSync(storiesPath('reference_greedy.json'), 'utf8')) as {
    cases: Array<{ prompt: string; input_ids: number[]; ids_after_bos: number[]; text: string }>;
  };
  for (const c of ref.cases) {
    if (c.prompt) t.same(tok.encode(c.prompt), c.input_ids, `encode '${c.prompt}' with BOS`);
    t.equal(tok.decode(c.ids_after_bos), c.text, `decode the reference generation for '${c.prompt}'`);
  }
});

t.test('stream decoder: byte-fallback emoji and newlines', { skip: skipUnlessShared(...LLAMA) }, async (t) => {
  const tok = (await HfModelTokenizer.load(sharedPath(...LLAMA), { bos: 1, eos: [2] }))!;
  const text = 'Hello 🦙 world.\nNew line — ünïcödé 日本語 ok\n\n  spaced  out 🚀🚀 end';
  const ids = tok.encode(text, { addSpecialTokens: false });
  const dec = tok.createStreamDecoder();
  let out = '';
  for (const id of ids) {
    const piece = dec.push(id);
    t.notOk(piece.includes('\uFFFD'), `no replacement char after token ${id}`);
    out += piece;
  }
  out += dec.flush();
  t.equal(out, tok.decode(ids), 'streamed text equals the full decode');
});

t.test('chat template renders and falls back', { skip: skipUnlessShared(...LLAMA) }, async (t) => {
  const llama = (await HfModelTokenizer.load(sharedPath(...LLAMA), { bos: 1, eos: [2] }))!;
  const text = llama.applyChatTemplate([{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }]);
  t.equal(text, '<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST]', 'Llama-2 chat format');
  const ids = llama.encodeChat([{ role: 'user', content: 'Hi' }]);
  t.equal(ids[0], 1, 'BOS comes from the template');
  t.not(ids[1], 1, 'and is not added twice');
  {
    const stories = (await HfModelTokenizer.load(storiesPath(), { bos: 1, eos: [2] }))!;
    t.equal(stories.applyChatTemplate([{ role: 'user', content: 'Once upon a time' }]), 'Once upon a time\n', 'plain fallback without a template');
    const sids = stories.encodeChat([{ role: 'user', content: 'Once upon a time' }]);
    t.ok(sids[0] === 1 && sids[1] !== 1, 'BOS once, as an id');
  }
});
