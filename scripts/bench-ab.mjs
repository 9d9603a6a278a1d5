// bench-ab.mjs — `make bench-ab REV=<commit>`: this checkout's engine against the
// same engine at another revision, on the same model, in the same minutes. Both
// are `shoal-run --bench` binaries (native/tools/shoal-run.cpp); they run
// alternately (A B A B, the first engine switching every pair), each run a fresh
// process: PROMPT random tokens, then DECODE tokens. Prints medians, the
// spread and the ratio B/A per thread count; writes JSON (--out). Only a ratio
// from one run means anything: these machines are shared and noisy.
//
//   node scripts/bench-ab.mjs --a OLD/shoal-run --b NEW/shoal-run --model DIR [--threads 1,2] [--pairs 3]
//        [--prompt 512] [--decode 128] [--out .bench/ab.json] [--label-a old] [--label-b new]
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    a: { type: 'string' }, b: { type: 'string' }, model: { type: 'string' },
    threads: { type: 'string', default: '1,2' }, pairs: { type: 'string', default: '3' },
    prompt: { type: 'string', default: '512' }, decode: { type: 'string', default: '128' },
    out: { type: 'string', default: '.bench/ab.json' },
    'label-a': { type: 'string', default: 'A' }, 'label-b': { type: 'string', default: 'B' },
  },
});
for (const k of ['a', 'b', 'model']) {
  if (!a[k]) { console.error(`bench-ab: --${k} is required (usage at the top of scripts/bench-ab.mjs)`); process.exit(2); }
}
for (const f of [a.a, a.b]) if (!existsSync(f)) { console.error(`bench-ab: ${f} does not exist; build it first`); process.exit(1); }
const threads = a.threads.split(',').map(Number), pairs = Number(a.pairs);
const median = (xs) => { const s = [...xs].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
const run = (bin, t) => {
  const out = execFileSync(bin, [a.model, '--bench', `${a.prompt},${a.decode}`, '-t', String(t), '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  return JSON.parse(out.trim().split('\n').filter((l) => l.startsWith('{')).pop());
};
const engines = { [a['label-a']]: a.a, [a['label-b']]: a.b };
const names = Object.keys(engines);
const result = { date: new Date().toISOString(), model: a.model, prompt: Number(a.prompt), decode: Number(a.decode), pairs, a: a.a, b: a.b, rows: [] };
for (const t of threads) {
  const runs = Object.fromEntries(names.map((n) => [n, []]));
  for (let p = 0; p < pairs; p++) {
    for (const n of p % 2 === 0 ? names : [...names].reverse()) {
      const r = run(engines[n], t);
      runs[n].push(r);
      process.stderr.write(`bench-ab: threads ${t} pair ${p + 1}/${pairs} ${n}: prefill ${r.prefill_tps.toFixed(1)} tok/s, decode ${r.decode_tps.toFixed(2)} tok/s\n`);
    }
  }
  const sum = (n, k) => ({ median: median(runs[n].map((r) => r[k])), min: Math.min(...runs[n].map((r) => r[k])), max: Math.max(...runs[n].map((r) => r[k])) });
  const row = { threads: t, runs, summary: Object.fromEntries(names.map((n) => [n, { prefill_tps: sum(n, 'prefill_tps'), decode_tps: sum(n, 'decode_tps') }])) };
  row.ratio = { prefill: row.summary[names[1]].prefill_tps.median / row.summary[names[0]].prefill_tps.median,
    decode: row.summary[names[1]].decode_tps.median / row.summary[names[0]].decode_tps.median };
  result.rows.push(row);
}
const f = (s, d) => `${s.median.toFixed(d)} (${s.min.toFixed(d)}–${s.max.toFixed(d)})`;
console.log(`${a.model}: ${a.prompt}-token prompt then ${a.decode} decoded; medians (min–max) of ${pairs} alternating pairs`);
for (const row of result.rows) {
  for (const n of names) console.log(`  ${row.threads} thr  ${n.padEnd(12)} prefill ${f(row.summary[n].prefill_tps, 1)} tok/s  decode ${f(row.summary[n].decode_tps, 2)} tok/s`);
  console.log(`  ${row.threads} thr  ${names[1]}/${names[0]}: prefill ${row.ratio.prefill.toFixed(3)}×, decode ${row.ratio.decode.toFixed(3)}×`);
}
mkdirSync(path.dirname(path.resolve(a.out)), { recursive: true });
writeFileSync(a.out, `${JSON.stringify(result, null, 2)}\n`);
