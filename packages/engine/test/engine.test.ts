// The engine through its TypeScript API on the real stories260K: greedy output
// equals the reference, sampling is reproducible, generation streams without
// blocking the event loop, and can be aborted.
import t from 'tap';
import { readFileSync } from 'node:fs';
import { loadModel } from '../src/engine.js';
import type { GenerateStats, Model, Session } from '../src/types.js';
import { storiesPath } from '@shoal/testkit';


interface RefCase { prompt: string; input_ids: number[]; steps: number; ids_after_bos: number[]; text: string }

async function collect(session: Session, prompt: string | number[], opts: Parameters<Session['generate']>[1]) {
  const ids: number[] = [];
  let text = '';
  const gen = session.generate(prompt, opts);
  for (;;) {
    const r = await gen.next();
    if (r.done) return { ids, text, stats: r.value as GenerateStats };
    if (r.value.token >= 0) ids.push(r.value.token);
    text += r.value.text;
  }
}

t.test('stories260K through the TypeScript API', async (t) => {
  const model: Model = await loadModel(storiesPath(), { threads: 2 });
  t.teardown(() => model.dispose());
  const ref = JSON.parse(readFileSync(storiesPath('reference_greedy.json'), 'utf8')) as { cases: RefCase[] };

  t.test('model info', async (t) => {
    const i = model.info;
    t.equal(i.arch, 'LlamaForCausalLM');
    t.equal(i.quant, 'none');
    t.equal(i.vocabSize, 512);
    t.equal(i.layers, 5);
    t.equal(i.kvHeads, 4);
    t.equal(i.tiedEmbeddings, true);
    t.ok(i.parameters > 250_000 && i.parameters < 270_000, `${i.parameters} parameters`);
    t.ok(i.bytesPerToken > 0 && i.weightBytes > 0);
    t.equal(i.backend, 'cpu');
  });

  t.test('greedy generations equal reference_greedy.json', async (t) => {
    for (const c of ref.cases) {
      const s = model.createSession();
      const prompt = c.input_ids;
      const { ids, text, stats } = await collect(s, prompt, {
        temperature: 0, maxTokens: c.steps - (prompt.length - 1), stopTokenIds: [1],
      });
      t.same([...prompt.slice(1), ...ids], c.ids_after_bos, `tokens for '${c.prompt}'`);
      const promptText = model.tokenizer!.decode(prompt.slice(1));
      t.equal(promptText + text, c.text, `streamed text for '${c.prompt}'`);
      t.equal(stats.generatedTokens, ids.length);
      s.dispose();
    }
  });

  t.test('text prompt is tokenized with BOS', async (t) => {
    const s = model.createSession();
    const { ids } = await collect(s, 'Once upon a time', { maxTokens: 8 });
    t.same(ids, ref.cases[1]!.ids_after_bos.slice(4, 12));
    t.equal(s.position, 5 + 7, 'prompt + generated tokens (the last one is not yet evaluated)');
    s.dispose();
  });

  t.test('same seed, same output; another seed, another output', async (t) => {
    const run = async (seed: number) => {
      const s = model.createSession();
      const r = await collect(s, 'Once upon a time', { temperature: 1.0, topK: 40, topP: 0.95, minP: 0.02, repeatPenalty: 1.1, seed, maxTokens: 48 });
      s.dispose();
      return r.ids;
    };
    const a = await run(42);
    const b = await run(42);
    const c = await run(7);
    t.same(a, b, 'seed 42 twice');
    t.notSame(a, c, 'seed 7 differs');
    t.equal(a.length, 48);
  });

  t.test('the event loop keeps running and abort stops the generation', async (t) => {
    const s = model.createSession();
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    const ac = new AbortController();
    let n = 0;
    const gen = s.generate('Once upon a time', { maxTokens: 400, signal: ac.signal, stopTokenIds: [] });
    let stats: GenerateStats | undefined;
    for (;;) {
      const r = await gen.next();
      if (r.done) { stats = r.value; break; }
      if (++n === 20) ac.abort();
    }
    clearInterval(timer);
    t.equal(stats!.stopReason, 'aborted');
    t.ok(n >= 20 && n < 400, `stopped after ${n} tokens`);
    t.ok(ticks > 0, `timers fired ${ticks} times during generation`);
    // the session is usable again afterwards
    const again = await collect(s, [1], { maxTokens: 2 });
    t.equal(again.ids.length, 2);
    s.dispose();
  });

  t.test('breaking out of the stream early cancels the native loop', async (t) => {
    const s = model.createSession();
    let n = 0;
    for await (const _chunk of s.generate('Once upon a time', { maxTokens: 300, stopTokenIds: [] })) {
      if (++n === 5) break;
    }
    const more = await collect(s, [], { maxTokens: 3 });
    t.equal(more.ids.length, 3, 'the session continues from where it stopped');
    s.dispose();
  });

  t.test('two sessions generate concurrently without mixing state', async (t) => {
    const s1 = model.createSession();
    const s2 = model.createSession();
    const [a, b] = await Promise.all([
      collect(s1, ref.cases[1]!.input_ids, { maxTokens: 40, stopTokenIds: [1] }),
      collect(s2, ref.cases[2]!.input_ids, { maxTokens: 40, stopTokenIds: [1] }),
    ]);
    t.same(a.ids, ref.cases[1]!.ids_after_bos.slice(4, 44));
    t.same(b.ids, ref.cases[2]!.ids_after_bos.slice(11, 51));
    s1.dispose();
    s2.dispose();
  });

  t.test('context limit gives a clear error', async (t) => {
    const s = model.createSession({ contextSize: 8 });
    await t.rejects(collect(s, [1, 403, 407, 261, 378, 432, 383, 286, 261, 376], {}), { code: 'SHOAL_ERR_CONTEXT_FULL' });
    await t.rejects(s.eval(new Array(9).fill(5)), { code: 'SHOAL_ERR_CONTEXT_FULL', message: /context/ });
    const r = await collect(s, [1, 403, 407], { maxTokens: 100, stopTokenIds: [] });
    t.equal(r.stats.stopReason, 'context_full', 'generation stops at the end of the context');
    t.equal(s.position, 8);
    t.throws(() => model.createSession({ contextSize: 100000 }), { code: 'SHOAL_ERR_INVALID_ARG' });
    await t.rejects(s.eval([600]), { code: 'SHOAL_ERR_CONTEXT_FULL' });
    s.reset();
    await t.rejects(s.eval([600]), { code: 'SHOAL_ERR_INVALID_ARG', message: /vocabulary/ });
    await t.rejects(collect(s, [1], { temperature: -1 }), { code: 'SHOAL_ERR_INVALID_ARG', message: /temperature/ });
    s.dispose();
    await t.rejects(s.eval([1]), { code: 'SHOAL_ERR_DISPOSED' });
  });
});

t.test('missing model directory', async (t) => {
  await t.rejects(loadModel('/nonexistent/model/dir'), { code: 'SHOAL_ERR_IO', message: /does not exist/ });
});
