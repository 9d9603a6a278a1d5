// Constrained decoding without a model: random walks over real vocabularies
// (stories260K's 512 tokens, the Llama-2 32k tokenizer) that draw only tokens
// the mask allows; every finished text must parse and validate with ajv.
import t from 'tap';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv } from 'ajv';
import { JsonConstraint, SchemaError } from '../src/json-constraint.js';
import { ConstraintMasker, TokenTrie, vocabTexts } from '../src/token-trie.js';
import { CallScanner, TOOL_MARKER, toolFormat, withMarkerToken } from '../src/tool-format.js';

function sharedDir(): string {
  if (process.env.SHOAL_SHARED) return process.env.SHOAL_SHARED;
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'package.json')) && existsSync(path.join(dir, '..', 'shared'))) return path.join(dir, '..', 'shared');
    const up = path.dirname(dir);
    if (up === dir) return '';
    dir = up;
  }
}

export const SCHEMAS: Array<Record<string, unknown>> = [
  { type: 'object', properties: { name: { type: 'string', maxLength: 12 }, age: { type: 'integer' } }, required: ['name', 'age'], additionalProperties: false },
  { type: 'object', properties: { action: { type: 'string', enum: ['move', 'stop', 'turn left'] }, speed: { type: 'number' }, note: { type: 'string', maxLength: 8 } }, required: ['action'] },
  { type: 'object', properties: { items: { type: 'array', items: { type: 'object', properties: { id: { type: 'integer' }, ok: { type: 'boolean' } }, required: ['id', 'ok'] }, minItems: 1, maxItems: 3 } }, required: ['items'] },
  { type: 'object', properties: { pos: { type: 'object', properties: { x: { type: 'number' }, y: { type: 'number' } }, required: ['x', 'y'], additionalProperties: false }, label: { type: ['string', 'null'], maxLength: 10 } }, required: ['pos', 'label'] },
  { type: 'array', items: { type: 'string', maxLength: 6 }, maxItems: 4 },
  { type: 'object', properties: { kind: { const: 'reply' }, text: { type: 'string', minLength: 2, maxLength: 16 }, tags: { type: 'array', items: { enum: [1, 10, 100, 'x'] }, maxItems: 5 } }, required: ['kind', 'text', 'tags'] },
  { $defs: { node: { type: 'object', properties: { v: { type: 'integer' }, next: { anyOf: [{ $ref: '#/$defs/node' }, { type: 'null' }] } }, required: ['v', 'next'] } }, $ref: '#/$defs/node' },
];

/** Draws allowed tokens at random (closing tokens favoured so walks end) until EOS. */
function walk(masker: ConstraintMasker, texts: Array<string | null>, eos: number, seed: number, maxSteps: number, eosChance = 0.7): { text: string; done: boolean } {
  let s = seed >>> 0 || 1;
  const rnd = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s / 4294967296; };
  let state = masker.constraint.initial();
  let out = '';
  for (let i = 0; i < maxSteps; i++) {
    const m = masker.mask(state);
    const allowed: number[] = [];
    for (let id = 0; id < masker.vocabSize; id++) if ((m[id >>> 5]! >>> (id & 31)) & 1) allowed.push(id);
    if (allowed.length === 0) throw new Error(`dead end after ${JSON.stringify(out)}`);
    let pick: number;
    const closers = allowed.filter((id) => id === eos || /["\]}]/.test(texts[id] ?? ''));
    if (closers.includes(eos) && rnd() < eosChance) pick = eos;
    else if (closers.length && rnd() < 0.35) pick = closers[Math.floor(rnd() * closers.length)]!;
    else pick = allowed[Math.floor(rnd() * allowed.length)]!;
    if (pick === eos) return { text: out, done: true };
    const next = masker.advance(state, pick);
    if (!next) throw new Error(`token ${pick} ${JSON.stringify(texts[pick])} was allowed but the recognizer rejects it after ${JSON.stringify(out)}`);
    state = next;
    out += texts[pick];
  }
  return { text: out, done: false };
}

const shared = sharedDir();
const vocabs = [
  { name: 'stories260K', file: path.join(shared, 'models/stories260K/tokenizer.json'), size: 512, eos: 2, seeds: 60 },
  { name: 'llama2-32k', file: path.join(shared, 'models/llama2-tokenizer-32k/tokenizer.json'), size: 32000, eos: 2, seeds: 12 },
];

for (const v of vocabs) {
  t.test(`random constrained walks on ${v.name}`, { skip: existsSync(v.file) ? false : `${v.file} not found` }, async (t) => {
    const texts = vocabTexts(JSON.parse(readFileSync(v.file, 'utf8')), v.size);
    const trie = new TokenTrie(texts);
    const ajv = new Ajv({ strict: false });
    for (const [si, schema] of [...SCHEMAS.map((s) => s as Record<string, unknown> | null), null].entries()) {
      const validate = ajv.compile(schema ?? { type: 'object' });
      const masker = new ConstraintMasker(new JsonConstraint(schema), trie, texts, v.size, [v.eos]);
      let finished = 0;
      const failures: string[] = [];
      for (let seed = 1; seed <= v.seeds; seed++) {
        const r = walk(masker, texts, v.eos, seed * 7919 + si, 600);
        if (!r.done) continue;
        finished++;
        let doc: unknown;
        try { doc = JSON.parse(r.text); } catch { failures.push(`does not parse: ${r.text}`); continue; }
        if (!validate(doc)) failures.push(`${r.text}: ${ajv.errorsText(validate.errors)}`);
      }
      t.same(failures, [], `schema ${si}: every finished output parses and validates`);
      t.ok(finished >= v.seeds * 0.8, `schema ${si}: ${finished}/${v.seeds} walks finished`);
    }
  });
}

t.test('recognizer details', async (t) => {
  const c = new JsonConstraint({ type: 'object', properties: { a: { type: 'integer' }, b: { type: 'string' } }, required: ['a'] });
  const ok = (s: string) => c.feedText(c.initial(), s) !== null;
  const done = (s: string) => { const st = c.feedText(c.initial(), s); return st !== null && c.isComplete(st); };
  t.ok(done('{"a":1}'));
  t.ok(done('{"a": -12, "b":"x\\"y\\u00e9"}'));
  t.ok(done(' {"b":"", "a":0}'));
  t.notOk(ok('{"c"'), 'unknown key');
  t.notOk(ok('{"a":1,"a"'), 'duplicate key');
  t.notOk(ok('{"a":01'), 'leading zero');
  t.notOk(ok('{"a":1.5'), 'integer');
  t.notOk(ok('{"b":"x"}'), 'required a missing');
  t.notOk(ok('{"b":"\n'), 'raw control character in a string');
  t.notOk(ok('{"a":1}x'), 'nothing after the document');
  t.notOk(ok('{  "a"'), 'at most one blank');
  t.notOk(done('{"a":1'), 'incomplete');
  t.throws(() => new JsonConstraint({ type: 'string', pattern: 'a+' }), SchemaError);
  t.throws(() => new JsonConstraint({ type: 'integer', minimum: 3 }), SchemaError);
  t.throws(() => new JsonConstraint({ anyOf: [{ type: 'object' }, { type: 'object' }] }), /start differently/);
  const e = new JsonConstraint({ enum: [1, 10] });
  t.ok(e.isComplete(e.feedText(e.initial(), '1')!), 'enum 1 complete even though 10 continues it');
  t.ok(e.isComplete(e.feedText(e.initial(), '10')!));
  t.notOk(e.feedText(e.initial(), '11'));
});

t.test('mask cache and cost on the 32k vocabulary', { skip: existsSync(vocabs[1]!.file) ? false : 'no 32k tokenizer' }, async (t) => {
  const texts = vocabTexts(JSON.parse(readFileSync(vocabs[1]!.file, 'utf8')), 32000);
  const trie = new TokenTrie(texts);
  const masker = new ConstraintMasker(new JsonConstraint(SCHEMAS[0]!), trie, texts, 32000, [2]);
  const st = masker.constraint.feedText(masker.constraint.initial(), '{"name":"ab')!;
  const m1 = masker.mask(st);
  const m2 = masker.mask(masker.constraint.feedText(masker.constraint.initial(), '{"name":"abc')!);
  t.equal(masker.stats.computed, 2, 'string length is part of the state with maxLength');
  t.same(m1.length, 1000);
  masker.mask(st);
  t.equal(masker.stats.cached, 1, 'the same state is served from the cache');
  // inside a string almost every token is allowed; after '{' only key openers
  let n = 0;
  for (let id = 0; id < 32000; id++) n += (m2[id >>> 5]! >>> (id & 31)) & 1;
  t.ok(n > 20000, `${n} tokens allowed inside a string`);
  const afterBrace = masker.mask(masker.constraint.feedText(masker.constraint.initial(), '{')!);
  let k = 0;
  for (let id = 0; id < 32000; id++) k += (afterBrace[id >>> 5]! >>> (id & 31)) & 1;
  t.ok(k > 0 && k < 200, `${k} tokens allowed after '{'`);
  t.ok(trie.nodes < 200000, `${trie.nodes} trie nodes`);
});

t.test('tool-call recognizer: name among the tools, arguments by that tool\'s schema, fixed wrapper', async (t) => {
  const tools = [
    { name: 'move', parameters: { type: 'object', properties: { x: { type: 'number' } }, required: ['x'], additionalProperties: false } },
    { name: 'move_to', parameters: { type: 'object', properties: { dock: { type: 'integer' } }, required: ['dock'] } },
    { name: 'stop' },
  ];
  const c = JsonConstraint.toolCall(tools, toolFormat('<tool_call>'));
  const done = (s: string) => { const st = c.feedText(c.initial(), s); return st !== null && c.isComplete(st); };
  t.ok(done('<tool_call>\n{"name": "move", "arguments": {"x":1.5}}\n</tool_call>'));
  t.ok(done('<tool_call>\n{"name": "move_to", "arguments": {"dock": 3}}\n</tool_call>'));
  t.ok(done('<tool_call>\n{"name": "stop", "arguments": {}}\n</tool_call>'));
  t.notOk(c.feedText(c.initial(), '<tool_call>\n{"name": "move", "arguments": {"dock"'), 'arguments follow the named tool');
  t.notOk(c.feedText(c.initial(), '<tool_call>\n{"name": "fly"'), 'unknown tool');
  t.notOk(done('<tool_call>\n{"name": "move", "arguments": {"x":1}}'), 'suffix required');
  t.notOk(c.feedText(c.initial(), '<tool_call>\n{"name": "stop", "arguments": {}}\n</tool_call>\n<'), 'one call only by default');
  const l = JsonConstraint.toolCall(tools, toolFormat('"parameters": <|python_tag|>'));
  t.ok(l.isComplete(l.feedText(l.initial(), '{"name": "move", "parameters": {"x": 2}}')!));
  // random walks: every finished call parses into a known tool with valid arguments
  const file = path.join(shared, 'models/stories260K/tokenizer.json');
  if (!existsSync(file)) return;
  const texts = vocabTexts(JSON.parse(readFileSync(file, 'utf8')), 512);
  const masker = new ConstraintMasker(c, new TokenTrie(texts), texts, 512, [2]);
  const ajv = new Ajv({ strict: false });
  let finished = 0;
  for (let seed = 1; seed <= 40; seed++) {
    const r = walk(masker, texts, 2, seed, 400);
    if (!r.done) continue;
    finished++;
    const m = /^<tool_call>\n(.*)\n<\/tool_call>\s?$/s.exec(r.text);
    const call = JSON.parse(m![1]!) as { name: string; arguments: unknown };
    const tool = tools.find((x) => x.name === call.name)!;
    t.ok(ajv.validate(tool.parameters ?? { type: 'object' }, call.arguments), `${call.name} arguments valid`);
  }
  t.ok(finished >= 30, `${finished}/40 finished`);
});

t.test('parallel tool calls in each template format; the special marker token only where the marker goes', async (t) => {
  const tools = [
    { name: 'move', parameters: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'], additionalProperties: false } },
    { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string' } }, required: ['text'] } },
  ];
  const ok = (c: JsonConstraint, s: string) => { const st = c.feedText(c.initial(), s); return st !== null && c.isComplete(st); };
  // Qwen: <tool_call> blocks, a newline between
  const q = JsonConstraint.toolCall(tools, toolFormat('<tool_call>'), 2);
  const qc = (n: number) => `<tool_call>\n{"name": "move", "arguments": {"x": ${n}}}\n</tool_call>`;
  t.ok(ok(q, qc(1)), 'one call');
  t.ok(ok(q, `${qc(1)}\n${qc(2)}`), 'two calls');
  t.notOk(q.feedText(q.initial(), `${qc(1)}\n${qc(2)}\n<`), 'no third call past maxCalls 2');
  t.notOk(ok(q, `${qc(1)}\n<tool_call>\n{"name": "say", "arguments": {"text": "a"}}`), 'each call closed by its suffix');
  // Llama 3.1: "; " between JSON objects
  const l = JsonConstraint.toolCall(tools, toolFormat('"parameters": <|python_tag|>'), 16);
  t.ok(ok(l, '{"name": "move", "parameters": {"x": 1}}; {"name": "say", "parameters": {"text": "hi"}}'));
  t.notOk(l.feedText(l.initial(), '{"name": "move", "parameters": {"x": 1}}, {'), 'the format\'s own separator only');
  // Mistral with [TOOL_CALLS] as a special token (id 7, no text): the grammar writes TOOL_MARKER there
  const texts: Array<string | null> = ['a', 'b', null, 'c', 'd', 'e', 'f', null];
  const mf = withMarkerToken(toolFormat('[TOOL_CALLS]'), { encode: (s) => (s === '[TOOL_CALLS]' ? [7] : [...s].map(() => 0)) }, texts);
  t.equal(mf.markerId, 7);
  t.equal(mf.open, `${TOOL_MARKER}[`);
  const m = JsonConstraint.toolCall(tools, mf, 16);
  t.ok(ok(m, `${TOOL_MARKER}[{"name": "move", "arguments": {"x": 1}}, {"name": "say", "arguments": {"text": "x"}}]`), 'a list of calls after the marker');
  t.notOk(ok(m, `${TOOL_MARKER}[{"name": "move", "arguments": {"x": 1}}`), 'the list must close');
  t.notOk(m.feedText(m.initial(), '[{"name"'), 'the marker is required');
  t.notOk(m.feedText(m.initial(), `${TOOL_MARKER}[{"name": "say", "arguments": {"text": "${TOOL_MARKER}`), 'never inside a string');
  // a tokenizer where the marker is plain text: the model spells it out
  const plain = withMarkerToken(toolFormat('[TOOL_CALLS]'), { encode: (s) => [...s].map(() => 0) }, texts);
  t.equal(plain.markerId, null);
  t.ok(ok(JsonConstraint.toolCall(tools, plain), '[TOOL_CALLS][{"name": "move", "arguments": {"x": 1}}]'));
  // the scanner hands out each call as its JSON closes, braces in strings included
  const sc = new CallScanner();
  t.same(sc.push('<tool_call>\n{"name": "say", "arguments": {"text": "}{\\"'), []);
  t.same(sc.push('"}}\n</tool_call>\n<tool_call>\n{"name": "move", "arguments": {"x": 2}}'), [{ name: 'say', arguments: { text: '}{"' } }, { name: 'move', arguments: { x: 2 } }]);
  // random walks over a real vocabulary: every finished answer is 1..maxCalls valid calls
  const file = path.join(shared, 'models/stories260K/tokenizer.json');
  if (!existsSync(file)) return;
  const vt = vocabTexts(JSON.parse(readFileSync(file, 'utf8')), 512);
  const masker = new ConstraintMasker(JsonConstraint.toolCall(tools, toolFormat('<tool_call>'), 3), new TokenTrie(vt), vt, 512, [2]);
  const ajv = new Ajv({ strict: false });
  let multi = 0;
  let finished = 0;
  for (let seed = 1; seed <= 60; seed++) {
    const r = walk(masker, vt, 2, seed, 600, 0.2); // EOS less favoured: more walks go on to another call
    if (!r.done) continue;
    finished++;
    const calls = new CallScanner().push(r.text) as Array<{ name: string; arguments: unknown }>;
    t.ok(calls.length >= 1 && calls.length <= 3, `seed ${seed}: ${calls.length} calls`);
    t.equal(r.text.split('<tool_call>').length - 1, calls.length, 'one block per call');
    for (const call of calls) t.ok(ajv.validate(tools.find((x) => x.name === call.name)!.parameters, call.arguments), `${call.name} arguments valid`);
    if (calls.length > 1) multi++;
  }
  t.ok(finished >= 40, `${finished}/60 finished`);
  t.ok(multi >= 5, `${multi} walks made several calls`);
});
