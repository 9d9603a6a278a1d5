// bench-peer.mjs — `make bench-peer`: Shoal against llama.cpp on this machine,
// in the same minutes. Installs llama.cpp's prebuilt CPU libraries (npm
// package @node-llama-cpp/linux-x64, driven through node-llama-cpp) under
// .bench/peer — a development-only install for this benchmark, never a
// dependency of Shoal — writes a random Q4_0 GGUF of the model's shape
// (native/tools/make-gguf), then runs the two engines alternately (A B A B,
// --pairs pairs) per thread count: PROMPT random tokens, then DECODE tokens,
// each run a fresh process. Memory read bandwidth is measured before and after.
// Prints one table; writes JSON (--out). Only ratios from one run mean anything:
// these machines are shared and noisy.
//
//   node scripts/bench-peer.mjs --shoal-model DIR [--shape tinyllama-1.1b] [--threads 1,2] [--pairs 3]
//        [--prompt 512] [--decode 128] [--out .bench/peer.json] [--bin native/build-tests] [--shoal-args "..."]
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const PEER_PACKAGES = ['node-llama-cpp@3.22.1', '@node-llama-cpp/linux-x64@3.22.1'];
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const { values: a } = parseArgs({
  options: {
    'shoal-model': { type: 'string' },
    shape: { type: 'string', default: 'tinyllama-1.1b' },
    threads: { type: 'string', default: '1,2' },
    pairs: { type: 'string', default: '3' },
    prompt: { type: 'string', default: '512' },
    decode: { type: 'string', default: '128' },
    out: { type: 'string', default: path.join(root, '.bench/peer.json') },
    bin: { type: 'string', default: path.join(root, 'native/build-tests') },
    peer: { type: 'string', default: path.join(root, '.bench/peer') },
    'shoal-args': { type: 'string', default: '' },
  },
});
if (!a['shoal-model']) {
  console.error('bench-peer: --shoal-model DIR is required (a Shoal checkpoint of the same shape, e.g. from `shoal gen-model`)');
  process.exit(2);
}
const threadCounts = a.threads.split(',').map(Number);
const pairs = Number(a.pairs), nPrompt = Number(a.prompt), nDecode = Number(a.decode);
const shoalRun = path.join(a.bin, 'shoal-run'), makeGguf = path.join(a.bin, 'make-gguf');
for (const f of [shoalRun, makeGguf])
  if (!existsSync(f)) { console.error(`bench-peer: ${f} is missing; run \`make native-tests\` first`); process.exit(1); }

const log = (m) => process.stderr.write(`bench-peer: ${m}\n`);
const json = (out) => JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop());
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };

// 1. llama.cpp's prebuilt libraries, pinned, outside the product's dependencies.
if (!existsSync(path.join(a.peer, 'node_modules/node-llama-cpp/package.json'))) {
  log(`installing ${PEER_PACKAGES.join(' ')} into ${path.relative(root, a.peer)} (development-only)`);
  mkdirSync(a.peer, { recursive: true });
  const r = spawnSync('npm', ['install', '--prefix', a.peer, '--no-audit', '--no-fund', '--omit=optional', '--ignore-scripts', ...PEER_PACKAGES], { stdio: 'inherit' });
  if (r.status !== 0) { console.error('bench-peer: npm install of the peer failed (is the npm registry reachable?)'); process.exit(1); }
}

// 2. The GGUF of the same shape (random Q4_0 weights, output matrix included).
const gguf = path.join(root, `.bench/${a.shape}-q4_0.gguf`);
const ggufMeta = `${gguf}.json`;
if (!existsSync(gguf) || !existsSync(ggufMeta)) {
  log(`writing ${path.relative(root, gguf)}`);
  writeFileSync(ggufMeta, execFileSync(makeGguf, ['--shape', a.shape, '--out', gguf], { encoding: 'utf8' }));
}
const ggufInfo = JSON.parse(readFileSync(ggufMeta, 'utf8'));

const bandwidth = (t) => json(execFileSync(shoalRun, ['--membw', String(t)], { encoding: 'utf8' })).read_gbps;
const runShoal = (t) => json(execFileSync(shoalRun, [a['shoal-model'], '--bench', `${nPrompt},${nDecode}`, '-t', String(t), '--json',
  ...a['shoal-args'].split(' ').filter(Boolean)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
const runLlama = (t) => json(execFileSync(process.execPath, [path.join(root, 'scripts/bench-peer-llama.mjs'), '--peer', a.peer,
  '--model', gguf, '--threads', String(t), '--prompt', String(nPrompt), '--decode', String(nDecode)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));

const cpu = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8')) ?? [])[1] ?? os.cpus()[0]?.model ?? 'unknown';
const result = { cpu, cores: os.cpus().length, date: new Date().toISOString(), shape: a.shape, prompt_tokens: nPrompt, decode_tokens: nDecode,
  pairs, peer: PEER_PACKAGES[0], bandwidth: {}, rows: [] };

// 3. Bandwidth before, the alternating runs, bandwidth after.
const bwBefore = {}, bwAfter = {};
for (const t of threadCounts) bwBefore[t] = bandwidth(t);
for (const t of threadCounts) {
  const runs = { shoal: [], llama: [] };
  for (let p = 0; p < pairs; p++) {
    // A B A B, starting with the other engine every pair so neither always goes first
    const order = p % 2 === 0 ? ['llama', 'shoal'] : ['shoal', 'llama'];
    for (const e of order) {
      const r = e === 'shoal' ? runShoal(t) : runLlama(t);
      runs[e].push(r);
      log(`threads ${t} pair ${p + 1}/${pairs} ${e}: prefill ${r.prefill_tps.toFixed(1)} tok/s, decode ${r.decode_tps.toFixed(2)} tok/s`);
    }
  }
  result.rows.push({ threads: t, runs });
}
for (const t of threadCounts) bwAfter[t] = bandwidth(t);
for (const t of threadCounts) result.bandwidth[t] = { before_gbps: bwBefore[t], after_gbps: bwAfter[t], median_gbps: median([bwBefore[t], bwAfter[t]]) };

// 4. Medians, spreads, ratios, % of roofline (bytes read per token × tok/s ÷ bandwidth).
const fmt = (x, d = 1) => x.toFixed(d);
const lines = [];
const head = ['threads', 'engine', 'prefill tok/s', 'decode tok/s', 'decode range', 'GB/s read', '% roofline', 'peak RSS MB', 'decode ratio', 'prefill ratio'];
for (const row of result.rows) {
  const bw = result.bandwidth[row.threads].median_gbps;
  const sum = {};
  for (const e of ['llama', 'shoal']) {
    const rs = row.runs[e];
    const bpt = e === 'shoal' ? rs[0].bytes_per_token : ggufInfo.bytes_per_token;
    const dec = median(rs.map((r) => r.decode_tps));
    sum[e] = { prefill_tps: median(rs.map((r) => r.prefill_tps)), decode_tps: dec,
      decode_min: Math.min(...rs.map((r) => r.decode_tps)), decode_max: Math.max(...rs.map((r) => r.decode_tps)),
      bytes_per_token: bpt, read_gbps: (bpt * dec) / 1e9, roofline_pct: (100 * bpt * dec) / 1e9 / bw,
      peak_rss: Math.max(...rs.map((r) => r.peak_rss)) };
  }
  sum.shoal.decode_ratio = sum.shoal.decode_tps / sum.llama.decode_tps;
  sum.shoal.prefill_ratio = sum.shoal.prefill_tps / sum.llama.prefill_tps;
  row.summary = sum;
  for (const e of ['llama', 'shoal']) {
    const s = sum[e];
    lines.push([String(row.threads), e === 'llama' ? 'llama.cpp Q4_0' : `Shoal ${row.runs.shoal[0].isa}`, fmt(s.prefill_tps), fmt(s.decode_tps, 2),
      `${fmt(s.decode_min, 2)}–${fmt(s.decode_max, 2)}`, fmt(s.read_gbps), `${fmt(s.roofline_pct)}% of ${fmt(bw)}`, fmt(s.peak_rss / 1e6, 0),
      e === 'shoal' ? `${fmt(s.decode_ratio, 2)}×` : '', e === 'shoal' ? `${fmt(s.prefill_ratio, 2)}×` : '']);
  }
}
const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i].length)));
const pr = (cells) => console.log(cells.map((c, i) => c.padEnd(widths[i])).join('  '));
console.log(`${cpu}, ${result.cores} CPUs; ${a.shape}, ${nPrompt}-token prompt then ${nDecode} decoded; medians of ${pairs} alternating pairs`);
console.log(`read bandwidth GB/s (before/after): ${threadCounts.map((t) => `${t} thr ${fmt(bwBefore[t])}/${fmt(bwAfter[t])}`).join(', ')}`);
console.log(`bytes read per token: llama.cpp ${fmt(ggufInfo.bytes_per_token / 1e6)} MB, Shoal ${fmt(result.rows[0].summary.shoal.bytes_per_token / 1e6)} MB`);
pr(head);
pr(widths.map((w) => '-'.repeat(w)));
for (const l of lines) pr(l);
mkdirSync(path.dirname(a.out), { recursive: true });
writeFileSync(a.out, `${JSON.stringify(result, null, 2)}\n`);
log(`wrote ${path.relative(process.cwd(), a.out)}`);
