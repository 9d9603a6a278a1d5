// bench-peer-llama.mjs — the llama.cpp side of `make bench-peer`: one process,
// one run. Loads a GGUF with llama.cpp's prebuilt CPU libraries through
// node-llama-cpp (installed under .bench/peer by bench-peer.mjs, never a
// dependency of Shoal), evaluates PROMPT random token ids, then decodes DECODE
// tokens greedily, and prints one JSON line with tokens/s and peak RSS.
//   node scripts/bench-peer-llama.mjs --peer DIR --model FILE.gguf --threads N --prompt 512 --decode 128 [--vocab 32000]
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    peer: { type: 'string' },
    model: { type: 'string' },
    threads: { type: 'string', default: '1' },
    prompt: { type: 'string', default: '512' },
    decode: { type: 'string', default: '128' },
    vocab: { type: 'string', default: '32000' },
  },
});
if (!a.peer || !a.model) {
  console.error('usage: bench-peer-llama.mjs --peer DIR --model FILE.gguf [--threads N] [--prompt N] [--decode N] [--vocab N]');
  process.exit(2);
}
const threads = Number(a.threads), nPrompt = Number(a.prompt), nDecode = Number(a.decode), vocab = Number(a.vocab);

const entry = path.resolve(a.peer, 'node_modules/node-llama-cpp/dist/index.js');
const { getLlama, LlamaLogLevel } = await import(pathToFileURL(entry).href);
const version = JSON.parse(readFileSync(path.resolve(a.peer, 'node_modules/node-llama-cpp/package.json'), 'utf8')).version;

// maxThreads 0: the context's `threads` is the exact thread count used.
const llama = await getLlama({ gpu: false, build: 'never', maxThreads: 0, logLevel: LlamaLogLevel.error });
const model = await llama.loadModel({ modelPath: path.resolve(a.model), gpuLayers: 0 });
const context = await model.createContext({
  contextSize: nPrompt + nDecode + 16,
  batchSize: nPrompt,
  threads,
  sequences: 1,
});
const seq = context.getSequence();

// Random prompt ids (fixed seed, skipping the 3 special tokens), as Shoal's side does.
let s = 1234;
const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 8);
const prompt = Array.from({ length: nPrompt }, () => 3 + (rand() % (vocab - 3)));

const t0 = performance.now();
await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
const t1 = performance.now();
// The last prompt token starts generation; decode time covers nDecode evaluated tokens.
let n = 0;
const t2 = performance.now();
for await (const tok of seq.evaluate([prompt[nPrompt - 1]])) {
  void tok;
  if (++n >= nDecode) break;
}
const t3 = performance.now();

const hwm = /VmHWM:\s+(\d+)\s+kB/.exec(readFileSync('/proc/self/status', 'utf8'));
console.log(JSON.stringify({
  engine: 'llama.cpp',
  package: `node-llama-cpp@${version}`,
  threads,
  prompt_tokens: nPrompt,
  decode_tokens: nDecode,
  prefill_tps: (nPrompt - 1) / ((t1 - t0) / 1000),
  decode_tps: nDecode / ((t3 - t2) / 1000),
  peak_rss: hwm ? Number(hwm[1]) * 1024 : 0,
}));
await context.dispose();
await model.dispose();
await llama.dispose();
