// cli.ts — the engine's commands: `shoal run` and `shoal bench`.
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import Table from 'cli-table3';
import { loadModel } from './engine.js';
import { runBench } from './bench.js';
import {
  addLoadOptions, addSamplingOptions, generateOptions, intArg, loadOptions, type LoadFlags, type SamplingFlags,
} from './cli-options.js';
import type { ChatMessage, GenerateStats, Session } from './types.js';

const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
const mb = (b: number) => `${(b / 1e6).toFixed(0)} MB`;

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
    .option('--chat', 'interactive chat using the model\'s chat template')
    .option('--ctx <n>', 'context size (default: the model\'s)', intArg('--ctx', 1))
    .action(async (f: LoadFlags & SamplingFlags & { prompt: string; chat?: boolean; ctx?: number }) => {
      const model = await loadModel(f.model, loadOptions(f));
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
        await chatLoop(session, model.tokenizer, opts);
      } finally {
        process.off('SIGINT', onSigint);
        model.dispose();
      }
    });

  const bench = program.command('bench').description('benchmark a model: load, prefill, decode, TTFT, peak RSS, % of memory roofline');
  addLoadOptions(bench)
    .option('--prompt-tokens <n>', 'prompt length for prefill and TTFT (default 512, or what fits the context)', intArg('--prompt-tokens', 1))
    .option('--decode-tokens <n>', 'tokens to decode (default 128, or a quarter of the context)', intArg('--decode-tokens', 1))
    .option('--json', 'print the result as JSON')
    .action(async (f: LoadFlags & { promptTokens?: number; decodeTokens?: number; json?: boolean }) => {
      const r = await runBench(f.model, {
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
        ['weights read / token', gb(r.model.bytesPerToken)],
        ['decode effective bandwidth', `${r.decodeEffectiveGBs.toFixed(1)} GB/s`],
        ['measured memory bandwidth', `${r.memoryBandwidthGBs.toFixed(1)} GB/s`],
        ['roofline', `${r.rooflineTokensPerSecond.toFixed(1)} tok/s → ${(r.rooflineFraction * 100).toFixed(1)}% reached`],
        ['peak RSS', `${mb(r.peakRssBytes)} (budget ${mb(r.peakRssBudgetBytes)}: 1.15 × weights + KV ${r.kvCache} ${mb(r.kvCacheBytes)} + 150 MB)`],
      );
      process.stdout.write(t.toString() + '\n');
    });
}

async function chatLoop(session: Session, tokenizer: import('./types.js').Tokenizer | null, opts: Parameters<Session['generate']>[1]): Promise<void> {
  if (!tokenizer) throw new Error('--chat needs tokenizer.json in the model directory');
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  const history: ChatMessage[] = [];
  const cached: number[] = []; // tokens in the KV cache, prompt and generated
  try {
    for (;;) {
      const line = await rl.question('\n> ').catch(() => null);
      if (line === null || line.trim() === '/exit') break;
      if (!line.trim()) continue;
      history.push({ role: 'user', content: line });
      const ids = tokenizer.encodeChat(history, { addGenerationPrompt: true });
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
    }
  } finally {
    rl.close();
  }
}
