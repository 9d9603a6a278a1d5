// bench-serve.ts — serving benchmarks through the same path the device uses
// (chat template → ids, a KV slot of the prefix cache, Session.serve):
//  1. a multi-turn chat: time to first token per turn with the prefix cache
//     and without it (without, TTFT grows with the history);
//  2. constrained decoding: decode time per token with a JSON schema against
//     the same request without, alternated A B A B (shared cores drift); wall
//     time and the process's CPU time (which other processes' load on shared
//     cores disturbs far less than the wall clock).
import { loadModel } from './engine.js';
import { KvSlotPool } from './kv-slots.js';
import type { ApiChatMessage } from './chat-prompt.js';
import type { ServeOptions } from './serve-options.js';
import type { LoadOptions, Model, Session } from './types.js';

export interface ChatBenchResult {
  model: { arch: string; quant: string; vocabSize: number; isa: string; threads: number };
  turns: number;
  replyTokens: number;
  /** Per turn: prompt tokens, tokens reused from the cache, TTFT in ms; with and without the cache. */
  cached: Array<{ promptTokens: number; cachedTokens: number; ttftMs: number }>;
  uncached: Array<{ promptTokens: number; cachedTokens: number; ttftMs: number }>;
  /** TTFT of the last turn over the first, with the cache. */
  lastOverFirst: number;
  constrained?: {
    runs: number; tokens: number; plainMsPerToken: number[]; schemaMsPerToken: number[]; ratioMedian: number; ratioSpread: [number, number];
    /** The same runs in CPU time of this process (decode threads + the constraint on the JS thread) per token. */
    plainCpuMsPerToken: number[]; schemaCpuMsPerToken: number[]; cpuRatioMedian: number; cpuRatioSpread: [number, number];
    /** Mask + recognizer time per generated token, measured inside the loop (independent of the decode's noise). */
    constraintMsPerToken: number[];
    /** (median plain decode + median constraint time) / median plain decode. */
    costRatio: number;
  };
}

const USER_TURNS = [
  'Hello! Who are you?', 'Tell me about the warehouse.', 'Where is dock three?', 'Move the pallet there, please.',
  'How long will it take?', 'Is the battery charged enough?', 'Then charge it first.', 'What is next on the list?',
  'Report the temperature of the cold room.', 'Thanks, that is all for now.',
];

async function chat(model: Model, pool: KvSlotPool<Session>, turns: number, replyTokens: number) {
  const tok = model.tokenizer!;
  const messages: ApiChatMessage[] = [{ role: 'system', content: 'You are the assistant of a warehouse robot. Answer briefly.' }];
  const out: ChatBenchResult['cached'] = [];
  for (let i = 0; i < turns; i++) {
    messages.push({ role: 'user', content: USER_TURNS[i % USER_TURNS.length]! });
    const ids = tok.encodeChat(messages, { addGenerationPrompt: true });
    const lease = pool.acquire(ids);
    const gen = lease.session.serve(ids, { maxTokens: replyTokens, temperature: 0 });
    let text = '';
    let r;
    while (!(r = await gen.next()).done) text += r.value.text;
    pool.release(lease, r.value.tokens);
    out.push({ promptTokens: ids.length, cachedTokens: r.value.cachedTokens, ttftMs: r.value.timeToFirstToken * 1000 });
    messages.push({ role: 'assistant', content: text });
  }
  return out;
}

const median = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]!; };

async function decodeMsPerToken(session: Session, ids: number[], o: ServeOptions): Promise<{ ms: number; cpuMs: number; tokens: number; constraintMs: number }> {
  session.reset();
  const gen = session.serve(ids, { ...o, temperature: 0 });
  let first = 0;
  let cpu0: NodeJS.CpuUsage | null = null;
  let n = 0;
  let r;
  while (!(r = await gen.next()).done) { if (r.value.token >= 0) { n++; if (n === 1) { first = performance.now(); cpu0 = process.cpuUsage(); } } }
  const last = performance.now();
  const cpu = cpu0 ? process.cpuUsage(cpu0) : null;
  return {
    ms: n > 1 ? (last - first) / (n - 1) : NaN, cpuMs: cpu && n > 1 ? (cpu.user + cpu.system) / 1000 / (n - 1) : NaN,
    tokens: n, constraintMs: n > 0 ? (r.value.constraintSeconds * 1000) / n : 0,
  };
}

export async function runChatBench(dir: string, opts: LoadOptions & { turns?: number; replyTokens?: number; contextSize?: number; constrainedRuns?: number; constrainedTokens?: number; onPhase?: (p: string) => void } = {}): Promise<ChatBenchResult> {
  const model = await loadModel(dir, opts);
  try {
    if (!model.tokenizer) throw new Error(`${dir} has no tokenizer.json`);
    const turns = opts.turns ?? 10;
    const replyTokens = opts.replyTokens ?? 24;
    const ctx = opts.contextSize ?? Math.min(model.info.contextLength, 2048);
    let cached: ChatBenchResult['cached'] = [];
    let uncached: ChatBenchResult['cached'] = [];
    if (turns > 0) {
      opts.onPhase?.(`chat, ${turns} turns with the prefix cache`);
      const on = new KvSlotPool<Session>(1, () => model.createSession({ contextSize: ctx }));
      cached = await chat(model, on, turns, replyTokens);
      on.dispose();
      opts.onPhase?.(`chat, ${turns} turns without it`);
      const off = new KvSlotPool<Session>(1, () => model.createSession({ contextSize: ctx }), false);
      uncached = await chat(model, off, turns, replyTokens);
      off.dispose();
    }
    const result: ChatBenchResult = {
      model: { arch: model.info.arch, quant: model.info.quant, vocabSize: model.info.vocabSize, isa: model.info.isa, threads: model.info.threads },
      turns, replyTokens, cached, uncached, lastOverFirst: turns > 0 ? cached[turns - 1]!.ttftMs / cached[0]!.ttftMs : NaN,
    };
    const runs = opts.constrainedRuns ?? 3;
    if (runs > 0) {
      const n = opts.constrainedTokens ?? 48;
      opts.onPhase?.(`constrained decoding, ${runs} × (plain, schema), ${n} tokens each`);
      // bounded strings and arrays: the string length is part of the recognizer state, so
      // nearly every step meets a new state and computes its mask (no cache hits)
      const schema = {
        type: 'object', additionalProperties: false, required: ['action', 'dock', 'note', 'items'],
        properties: {
          action: { type: 'string', enum: ['move', 'wait', 'charge'] }, dock: { type: 'integer' },
          note: { type: 'string', maxLength: 24 }, items: { type: 'array', items: { type: 'string', maxLength: 12 }, maxItems: 4 },
        },
      };
      const ids = model.tokenizer.encodeChat([{ role: 'user', content: 'Plan the next move as JSON.' }], { addGenerationPrompt: true });
      const s = model.createSession({ contextSize: ctx });
      const plain: number[] = [];
      const withSchema: number[] = [];
      const plainCpu: number[] = [];
      const schemaCpu: number[] = [];
      const constraintMs: number[] = [];
      // warm-up: builds the vocabulary trie once (per model, not per request)
      await decodeMsPerToken(s, ids, { maxTokens: 4, responseFormat: { type: 'json_schema', name: 'plan', schema, strict: true } });
      for (let i = 0; i < runs; i++) {
        const p = await decodeMsPerToken(s, ids, { maxTokens: n, logitBias: {} });
        plain.push(p.ms);
        plainCpu.push(p.cpuMs);
        const w = await decodeMsPerToken(s, ids, { maxTokens: n, responseFormat: { type: 'json_schema', name: 'plan', schema, strict: true } });
        withSchema.push(w.ms);
        schemaCpu.push(w.cpuMs);
        constraintMs.push(w.constraintMs);
      }
      s.dispose();
      const ratios = withSchema.map((w, i) => w / plain[i]!);
      const cpuRatios = schemaCpu.map((w, i) => w / plainCpu[i]!);
      result.constrained = {
        runs, tokens: n, plainMsPerToken: plain, schemaMsPerToken: withSchema, ratioMedian: median(ratios), ratioSpread: [Math.min(...ratios), Math.max(...ratios)],
        plainCpuMsPerToken: plainCpu, schemaCpuMsPerToken: schemaCpu, cpuRatioMedian: median(cpuRatios), cpuRatioSpread: [Math.min(...cpuRatios), Math.max(...cpuRatios)],
        constraintMsPerToken: constraintMs, costRatio: (median(plain) + median(constraintMs)) / median(plain),
      };
    }
    return result;
  } finally {
    model.dispose();
  }
}
