// cli.ts — the engine's commands: `shoal run` and `shoal bench`.
import { resolveModelArg } from '@shoal/common';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import Table from 'cli-table3';
import { loadModel } from './engine.js';
import { runBench } from './bench.js';
import { runChatBench } from './bench-serve.js';
import {
  addLoadOptions, addSamplingOptions, generateOptions, intArg, loadOptions, type LoadFlags, type SamplingFlags,
} from './cli-options.js';
import type { ChatMessage, GenerateStats, Session } from './types.js';

/** Bytes with the unit that keeps three significant digits (a 1 MB demo model and a 4 GB 7B both read well). */
export function bytesText(b: number): string {
  const units: Array<[number, string]> = [[1e9, 'GB'], [1e6, 'MB'], [1e3, 'kB']];
  for (const [scale, unit] of units) if (b >= scale) return `${(b / scale).toPrecision(3)} ${unit}`;
  return `${b} B`;
}

async function streamTo(out: NodeJS.WriteStream, gen: AsyncGenerator<{ text: string }, GenerateStats>): Promise<GenerateStats> {
  for (;;) {
    const r = await gen.next();
    if (r.done) return r.value;
    out.write(r.value.text);
  }
}

function printStats(s: GenerateStats): void {
  process.stderr.write(
    `\n\nprefill ${s.promptTokens} tokens at ${s.prefillTokensPerSecond.toFixed(1)} tok/s · ` +
    `decode ${s.generatedTokens} tokens at ${s.decodeTokensPerSecond.toFixed(1)} tok/s · ` +
    `first token after ${(s.timeToFirstToken * 1000).toFixed(0)} ms · stop: ${s.stopReason}\n`);
}

export function registerEngineCommands(program: Command): void {
  const run = program.command('run').description('generate text with a local model (streams to stdout)');
  addSamplingOptions(addLoadOptions(run))
    .option('-p, --prompt <text>', 'prompt text', '')
    .option('--chat', 'interactive chat using the model\'s chat template (oldest turns are dropped when the context is full)')
    .option('--system <text>', 'system prompt for --chat (always kept)')
    .option('--ctx <n>', 'context size (default: the model\'s)', intArg('--ctx', 1))
    .action(async (f: LoadFlags & SamplingFlags & { prompt: string; chat?: boolean; system?: string; ctx?: number }) => {
      const model = await loadModel(resolveModelArg(f.model), loadOptions(f));
      if (model.info.backendNote) process.stderr.write(model.info.backendNote + '\n');
      const ac = new AbortController();
      const onSigint = () => ac.abort();
      process.on('SIGINT', onSigint);
      try {
        const session = model.createSession({ contextSize: f.ctx });
        const opts = { ...generateOptions(f), signal: ac.signal };
        if (!f.chat) {
          process.stdout.write(f.prompt);
          printStats(await streamTo(process.stdout, session.generate(f.prompt, opts)));
          return;
        }
        await chatLoop(session, model.tokenizer, opts, f.system);
      } finally {
        process.off('SIGINT', onSigint);
        model.dispose();
      }
    });

  const chatBench = program.command('bench-serve').description('serving benchmark: TTFT per chat turn with and without the prefix cache; decode cost of a JSON schema');
  addLoadOptions(chatBench)
    .option('--turns <n>', 'chat turns (0 = skip the chat)', intArg('--turns', 0), 10)
    .option('--reply-tokens <n>', 'tokens per assistant reply', intArg('--reply-tokens', 1), 24)
    .option('--ctx <n>', 'context size', intArg('--ctx', 16))
    .option('--constrained-runs <n>', 'A/B pairs for the schema cost (0 = skip)', intArg('--constrained-runs', 0), 3)
    .option('--json', 'print the result as JSON')
    .action(async (f: LoadFlags & { turns: number; replyTokens: number; ctx?: number; constrainedRuns: number; json?: boolean }) => {
      const r = await runChatBench(f.model, {
        ...loadOptions(f), turns: f.turns, replyTokens: f.replyTokens, constrainedRuns: f.constrainedRuns,
        ...(f.ctx ? { contextSize: f.ctx } : {}), onPhase: f.json ? undefined : (p) => process.stderr.write(`… ${p}\n`),
      });
      if (f.json) { process.stdout.write(JSON.stringify(r, null, 2) + '\n'); return; }
      process.stdout.write(`${r.model.arch} ${r.model.quant}, vocab ${r.model.vocabSize}, ${r.model.isa} × ${r.model.threads}\n`);
      if (r.turns > 0) {
        const t = new Table({ head: ['turn', 'prompt tokens', 'reused (cache)', 'TTFT cache', 'TTFT no cache'] });
        r.cached.forEach((c, i) => t.push([i + 1, c.promptTokens, c.cachedTokens, `${c.ttftMs.toFixed(0)} ms`, `${r.uncached[i]!.ttftMs.toFixed(0)} ms`]));
        process.stdout.write(`${t.toString()}\nturn ${r.turns} TTFT / turn 1 TTFT with the prefix cache: ${r.lastOverFirst.toFixed(2)}\n`);
      }
      if (r.constrained) {
        const c = r.constrained;
        process.stdout.write(`JSON schema decode: ${c.schemaMsPerToken.map((x) => x.toFixed(1)).join(', ')} ms/token vs plain ${c.plainMsPerToken.map((x) => x.toFixed(1)).join(', ')} ms/token → ` +
          `ratio median ${c.ratioMedian.toFixed(3)} (${c.ratioSpread[0].toFixed(3)}–${c.ratioSpread[1].toFixed(3)})\n` +
          `in CPU time: ${c.schemaCpuMsPerToken.map((x) => x.toFixed(1)).join(', ')} vs ${c.plainCpuMsPerToken.map((x) => x.toFixed(1)).join(', ')} ms/token → ` +
          `ratio median ${c.cpuRatioMedian.toFixed(3)} (${c.cpuRatioSpread[0].toFixed(3)}–${c.cpuRatioSpread[1].toFixed(3)})\n` +
          `constraint work measured in the loop: ${c.constraintMsPerToken.map((x) => x.toFixed(2)).join(', ')} ms/token → cost ratio ${c.costRatio.toFixed(3)}\n`);
      }
    });

  const bench = program.command('bench').description('benchmark a model: load, prefill, decode, TTFT, peak RSS, % of memory roofline');
  addLoadOptions(bench)
    .option('--prompt-tokens <n>', 'prompt length for prefill and TTFT (default 512, or what fits the context)', intArg('--prompt-tokens', 1))
    .option('--decode-tokens <n>', 'tokens to decode (default 128, or a quarter of the context)', intArg('--decode-tokens', 1))
    .option('--json', 'print the result as JSON')
    .action(async (f: LoadFlags & { promptTokens?: number; decodeTokens?: number; json?: boolean }) => {
      const r = await runBench(resolveModelArg(f.model), {
        ...loadOptions(f), promptTokens: f.promptTokens, decodeTokens: f.decodeTokens,
        onPhase: f.json ? undefined : (p) => process.stderr.write(`… ${p}\n`),
      });
      if (f.json) {
        process.stdout.write(JSON.stringify(r, null, 2) + '\n');
        return;
      }
      const t = new Table({ head: ['metric', 'value'] });
      t.push(
        ['model', `${r.model.arch} ${r.model.quant} (${r.model.dtype}) · ${(r.model.parameters / 1e9).toFixed(2)} B params`],
        ['backend', `${r.model.backend} ${r.model.isa} × ${r.model.threads} threads`],
        ['load (repack)', `${r.loadSeconds.toFixed(2)} s (${r.repackSeconds.toFixed(2)} s)`],
        ['prefill', `${r.prefillTokensPerSecond.toFixed(1)} tok/s (${r.promptTokens} tokens) · ${r.prefillGflops.toFixed(1)} GFLOP/s`],
        ['time to first token', `${(r.timeToFirstTokenSeconds * 1000).toFixed(0)} ms`],
        ['decode', `${r.decodeTokensPerSecond.toFixed(2)} tok/s (${r.decodeTokens} tokens)`],
        ['weights read / token', bytesText(r.model.bytesPerToken)],
        ['decode effective bandwidth', `${r.decodeEffectiveGBs.toFixed(1)} GB/s`],
        ['measured memory bandwidth', `${r.memoryBandwidthGBs.toFixed(1)} GB/s`],
        ['roofline', `${r.rooflineTokensPerSecond.toFixed(1)} tok/s → ${(r.rooflineFraction * 100).toFixed(1)}% reached`],
        ['peak RSS', `${bytesText(r.peakRssBytes)} (budget ${bytesText(r.peakRssBudgetBytes)}: 1.15 × weights + KV ${r.kvCache} ${bytesText(r.kvCacheBytes)} + 150 MB)`],
      );
      process.stdout.write(t.toString() + '\n');
    });
}

/** Tokens kept free for the reply: --max-tokens, else a quarter of the context (at least 16). */
function reserveTokens(opts: Parameters<Session['generate']>[1], ctx: number): number {
  return Math.min(ctx - 1, opts?.maxTokens ?? Math.max(16, Math.floor(ctx / 4)));
}

/**
 * Drops the oldest turns (never a leading system message, never the new user
 * message) until the rendered prompt plus the reply reserve fits; mutates
 * history. ids null: even the system prompt and the last message do not fit.
 */
export function fitHistory(tokenizer: import('./types.js').Tokenizer, history: ChatMessage[], ctx: number, reserve: number): { ids: number[] | null; dropped: number } {
  let dropped = 0;
  for (;;) {
    const ids = tokenizer.encodeChat(history, { addGenerationPrompt: true });
    if (ids.length + reserve <= ctx) return { ids, dropped };
    const first = history[0]?.role === 'system' ? 1 : 0;
    if (history.length - first <= 1) return { ids: null, dropped };
    // drop a whole exchange (user + assistant) so roles keep alternating
    const n = history[first + 1]?.role === 'assistant' && history.length - first > 2 ? 2 : 1;
    history.splice(first, n);
    dropped += n;
  }
}

async function chatLoop(session: Session, tokenizer: import('./types.js').Tokenizer | null, opts: Parameters<Session['generate']>[1], system?: string): Promise<void> {
  if (!tokenizer) throw new Error('--chat needs tokenizer.json in the model directory');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const history: ChatMessage[] = system ? [{ role: 'system', content: system }] : [];
  const cached: number[] = []; // tokens in the KV cache, prompt and generated
  try {
    // lines through the async iterator: piped input arrives all at once and
    // rl.question() would lose every line that came before it was asked
    rl.setPrompt('\n> ');
    rl.prompt();
    for await (const line of rl) {
      if (line.trim() === '/exit') break;
      if (!line.trim()) { rl.prompt(); continue; }
      history.push({ role: 'user', content: line });
      const { ids, dropped } = fitHistory(tokenizer, history, session.contextSize, reserveTokens(opts, session.contextSize));
      if (dropped > 0) process.stderr.write(`(history trimmed: the ${dropped} oldest message${dropped > 1 ? 's were' : ' was'} dropped to fit the ${session.contextSize}-token context; the system prompt is kept)\n`);
      if (ids === null) {
        process.stderr.write(`(this message alone does not fit the ${session.contextSize}-token context; say less)\n`);
        history.pop();
        rl.prompt();
        continue;
      }
      // Keep the longest cached prefix the new rendering shares; feed the rest.
      let keep = 0;
      while (keep < cached.length && keep < ids.length - 1 && cached[keep] === ids[keep]) keep++;
      session.truncate(keep);
      cached.length = keep;
      const fresh = ids.slice(keep);
      cached.push(...fresh);
      let reply = '';
      const gen = session.generate(fresh, opts);
      for (;;) {
        const r = await gen.next();
        if (r.done) { printStats(r.value); break; }
        if (r.value.token >= 0) cached.push(r.value.token);
        reply += r.value.text;
        process.stdout.write(r.value.text);
      }
      cached.length = Math.min(cached.length, session.position);
      history.push({ role: 'assistant', content: reply });
      rl.prompt();
    }
  } finally {
    rl.close();
  }
}
