// Scheduler logic with an injected model (the engine interface): priorities,
// bounded depth, deadlines, cancellation, requests queued during a swap.
import t from 'tap';
import { Scheduler, PRIORITY_LOCAL, PRIORITY_REMOTE } from '../src/scheduler.js';
import { EXPERT_CACHE_FILE, ModelLoader, type LoadedModel } from '../src/model/loader.js';
import type { Model, GenerateOptions, GenerateStats, GeneratedChunk, ServeChunk, ServeOptions, ServeStats } from '@shoal/engine';
import { HttpApi } from '../src/http/api.js';
import { DeviceMetrics } from '../src/metrics.js';
import { createLogger } from '@shoal/common';
import { jitteredBackoff } from '../src/mqtt/agent.js';
import { ShoalError } from '@shoal/common';

/** A model whose generate() yields one token per `stepMs` and honours AbortSignal (DI for the engine). */
function scriptedModel(stepMs: number, log: string[] = []): Model {
  return {
    info: { contextLength: 512, backend: 'cpu', isa: 'scalar', threads: 1 } as Model['info'],
    tokenizer: {
      applyChatTemplate: (m: Array<{ content: string }>) => m.map((x) => x.content).join('|'),
      encodeChat: (m: Array<{ content: string }>) => [...m.map((x) => x.content).join('|')].map((c) => c.codePointAt(0)!),
      encode: (text: string) => [...text].map((c) => c.codePointAt(0)!),
      decode: (ids: number[]) => String.fromCodePoint(...ids),
    } as unknown as Model['tokenizer'],
    createSession: () => ({
      contextSize: 512, position: 0,
      async eval() { return new Float32Array(); }, truncate() {}, reset() {}, dispose() {},
      async *generate(prompt: string | number[], o: GenerateOptions = {}): AsyncGenerator<GeneratedChunk, GenerateStats, void> {
        log.push(String(prompt));
        const n = o.maxTokens ?? 4;
        for (let i = 0; i < n; i++) {
          await new Promise((r) => setTimeout(r, stepMs));
          if (o.signal?.aborted) return { promptTokens: 1, generatedTokens: i, stopReason: 'aborted', timeToFirstToken: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 };
          yield { token: i, text: `${i}` };
        }
        return { promptTokens: 1, generatedTokens: n, stopReason: 'max_tokens', timeToFirstToken: stepMs / 1000, prefillTokensPerSecond: 1000, decodeTokensPerSecond: 1000 / stepMs };
      },
      async *serve(prompt: number[], o: ServeOptions & { signal?: AbortSignal } = {}): AsyncGenerator<ServeChunk, ServeStats, void> {
        log.push(String.fromCodePoint(...prompt));
        const n = o.maxTokens ?? 4;
        const stats = (i: number): ServeStats => ({
          promptTokens: prompt.length, cachedTokens: 0, completionTokens: i, finishReason: 'length', reason: 'max_tokens', text: '', toolCalls: [],
          tokens: prompt, timeToFirstToken: stepMs / 1000, constraintSeconds: 0, prefillTokensPerSecond: 1000, decodeTokensPerSecond: 1000 / stepMs,
        });
        for (let i = 0; i < n; i++) {
          await new Promise((r) => setTimeout(r, stepMs));
          if (o.signal?.aborted) return stats(i);
          yield { token: i, text: `${i}` };
        }
        return stats(n);
      },
    }),
    dispose() {},
  };
}

function setup(stepMs: number, maxDepth: number, log: string[] = []) {
  // the scheduler's view of the active model (model/active-model.ts in the daemon)
  const host: { current: LoadedModel | null; contextSizeFor(m: Model): number } = {
    current: { ref: { name: 'm', version: '1' }, dir: '/x', model: scriptedModel(stepMs, log) },
    contextSizeFor: () => 256,
  };
  return { host, sched: new Scheduler(host, { maxDepth, maxConcurrent: 1, maxTokens: 4 }) };
}

const far = () => Date.now() + 60_000;

t.test('bounded depth: excess requests are rejected with QUEUE_FULL, the rest complete', async (t) => {
  const { sched } = setup(5, 3);
  const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) =>
    sched.submit({ id: `r${i}`, source: 'mqtt', priority: PRIORITY_REMOTE, input: { prompt: `p${i}`, maxTokens: 3 }, deadline: far() })));
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  const full = results.filter((r) => r.status === 'rejected' && (r.reason as ShoalError).code === 'QUEUE_FULL').length;
  t.equal(ok, 4, 'one running + three queued');
  t.equal(full, 6);
  t.equal(sched.peakDepth, 3, 'depth never exceeded the limit');
  t.match((results[9] as PromiseRejectedResult).reason.message, /queue is full \(3 of 3/);
});

t.test('local HTTP requests run before queued remote ones', async (t) => {
  const log: string[] = [];
  const { sched } = setup(5, 10, log);
  const ps = [
    sched.submit({ id: 'a', source: 'mqtt', priority: PRIORITY_REMOTE, input: { prompt: 'remote1' }, deadline: far() }),
    sched.submit({ id: 'b', source: 'mqtt', priority: PRIORITY_REMOTE, input: { prompt: 'remote2' }, deadline: far() }),
    sched.submit({ id: 'c', source: 'http', priority: PRIORITY_LOCAL, input: { prompt: 'local' }, deadline: far() }),
  ];
  await Promise.all(ps);
  t.same(log, ['remote1', 'local', 'remote2']);
});

t.test('deadline in the queue and while running; cancellation through AbortSignal', async (t) => {
  const { sched } = setup(20, 10);
  const long = sched.submit({ id: 'long', source: 'mqtt', priority: 1, input: { prompt: 'x', maxTokens: 10 }, deadline: Date.now() + 70 });
  const queued = sched.submit({ id: 'q', source: 'mqtt', priority: 1, input: { prompt: 'y' }, deadline: Date.now() + 30 });
  // both observed at once: on a loaded machine `long` may fail before `queued`
  await Promise.all([
    t.rejects(queued, { code: 'DEADLINE_EXCEEDED', message: /in the queue/ }),
    t.rejects(long, { code: 'DEADLINE_EXCEEDED', message: /while generating/ }),
  ]);
  const ctl = new AbortController();
  const chunks: string[] = [];
  const c = sched.submit({ id: 'c', source: 'mqtt', priority: 1, input: { prompt: 'x', maxTokens: 50 }, deadline: far(), signal: ctl.signal, onChunk: (s) => chunks.push(s) });
  setTimeout(() => ctl.abort(), 60);
  await t.rejects(c, { code: 'CANCELLED' });
  t.ok(chunks.length > 0 && chunks.length < 50, `stopped early after ${chunks.length} tokens`);
  await t.rejects(sched.submit({ id: 'late', source: 'mqtt', priority: 1, input: { prompt: 'x' }, deadline: Date.now() - 1 }), { code: 'DEADLINE_EXCEEDED' });
});

t.test('requests arriving during a swap wait and then run on the new model', async (t) => {
  const log: string[] = [];
  const { host, sched } = setup(5, 10, log);
  const newModel = scriptedModel(1, log);
  let inSwap = false;
  const swap = sched.exclusive(async () => {
    inSwap = true;
    const p = sched.submit({ id: 'during', source: 'mqtt', priority: 1, input: { prompt: 'during-swap' }, deadline: far() });
    await new Promise((r) => setTimeout(r, 50));
    t.equal(sched.depth, 1, 'queued, not dropped, while swapping');
    host.current = { ref: { name: 'm', version: '2' }, dir: '/y', model: newModel };
    inSwap = false;
    return { p };
  });
  const { p } = await swap;
  const r = await p;
  t.notOk(inSwap);
  t.same(r.model, { name: 'm', version: '2' });
});

t.test('no model: NO_ACTIVE_MODEL; drain: SHUTTING_DOWN afterwards', async (t) => {
  const { host, sched } = setup(5, 10);
  host.current = null;
  await t.rejects(sched.submit({ id: 'x', source: 'http', priority: 0, input: { prompt: 'x' }, deadline: far() }), { code: 'NO_ACTIVE_MODEL' });
  const s2 = setup(5, 10).sched;
  const running = s2.submit({ id: 'a', source: 'http', priority: 0, input: { prompt: 'x', maxTokens: 5 }, deadline: far() });
  const drained = await s2.drain(2000);
  t.ok(drained);
  t.equal((await running).text, '01234');
  await t.rejects(s2.submit({ id: 'b', source: 'http', priority: 0, input: { prompt: 'x' }, deadline: far() }), { code: 'SHUTTING_DOWN' });
});

t.test('health check: a model that produces no tokens fails with HEALTH_CHECK_FAILED', async (t) => {
  const empty: Model = { ...scriptedModel(1), createSession: () => ({ ...scriptedModel(1).createSession(), async *generate() { return { promptTokens: 1, generatedTokens: 0, stopReason: 'eos', timeToFirstToken: 0, prefillTokensPerSecond: 0, decodeTokensPerSecond: 0 } as GenerateStats; } }) };
  const host = new ModelLoader(async () => empty, { threads: 1, backend: 'cpu', contextSize: 64, health: { timeoutSec: 2, tokens: 2, prompt: 'x' } });
  await t.rejects(host.loadAndCheck({ name: 'm', version: '1' }, '/x'), { code: 'HEALTH_CHECK_FAILED', message: /no tokens/ });
  const slow = new ModelLoader(async () => scriptedModel(400), { threads: 1, backend: 'cpu', contextSize: 64, health: { timeoutSec: 1, tokens: 10, prompt: 'x' } });
  await t.rejects(slow.loadAndCheck({ name: 'm', version: '1' }, '/x'), { code: 'HEALTH_CHECK_FAILED', message: /exceeded 1 s/ });
  const good = new ModelLoader(async () => scriptedModel(1), { threads: 1, backend: 'cpu', contextSize: 64, health: { timeoutSec: 2, tokens: 3, prompt: 'x' } });
  const r = await good.loadAndCheck({ name: 'm', version: '1' }, '/x');
  t.equal(r.tokens, 3);
});

t.test('model loader: the expert cache goes inside the version folder (removed with it), or is off', async (t) => {
  const seen: Array<string | undefined> = [];
  const opts = { threads: 1, backend: 'cpu' as const, contextSize: 64, health: { timeoutSec: 2, tokens: 1, prompt: 'x' } };
  await new ModelLoader(async (_dir, o) => { seen.push(o?.expertCache); return scriptedModel(1); }, opts).load({ name: 'm', version: '1' }, '/store/m/1');
  await new ModelLoader(async (_dir, o) => { seen.push(o?.expertCache); return scriptedModel(1); }, { ...opts, expertCache: false }).load({ name: 'm', version: '1' }, '/store/m/1');
  t.same(seen, [`/store/m/1/${EXPERT_CACHE_FILE}`, 'off']);
});

t.test('HTTP API: SSE stream, client disconnect cancels, 429 when the queue is full, 400/404/405', async (t) => {
  const { host, sched } = setup(20, 1);
  const metrics = new DeviceMetrics();
  const api = new HttpApi({ scheduler: sched, models: host, metrics, log: createLogger('silent'), defaultDeadlineMs: 60_000, healthy: () => ({ ok: true, detail: {} }) });
  const addr = await api.listen(0, '127.0.0.1');
  t.equal(addr.address, '127.0.0.1');
  t.teardown(() => api.close());
  const base = `http://127.0.0.1:${addr.port}`;
  const post = (p: string, body: unknown, signal?: AbortSignal) => fetch(`${base}${p}`, { method: 'POST', body: JSON.stringify(body), ...(signal ? { signal } : {}) });
  // streamed completion: read the first chunk, then hang up
  const ctl = new AbortController();
  const res = await post('/v1/completions', { prompt: 'x', max_tokens: 200, stream: true }, ctl.signal);
  t.equal(res.status, 200);
  const reader = res.body!.getReader();
  const first = new TextDecoder().decode((await reader.read()).value);
  t.match(first, /^data: \{"id":"cmpl-/);
  ctl.abort();
  await waitUntil(() => sched.stats.rejected === 1, 'cancellation recorded');
  t.equal(sched.stats.requests, 0, 'the generation did not complete');
  t.equal(sched.activeCount, 0, 'the engine stopped generating');
  // queue full → 429 with the code (one running, one waiting, the third rejected)
  const a = post('/v1/completions', { prompt: 'x', max_tokens: 5 });
  await waitUntil(() => sched.activeCount === 1, 'first running');
  const b = post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 5 });
  await waitUntil(() => sched.depth === 1, 'second queued');
  const c = await post('/v1/completions', { prompt: 'x', max_tokens: 5 });
  t.equal(c.status, 429);
  t.match(await c.json(), { error: { code: 'rate_limit_exceeded', type: 'rate_limit_error', message: /queue is full/ } });
  t.ok(Number(c.headers.get('retry-after')) >= 1, 'Retry-After tells the SDK when to retry');
  t.equal((await a).status, 200);
  const chat = await (await b).json() as { object: string; choices: Array<{ message: { content: string } }> };
  t.equal(chat.object, 'chat.completion');
  t.equal(chat.choices[0]!.message.content, '01234');
  t.equal((await post('/v1/completions', { prompt: 5 })).status, 400);
  t.equal((await fetch(`${base}/v1/completions`, { method: 'POST', body: '{bad' })).status, 400);
  t.equal((await fetch(`${base}/v1/nothing`)).status, 404);
  t.equal((await fetch(`${base}/v1/models`, { method: 'DELETE' })).status, 405);
  t.match(await (await fetch(`${base}/metrics`)).text(), /shoal_queue_depth 0/);
});

t.test('reconnect backoff is exponential with jitter and capped', async (t) => {
  for (let attempt = 1; attempt <= 12; attempt++) {
    const exp = Math.min(30_000, 500 * 2 ** (attempt - 1));
    const samples = Array.from({ length: 50 }, () => jitteredBackoff(attempt, 500, 30_000));
    t.ok(samples.every((d) => d >= exp / 2 && d <= exp), `attempt ${attempt}: within [${exp / 2}, ${exp}]`);
    if (attempt === 4) t.ok(new Set(samples).size > 10, 'jittered');
  }
});

async function waitUntil(fn: () => boolean, what: string): Promise<void> {
  const until = Date.now() + 5000;
  while (!fn()) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

t.test('deadlines beyond what setTimeout holds: clamped in the scheduler, rejected by the router', async (t) => {
  const { RequestRouter } = await import('../src/mqtt/router.js');
  const { MAX_TIMER_MS, atDeadline, checkDeadline } = await import('@shoal/common');
  // 40 days ahead: a plain setTimeout overflows to 1 ms and fires at once
  const { sched } = setup(2, 4);
  const r = await sched.submit({ id: 'far', source: 'mqtt', priority: 1, input: { prompt: 'x', maxTokens: 3 }, deadline: Date.now() + 40 * 86_400_000 });
  t.equal(r.usage.completionTokens, 3, 'a far deadline does not fire at once');
  let fired = false;
  const h = atDeadline(Date.now() + MAX_TIMER_MS + 10_000, () => { fired = true; });
  await new Promise((res) => setTimeout(res, 50));
  t.notOk(fired, 'atDeadline past 2^31-1 ms waits');
  h.clear();
  t.same(checkDeadline(Date.now() - 1, 1000).ok, false);
  t.match(checkDeadline(Date.now() + 5_000, 1000), { ok: false, reason: 'too-far', message: /limit is 1 s/ });
  // the router: past -> DEADLINE_EXCEEDED, more than 7 days -> DEADLINE_INVALID, both with a reply
  const replies: Array<{ id: string; error?: { code: string; message: string } }> = [];
  const router = new RequestRouter('d', { ping: async () => ({ pong: true }) } as never, {
    publish: (_topic, reply) => replies.push(reply as never), event: () => {}, log: { warn() {}, debug() {} },
  }, 1000);
  const send = (id: string, deadline: number) => router.handle(Buffer.from(JSON.stringify({ v: 1, id, op: 'ping', args: {}, replyTo: 'shoal/v1/clients/c/replies', deadline })));
  send('past', Date.now() - 10);
  send('micro', Date.now() * 1000);
  send('ok', Date.now() + 6 * 86_400_000);
  await new Promise((res) => setTimeout(res, 20));
  const by = Object.fromEntries(replies.map((x) => [x.id, x]));
  t.equal(by.past?.error?.code, 'DEADLINE_EXCEEDED');
  t.equal(by.micro?.error?.code, 'DEADLINE_INVALID');
  t.match(by.micro?.error?.message, /epoch milliseconds/);
  t.notOk(by.ok?.error, 'six days ahead is accepted');
});
