// The device's OpenAI-compatible API with the official `openai` npm client,
// the real engine (stories260K) and real HTTP on loopback: every feature
// streamed and not, tool-call round trip, schema output validated with ajv,
// stop strings across token boundaries, logprobs against the engine's own
// log-softmax, errors in OpenAI's shape (context overflow → 400, not retried),
// the Responses API, and the prefix cache (same greedy output with and
// without it, cached token counts, eviction, two concurrent conversations).
import t, { type Test } from 'tap';
import { existsSync } from 'node:fs';
import OpenAI from 'openai';
import { Ajv } from 'ajv';
import { createLogger } from '@shoal/common';
import { loadModel, type Model } from '@shoal/engine';
import { storiesPath } from '@shoal/testkit';
import type { ServingModel } from '../src/model/loader.js';
import { Scheduler, type SchedulerOptions } from '../src/scheduler.js';
import { HttpApi } from '../src/http/api.js';
import { DeviceMetrics } from '../src/metrics.js';
import { engineAvailable } from './helpers.js';

const MODEL = storiesPath();
const skip = engineAvailable() || (existsSync(MODEL) ? false : 'stories260K missing');

interface Served { client: OpenAI; base: string; sched: Scheduler; model: Model; calls: () => number; close(): Promise<void> }

/** The daemon's engine host, scheduler and HTTP API around the real engine, on 127.0.0.1. */
async function serve(opts: Partial<SchedulerOptions> = {}, contextSize = 512): Promise<Served> {
  const model = await loadModel(MODEL, { threads: 1 });
  // the daemon's active model, reduced to what the scheduler and the API read
  const models: ServingModel = { current: { ref: { name: 'stories', version: '1.0.0' }, dir: MODEL, model }, contextSizeFor: () => contextSize };
  const sched = new Scheduler(models, { maxDepth: 8, maxConcurrent: 1, maxTokens: 64, ...opts });
  const api = new HttpApi({ scheduler: sched, models, metrics: new DeviceMetrics(), log: createLogger('silent'), defaultDeadlineMs: 60_000, healthy: () => ({ ok: true, detail: {} }) });
  const addr = await api.listen(0, '127.0.0.1');
  const base = `http://127.0.0.1:${addr.port}`;
  let n = 0;
  const client = new OpenAI({
    baseURL: `${base}/v1`, apiKey: 'unused', maxRetries: 2,
    fetch: (url: string | URL | Request, init?: RequestInit) => { n++; return fetch(url, init); },
  });
  return { client, base, sched, model, calls: () => n, close: async () => { await api.close(); model.dispose(); } };
}

/** The call fails with an OpenAI API error matching `want`. */
async function fails(t: Test, p: Promise<unknown>, want: Record<string, unknown>): Promise<void> {
  const e = await p.then(() => null, (x: unknown) => x);
  t.ok(e instanceof OpenAI.APIError, `an API error (${(e as Error)?.message})`);
  t.match(e, want);
}

const USER = [{ role: 'user' as const, content: 'Once upon a time there was a little cat.' }];

t.test('OpenAI client against the device', { skip, timeout: 240_000 }, async (t) => {
  const s = await serve({ kvSlots: 2 });
  t.teardown(() => s.close());
  const { client } = s;

  t.test('models: list, retrieve, 404', async (t) => {
    const list = await client.models.list();
    t.same(list.data.map((m) => m.id), ['stories']);
    t.equal((await client.models.retrieve('stories')).id, 'stories');
    await fails(t, client.models.retrieve('gpt-9'), { status: 404 });
    await fails(t, client.chat.completions.create({ model: 'gpt-9', messages: USER }), { status: 404, code: 'model_not_found', param: 'model' });
  });

  t.test('chat: plain and streamed give the same greedy text and usage', async (t) => {
    const a = await client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 24, temperature: 0 });
    t.ok(a.choices[0]!.message.content!.length > 0);
    t.equal(a.usage!.completion_tokens, 24);
    t.equal(a.choices[0]!.finish_reason, 'length');
    const stream = await client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let usage: OpenAI.CompletionUsage | undefined;
    for await (const c of stream) { text += c.choices[0]?.delta.content ?? ''; if (c.usage && c.choices.length === 0) usage = c.usage; }
    t.equal(text, a.choices[0]!.message.content);
    t.equal(usage?.completion_tokens, 24);
    // the second identical request found its prompt in the prefix cache
    t.ok((usage as { prompt_tokens_details?: { cached_tokens?: number } }).prompt_tokens_details!.cached_tokens! > 0, 'cached_tokens reported');
  });

  t.test('content parts, developer role, tool messages and assistant tool_calls are accepted', async (t) => {
    const r = await client.chat.completions.create({
      model: 'stories', max_tokens: 4, messages: [
        { role: 'developer', content: [{ type: 'text', text: 'Tell ' }, { type: 'text', text: 'stories.' }] },
        { role: 'user', content: [{ type: 'text', text: 'Weather?' }] },
        { role: 'assistant', content: null, tool_calls: [{ id: 'a1B2c3D4e', type: 'function', function: { name: 'w', arguments: '{"city":"Oslo"}' } }] },
        { role: 'tool', tool_call_id: 'a1B2c3D4e', content: 'sunny' },
      ],
    });
    t.equal(r.choices[0]!.finish_reason, 'length');
    await fails(t, client.chat.completions.create({ model: 'stories', messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://x/y.png' } }] }] }),
      { status: 400, param: 'messages[0].content[0].type' });
  });

  t.test('errors: context overflow is a 400 with token counts and is not retried; bad parameters name themselves', async (t) => {
    const before = s.calls();
    const long = 'the cat sat on the mat and '.repeat(200);
    const err = await client.chat.completions.create({ model: 'stories', messages: [{ role: 'user', content: long }] }).catch((e: unknown) => e);
    t.ok(err instanceof OpenAI.BadRequestError, 'BadRequestError');
    t.match(err, { status: 400, code: 'context_length_exceeded', type: 'invalid_request_error' });
    t.match((err as Error).message, /maximum context length is 512 tokens/);
    t.equal(s.calls() - before, 1, 'the SDK did not retry');
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, n: 2 }), { status: 400, param: 'n' });
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, temperature: 7 }), { status: 400, param: 'temperature' });
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, stop: ['a', 'b', 'c', 'd', 'e'] }), { status: 400, param: 'stop' });
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, logit_bias: { 99999: 5 } }), { status: 400 });
    // max_tokens (or its newer names) past what the prompt leaves of the context: a 400 naming it, with the counts, not retried
    const n0 = s.calls();
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 600 }),
      { status: 400, code: 'context_length_exceeded', param: 'max_tokens', message: /maximum context length is 512 tokens\. However, you requested \d+ tokens \(\d+ in the messages, 600 in the completion/ });
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, max_completion_tokens: 500, stream: true }),
      { status: 400, code: 'context_length_exceeded', param: 'max_completion_tokens' });
    await fails(t, client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 510 }),
      { status: 400, code: 'context_length_exceeded', param: 'max_tokens', message: /\(\d+ in the prompt, 510 in the completion/ });
    await fails(t, client.responses.create({ model: 'stories', input: 'Once upon a time', max_output_tokens: 509 }),
      { status: 400, code: 'context_length_exceeded', param: 'max_output_tokens', message: /\(\d+ in the input, 509 in the completion/ });
    t.equal(s.calls() - n0, 4, 'none of them retried');
    // exactly filling the context is allowed
    const prompt = (await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 1 })).usage!.prompt_tokens;
    const full = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 512 - prompt, temperature: 0, logit_bias: { 2: -100 } });
    t.equal(full.usage!.completion_tokens, 512 - prompt, 'prompt + max_tokens = the context: served whole');
    // without max_tokens the answer may use what the context has left (the daemon's cap, 64 here, is larger)
    const longer = 'the cat sat on the mat and '.repeat(46);
    const rest = await client.completions.create({ model: 'stories', prompt: longer, temperature: 0, logit_bias: { 2: -100 } });
    t.ok(rest.usage!.prompt_tokens > 512 - 64, `a prompt of ${rest.usage!.prompt_tokens} tokens leaves less than the cap`);
    t.equal(rest.choices[0]!.finish_reason, 'length');
    t.equal(rest.usage!.completion_tokens, 512 - rest.usage!.prompt_tokens + 1, 'the rest of the context used (the last token drawn from the full cache)');
  });

  t.test('stop strings across token boundaries, never streamed in part', async (t) => {
    const base = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, logprobs: 0 });
    const toks = base.choices[0]!.logprobs!.tokens!;
    // a stop string made of the end of token 5 and the start of token 6
    const k = toks.findIndex((x, i) => i >= 4 && x.length >= 2 && (toks[i + 1] ?? '').length >= 2);
    const stopStr = toks[k]!.slice(-2) + toks[k + 1]!.slice(0, 2);
    const full = base.choices[0]!.text;
    const want = full.slice(0, full.indexOf(stopStr));
    const r = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: [stopStr, 'zzzz'] });
    t.equal(r.choices[0]!.text, want, `text ends before ${JSON.stringify(stopStr)}`);
    t.equal(r.choices[0]!.finish_reason, 'stop');
    const st = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 40, temperature: 0, stop: stopStr, stream: true });
    let streamed = '';
    for await (const c of st) streamed += c.choices[0]?.text ?? '';
    t.equal(streamed, want, 'the stream never carried any part of the stop string');
  });

  t.test('logprobs equal the engine\'s own log-softmax (chat, streamed too)', async (t) => {
    const r = await client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 3 });
    const lp = r.choices[0]!.logprobs!.content!;
    t.equal(lp.length, 12);
    // the engine: prompt ids + greedy ids through one all-logits pass
    const tok = s.model.tokenizer!;
    const prompt = tok.encodeChat(USER, { addGenerationPrompt: true });
    const sess = s.model.createSession({ contextSize: 512 });
    const ids: number[] = [];
    const gen = sess.generate(prompt, { maxTokens: 12, temperature: 0 });
    for (;;) { const x = await gen.next(); if (x.done) break; if (x.value.token >= 0) ids.push(x.value.token); }
    sess.reset();
    const V = s.model.info.vocabSize;
    const rows = await sess.eval([...prompt, ...ids], { allLogits: true });
    sess.dispose();
    let worst = 0;
    ids.forEach((id, i) => {
      const row = rows.subarray((prompt.length - 1 + i) * V, (prompt.length + i) * V);
      let mx = -Infinity;
      for (const x of row) mx = Math.max(mx, x);
      let sum = 0;
      for (const x of row) sum += Math.exp(x - mx);
      worst = Math.max(worst, Math.abs(lp[i]!.logprob - (row[id]! - mx - Math.log(sum))));
      t.equal(lp[i]!.top_logprobs.length, 3);
      t.ok(lp[i]!.top_logprobs[0]!.logprob >= lp[i]!.top_logprobs[1]!.logprob);
    });
    t.ok(worst < 1e-3, `max |API logprob − log-softmax| = ${worst.toExponential(2)}`);
    const st = await client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 12, temperature: 0, logprobs: true, top_logprobs: 2, stream: true });
    const streamed: number[] = [];
    for await (const c of st) for (const x of c.choices[0]?.logprobs?.content ?? []) streamed.push(x.logprob);
    t.equal(streamed.length, lp.length, 'a logprob per streamed token');
    // (the second request reuses the cached prompt: KV from a batched prefill vs. from single steps differs in the last bits)
    t.ok(streamed.every((x, i) => Math.abs(x - lp[i]!.logprob) < 1e-3), 'the same logprobs in the stream');
  });

  t.test('penalties, logit_bias, seed', async (t) => {
    const plain = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, logprobs: 0 });
    const firstTok = plain.choices[0]!.logprobs!.tokens![0]!;
    const ids = s.model.tokenizer!.vocabTexts!(s.model.info.vocabSize);
    // every id with that text (a piece and its byte-fallback twin)
    const bias = Object.fromEntries(ids.flatMap((x, id) => (x === firstTok ? [[id, -100]] : [])));
    const banned = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 5, temperature: 0, logprobs: 0, logit_bias: bias });
    t.not(banned.choices[0]!.logprobs!.tokens![0], firstTok, 'logit_bias -100 bans the greedy token');
    const pen = await client.completions.create({ model: 'stories', prompt: 'Once upon a time', max_tokens: 30, temperature: 0, frequency_penalty: 2, presence_penalty: 2 });
    t.not(pen.choices[0]!.text, plain.choices[0]!.text, 'penalties change a greedy generation');
    const s1 = await client.completions.create({ model: 'stories', prompt: 'Once', max_tokens: 20, temperature: 1, seed: 42 });
    const s2 = await client.completions.create({ model: 'stories', prompt: 'Once', max_tokens: 20, temperature: 1, seed: 42 });
    const s3 = await client.completions.create({ model: 'stories', prompt: 'Once', max_tokens: 20, temperature: 1, seed: 43 });
    t.equal(s1.choices[0]!.text, s2.choices[0]!.text, 'same seed, same text');
    t.not(s1.choices[0]!.text, s3.choices[0]!.text, 'another seed, another text');
  });

  t.test('response_format json_schema / json_object: always parses and validates', async (t) => {
    const ajv = new Ajv({ strict: false });
    const schemas = [
      { type: 'object', properties: { name: { type: 'string', maxLength: 10 }, age: { type: 'integer' }, tags: { type: 'array', items: { type: 'string', enum: ['a', 'b"c'] }, maxItems: 3 } }, required: ['name', 'age', 'tags'], additionalProperties: false },
      { type: 'object', properties: { ok: { type: 'boolean' }, pos: { type: 'object', properties: { x: { type: 'number' }, y: { type: 'number' } }, required: ['x', 'y'] }, note: { type: ['string', 'null'], maxLength: 6 } }, required: ['ok', 'pos'] },
    ];
    for (const [i, schema] of schemas.entries()) {
      const validate = ajv.compile(schema);
      for (let seed = 1; seed <= 6; seed++) {
        const stream = seed % 2 === 0;
        const req = { model: 'stories', messages: USER, max_tokens: 200, temperature: 1, seed, response_format: { type: 'json_schema' as const, json_schema: { name: `s${i}`, schema, strict: true } } };
        let text = '';
        if (stream) for await (const c of await client.chat.completions.create({ ...req, stream: true })) text += c.choices[0]?.delta.content ?? '';
        else text = (await client.chat.completions.create(req)).choices[0]!.message.content!;
        let doc: unknown;
        try { doc = JSON.parse(text); } catch { t.fail(`schema ${i} seed ${seed}: not JSON: ${text}`); continue; }
        t.ok(validate(doc), `schema ${i} seed ${seed}${stream ? ' (stream)' : ''}: ${text}`);
      }
    }
    const o = await client.chat.completions.create({ model: 'stories', messages: USER, max_tokens: 120, temperature: 0.8, seed: 3, response_format: { type: 'json_object' } });
    const text = o.choices[0]!.message.content!;
    if (o.choices[0]!.finish_reason === 'stop') t.type(JSON.parse(text), 'object');
    await fails(t, client.chat.completions.create({ model: 'stories', messages: USER, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: 'a+' } } } }), { status: 400 });
  });

  t.test('tools: named and required choices, streamed, and a round trip', async (t) => {
    const tools: OpenAI.ChatCompletionFunctionTool[] = [
      { type: 'function', function: { name: 'move', parameters: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'], additionalProperties: false } } },
      { type: 'function', function: { name: 'say', parameters: { type: 'object', properties: { text: { type: 'string', maxLength: 12 } }, required: ['text'] } } },
    ];
    const ajv = new Ajv({ strict: false });
    const named = await client.chat.completions.create({ model: 'stories', messages: USER, tools, tool_choice: { type: 'function', function: { name: 'move' } }, max_tokens: 120, temperature: 0.7, seed: 1 });
    const c = named.choices[0]!;
    t.equal(c.finish_reason, 'tool_calls');
    t.equal(c.message.content, null);
    const call = c.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    t.equal(call.function.name, 'move');
    t.ok(ajv.validate(tools[0]!.function.parameters!, JSON.parse(call.function.arguments)), `arguments ${call.function.arguments} valid`);
    // streamed, assembled by the SDK's own helper
    const runner = client.chat.completions.stream({ model: 'stories', messages: USER, tools, tool_choice: 'required', parallel_tool_calls: false, max_tokens: 120, temperature: 0.7, seed: 2 });
    const final = await runner.finalChatCompletion();
    const sc = final.choices[0]!.message.tool_calls![0]! as OpenAI.ChatCompletionMessageFunctionToolCall;
    t.ok(['move', 'say'].includes(sc.function.name), 'a known tool');
    t.ok(ajv.validate(tools.find((x) => x.function.name === sc.function.name)!.function.parameters!, JSON.parse(sc.function.arguments)));
    t.equal(final.choices[0]!.finish_reason, 'tool_calls');
    // round trip: the call and its result go back, the model answers in text
    const back = await client.chat.completions.create({
      model: 'stories', max_tokens: 8, tools, tool_choice: 'none',
      messages: [...USER, c.message as OpenAI.ChatCompletionMessageParam, { role: 'tool', tool_call_id: call.id, content: '{"ok":true}' }],
    });
    t.equal(back.choices[0]!.finish_reason, 'length');
    t.ok(back.choices[0]!.message.content);
  });

  t.test('parallel tool calls: several in one answer, streamed by index, parallel_tool_calls false → one, round trip', async (t) => {
    const tools: OpenAI.ChatCompletionFunctionTool[] = [
      { type: 'function', function: { name: 'beep', parameters: { type: 'object', properties: {}, additionalProperties: false } } },
      { type: 'function', function: { name: 'turn', parameters: { type: 'object', properties: { deg: { type: 'integer', enum: [90, 180] } }, required: ['deg'], additionalProperties: false } } },
    ];
    const ajv = new Ajv({ strict: false });
    const valid = (c: OpenAI.ChatCompletionMessageToolCall) => {
      const f = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
      return ajv.validate(tools.find((x) => x.function.name === f.name)!.function.parameters!, JSON.parse(f.arguments));
    };
    // EOS banned: after each call the grammar offers only EOS or the start of another call
    const req = { model: 'stories', messages: USER, tools, tool_choice: 'required' as const, max_tokens: 160, temperature: 0.9, seed: 7, logit_bias: { 2: -100 } };
    const many = await client.chat.completions.create(req);
    const calls = many.choices[0]!.message.tool_calls!;
    t.ok(calls.length >= 2, `${calls.length} calls in one answer`);
    t.ok(calls.every(valid), 'each call\'s arguments match its schema');
    t.equal(new Set(calls.map((c) => c.id)).size, calls.length, 'distinct ids');
    // the same request streamed: the SDK's own accumulator rebuilds the same calls from the index of each delta
    const raw: Array<{ index: number; id?: string }> = [];
    const runner = client.chat.completions.stream(req);
    runner.on('chunk', (c) => { for (const d of c.choices[0]?.delta.tool_calls ?? []) raw.push({ index: d.index, ...(d.id ? { id: d.id } : {}) }); });
    const final = await runner.finalChatCompletion();
    const sc = final.choices[0]!.message.tool_calls!;
    t.same(sc.map((c) => [(c as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, (c as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments]),
      calls.map((c) => [(c as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, (c as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments]), 'stream = non-stream');
    t.same([...new Set(raw.map((r) => r.index))], calls.map((_, i) => i), 'deltas carry indices 0, 1, ... in order');
    t.equal(raw.filter((r) => r.id).length, calls.length, 'one id per call, in its first delta');
    // parallel_tool_calls false: one call, then only EOS is allowed (the ban cannot prolong it)
    for (const stream of [false, true]) {
      const one = stream
        ? await client.chat.completions.stream({ ...req, parallel_tool_calls: false }).finalChatCompletion()
        : await client.chat.completions.create({ ...req, parallel_tool_calls: false });
      t.equal(one.choices[0]!.message.tool_calls!.length, 1, `parallel_tool_calls false${stream ? ' (stream)' : ''}: one call`);
      t.equal(one.choices[0]!.finish_reason, 'tool_calls');
    }
    // round trip: the calls and one result each go back through the history
    const back = await client.chat.completions.create({
      model: 'stories', max_tokens: 8, tools, tool_choice: 'none',
      messages: [...USER, many.choices[0]!.message as OpenAI.ChatCompletionMessageParam, ...calls.map((c) => ({ role: 'tool' as const, tool_call_id: c.id, content: 'done' }))],
    });
    t.ok(back.choices[0]!.message.content, 'answered in text after the results');
    // the Responses API: one function_call item per call
    const rs = await client.responses.create({ model: 'stories', input: 'Once upon a time', max_output_tokens: 160, temperature: 0.9, tool_choice: 'required',
      tools: tools.map((x) => ({ type: 'function' as const, name: x.function.name, parameters: x.function.parameters!, strict: true })) });
    t.ok(rs.output.filter((o) => o.type === 'function_call').length >= 1);
    const rs1 = await client.responses.create({ model: 'stories', input: 'Once upon a time', max_output_tokens: 160, temperature: 0.9, tool_choice: 'required', parallel_tool_calls: false,
      tools: tools.map((x) => ({ type: 'function' as const, name: x.function.name, parameters: x.function.parameters!, strict: true })) });
    t.equal(rs1.output.filter((o) => o.type === 'function_call').length, 1, 'Responses: parallel_tool_calls false → one call');
    t.equal(rs1.parallel_tool_calls, false);
    // streamed: each call's events (added → arguments delta → arguments done → item done) once, at
    // consecutive output indices, and the completed response lists the same items
    const rss = await client.responses.create({ model: 'stories', input: 'Once upon a time', max_output_tokens: 160, temperature: 0.9, tool_choice: 'required', stream: true,
      tools: tools.map((x) => ({ type: 'function' as const, name: x.function.name, parameters: x.function.parameters!, strict: true })) });
    const evs: Array<{ type: string; output_index?: number; item?: { type: string; id?: string; arguments?: string } ; response?: OpenAI.Responses.Response }> = [];
    for await (const ev of rss) evs.push(ev as (typeof evs)[number]);
    const done = evs.filter((e) => e.type === 'response.output_item.done' && e.item?.type === 'function_call');
    const added = evs.filter((e) => e.type === 'response.output_item.added' && e.item?.type === 'function_call');
    const completed = evs[evs.length - 1]!.response!;
    const finalCalls = completed.output.filter((o) => o.type === 'function_call');
    t.ok(done.length >= 1 && done.length === added.length && done.length === finalCalls.length, `${done.length} streamed calls, each added and done once`);
    t.same(done.map((e) => e.output_index), finalCalls.map((_c, i) => i), 'output indices 0, 1, ...');
    t.same(done.map((e) => e.item), finalCalls, 'the completed response lists the streamed calls');
    for (const [i, d] of done.entries()) {
      const seq = evs.filter((e) => e.output_index === i).map((e) => e.type);
      t.same(seq, ['response.output_item.added', 'response.function_call_arguments.delta', 'response.function_call_arguments.done', 'response.output_item.done'], `call ${i}: events in order`);
      t.ok(d.item?.arguments && JSON.parse(d.item.arguments), `call ${i}: arguments parse`);
    }
  });

  t.test('Responses API: text, instructions, stream events, max_output_tokens, structured output, tools', async (t) => {
    const r = await client.responses.create({ model: 'stories', input: 'Once upon a time', instructions: 'Tell a story.', max_output_tokens: 16, temperature: 0 });
    t.equal(r.status, 'incomplete');
    t.ok(r.output_text.length > 0);
    t.equal(r.usage!.output_tokens, 16);
    const st = await client.responses.create({ model: 'stories', input: [{ role: 'user', content: 'Once upon a time' }], instructions: 'Tell a story.', max_output_tokens: 16, temperature: 0, stream: true });
    const types: string[] = [];
    let text = '';
    for await (const ev of st) { types.push(ev.type); if (ev.type === 'response.output_text.delta') text += ev.delta; }
    t.equal(text, r.output_text, 'stream deltas = the plain response');
    t.equal(types[0], 'response.created');
    t.ok(types.includes('response.output_text.done'));
    t.match(types[types.length - 1], /response\.(completed|incomplete)/);
    const js = await client.responses.create({ model: 'stories', input: 'A cat', max_output_tokens: 150, temperature: 1, text: { format: { type: 'json_schema', name: 'cat', strict: true, schema: { type: 'object', properties: { name: { type: 'string', maxLength: 8 }, legs: { type: 'integer' } }, required: ['name', 'legs'], additionalProperties: false } } } });
    const doc = JSON.parse(js.output_text) as { name: string; legs: number };
    t.type(doc.legs, 'number');
    const fc = await client.responses.create({ model: 'stories', input: 'Move!', max_output_tokens: 100, tool_choice: 'required',
      tools: [{ type: 'function', name: 'move', strict: true, parameters: { type: 'object', properties: { x: { type: 'integer' } }, required: ['x'], additionalProperties: false } }] });
    const item = fc.output.find((o) => o.type === 'function_call') as OpenAI.Responses.ResponseFunctionToolCall;
    t.equal(item.name, 'move');
    t.type((JSON.parse(item.arguments) as { x: number }).x, 'number');
    await fails(t, client.responses.create({ model: 'stories', input: 'x', previous_response_id: 'resp_1' }), { status: 400, param: 'previous_response_id' });
  });
});

t.test('prefix cache: identical greedy output with and without it, reused tokens, eviction, concurrent conversations', { skip, timeout: 240_000 }, async (t) => {
  const on = await serve({ kvSlots: 2, maxConcurrent: 2 });
  const off = await serve({ kvSlots: 2, maxConcurrent: 2, prefixCache: false });
  t.teardown(async () => { await on.close(); await off.close(); });
  const turn = async (c: OpenAI, messages: OpenAI.ChatCompletionMessageParam[]) => {
    const r = await c.chat.completions.create({ model: 'stories', messages, max_tokens: 16, temperature: 0 });
    return { text: r.choices[0]!.message.content!, usage: r.usage as OpenAI.CompletionUsage & { prompt_tokens_details: { cached_tokens: number } } };
  };
  // a 4-turn conversation through both servers
  const conv = async (c: OpenAI, opener: string) => {
    const msgs: OpenAI.ChatCompletionMessageParam[] = [{ role: 'system', content: 'You tell stories.' }];
    const out: Array<Awaited<ReturnType<typeof turn>>> = [];
    for (const u of [opener, 'Then what?', 'And the dog?', 'The end.']) {
      msgs.push({ role: 'user', content: u });
      const r = await turn(c, msgs);
      out.push(r);
      msgs.push({ role: 'assistant', content: r.text });
    }
    return out;
  };
  const a = await conv(on.client, 'Once upon a time');
  const b = await conv(off.client, 'Once upon a time');
  t.same(a.map((x) => x.text), b.map((x) => x.text), 'greedy text identical with and without the prefix cache');
  t.same(b.map((x) => x.usage.prompt_tokens_details.cached_tokens), [0, 0, 0, 0], 'nothing cached when disabled');
  for (let i = 1; i < 4; i++) {
    const cached = a[i]!.usage.prompt_tokens_details.cached_tokens;
    t.ok(cached >= a[i - 1]!.usage.prompt_tokens, `turn ${i + 1}: ${cached} of ${a[i]!.usage.prompt_tokens} prompt tokens reused (previous prompt had ${a[i - 1]!.usage.prompt_tokens})`);
  }
  // two conversations at once keep their own slots
  const [x, y] = await Promise.all([conv(on.client, 'A dog ran'), conv(on.client, 'The sun was hot')]);
  t.ok(x[3]!.usage.prompt_tokens_details.cached_tokens >= x[2]!.usage.prompt_tokens, 'conversation 1 kept its slot');
  t.ok(y[3]!.usage.prompt_tokens_details.cached_tokens >= y[2]!.usage.prompt_tokens, 'conversation 2 kept its slot');
  // a third conversation evicts the least recently used slot
  const ev0 = on.sched.stats.kvCache!.evictions;
  await turn(on.client, [{ role: 'user', content: 'Lily had a red ball.' }]);
  t.equal(on.sched.stats.kvCache!.evictions, ev0 + 1, 'LRU eviction counted');
  t.equal(on.sched.stats.kvCache!.slots, 2);
  t.ok(on.sched.stats.kvCache!.reusedTokens > 0);
});
