#!/usr/bin/env node
// layer-error-table.mjs — the RTN / GPTQ / GPTQ act-order / AWQ layer-error table of
// docs/quantization.md: every method at every bits × group setting on one FP model,
// each `shoal quantize` run under `/usr/bin/time -v` (wall, user + sys CPU, peak RSS)
// with the 1-minute load average before and after, then `shoal eval layer-error` of
// its output against the FP model on held-out text. Prints the markdown table.
//
//   node scripts/layer-error-table.mjs --model FP_DIR --calib FILE --work DIR \
//     [--calib-sep REGEX] [--samples 32 --seqlen 512] [--eval-samples 16 --eval-seqlen 512] \
//     [--settings 4:128,4:64,3:64,3:128,2:64] [--methods rtn,gptq,gptq-act,awq] [--nice 5] \
//     [--json FILE] [--keep]
//   node scripts/layer-error-table.mjs --from-json FILE      # the table of an earlier run
//
// Calibration takes the first samples × seqlen tokens of --calib (documents at
// --calib-sep); layer-error takes its blocks from the end of the same file, so the two
// are disjoint when the file is long enough (both document ranges are in the JSON).
// Each output folder is deleted after its evaluation unless --keep.
import { spawnSync } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SHOAL = path.join(root, 'packages', 'cli', 'dist', 'src', 'main.js');
const LABEL = { rtn: 'RTN', gptq: 'GPTQ', 'gptq-act': 'GPTQ act-order', awq: 'AWQ' };

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, calib: { type: 'string' }, 'calib-sep': { type: 'string', default: '\\n\\s*\\n' }, work: { type: 'string' },
    samples: { type: 'string', default: '32' }, seqlen: { type: 'string', default: '512' },
    'eval-samples': { type: 'string', default: '16' }, 'eval-seqlen': { type: 'string', default: '512' },
    settings: { type: 'string', default: '4:128,4:64,3:64,3:128,2:64' }, methods: { type: 'string', default: 'rtn,gptq,gptq-act,awq' },
    nice: { type: 'string', default: '5' }, json: { type: 'string' }, keep: { type: 'boolean' }, 'from-json': { type: 'string' },
  },
});

/** Fields of `/usr/bin/time -v`. */
function parseTimeV(stderr) {
  const num = (re) => {
    const m = stderr.match(re);
    return m ? Number(m[1]) : null;
  };
  const wall = stderr.match(/Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)/);
  return {
    user: num(/User time \(seconds\): ([\d.]+)/),
    sys: num(/System time \(seconds\): ([\d.]+)/),
    wall: wall ? Number(wall[1] ?? 0) * 3600 + Number(wall[2]) * 60 + Number(wall[3]) : null,
    cpuPercent: num(/Percent of CPU this job got: (\d+)%/),
    maxRssKiB: num(/Maximum resident set size \(kbytes\): (\d+)/),
  };
}

const load1 = () => Number(readFileSync('/proc/loadavg', 'utf8').split(' ')[0]);

/** Runs shoal under nice (and /usr/bin/time -v when timed); returns the parsed --json stdout. */
function shoal(args, timed) {
  const cmd = [...(timed ? ['/usr/bin/time', '-v'] : []), 'nice', '-n', values.nice, process.execPath, SHOAL, ...args];
  const r = spawnSync(cmd[0], cmd.slice(1), { encoding: 'utf8', maxBuffer: 1 << 28 });
  if (r.status !== 0) throw new Error(`${cmd.join(' ')} exited with ${r.status}:\n${r.stderr}`);
  const lines = r.stdout.trim().split('\n');
  return { out: JSON.parse(lines[lines.length - 1]), time: timed ? parseTimeV(r.stderr) : null, command: cmd.join(' ') };
}

const mmss = (s) => (s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${s.toFixed(1)} s`);
const gib = (kib) => (kib >= 1024 ** 2 ? `${(kib / 1024 ** 2).toFixed(2)} GiB` : `${(kib / 1024).toFixed(0)} MiB`);

function table(data) {
  const lines = [
    '| setting | method | layer error ‖ŷ−y‖²/‖y−x‖² | × RTN | CPU user + sys | wall | peak RSS | load avg before → after |',
    '|---|---|---|---|---|---|---|---|',
  ];
  for (const setting of data.settings) {
    const cells = data.rows.filter((r) => r.setting === setting);
    const rtn = cells.find((r) => r.method === 'rtn');
    for (const r of cells) {
      if (r.error) {
        lines.push(`| ${setting} | ${LABEL[r.method]} | failed: ${r.error.split('\n')[0]} | | | | | |`);
        continue;
      }
      const t = r.time;
      const note = r.rtnFallbackLayers?.length ? ` (RTN kept in layers ${r.rtnFallbackLayers.join(', ')})` : '';
      lines.push(`| ${setting} | ${LABEL[r.method]}${note} | ${r.layerError.toExponential(3)} | ${rtn && !rtn.error ? (r.layerError / rtn.layerError).toFixed(3) : '–'} `
        + `| ${t.user.toFixed(1)} + ${t.sys.toFixed(1)} = ${(t.user + t.sys).toFixed(1)} s | ${mmss(t.wall)} (${t.cpuPercent} %) | ${gib(t.maxRssKiB)} `
        + `| ${r.loadBefore.toFixed(1)} → ${r.loadAfter.toFixed(1)} |`);
    }
  }
  return lines.join('\n');
}

if (values['from-json']) {
  process.stdout.write(table(JSON.parse(readFileSync(values['from-json'], 'utf8'))) + '\n');
  process.exit(0);
}

for (const k of ['model', 'calib', 'work']) if (!values[k]) throw new Error(`--${k} is required`);
const settings = values.settings.split(',').map((s) => {
  const [bits, group] = s.split(':').map(Number);
  return { bits, group, name: `w${bits}g${group}` };
});
const methods = values.methods.split(',');
for (const m of methods) if (!(m in LABEL)) throw new Error(`unknown method ${m}: ${Object.keys(LABEL).join(', ')}`);
const data = {
  model: values.model, calib: values.calib, calibSep: values['calib-sep'], samples: Number(values.samples), seqlen: Number(values.seqlen),
  evalSamples: Number(values['eval-samples']), evalSeqlen: Number(values['eval-seqlen']), nice: Number(values.nice),
  host: { cpus: os.cpus().length, cpu: os.cpus()[0]?.model ?? null, memGiB: os.totalmem() / 1024 ** 3 },
  started: new Date().toISOString(), settings: settings.map((s) => s.name), rows: [],
};
const save = () => { if (values.json) writeFileSync(values.json, JSON.stringify(data, null, 1)); };
for (const s of settings) {
  for (const method of methods) {
    const out = path.join(values.work, `${method}-${s.name}`);
    const args = ['quantize', '--method', method.startsWith('gptq') ? 'gptq' : method, '--bits', String(s.bits), '--group', String(s.group),
      '--model', values.model, '--out', out, '--force', '--json'];
    if (method !== 'rtn') args.push('--calib', values.calib, '--calib-sep', values['calib-sep'], '--samples', values.samples, '--seqlen', values.seqlen);
    if (method === 'gptq-act') args.push('--act-order');
    const row = { setting: s.name, method, bits: s.bits, group: s.group, startedAt: new Date().toISOString() };
    try {
      row.loadBefore = load1();
      const q = shoal(args, true);
      row.loadAfter = load1();
      row.command = `shoal ${args.join(' ')}`;
      row.time = q.time;
      row.quantizedLinears = q.out.quantizedLinears;
      row.keptLinears = q.out.keptLinears;
      row.calibration = q.out.calibration ?? null;
      row.rtnFallbackLayers = q.out.rtnFallbackLayers ?? [];
      row.quantizerSeconds = q.out.seconds;
      const e = shoal(['eval', 'layer-error', '--model', out, '--reference', values.model, '--text', values.calib, '--text-sep', values['calib-sep'],
        '--samples', values['eval-samples'], '--seqlen', values['eval-seqlen'], '--json'], false);
      row.layerError = e.out.meanRelError;
      row.layers = e.out.layers.map((l) => ({ relError: l.relError, outputMse: l.outputMse, linears: l.linears }));
      row.evalDocuments = e.out.documents;
      row.evalSeconds = e.out.seconds;
    } catch (err) {
      row.error = err.message;
    }
    if (!values.keep) rmSync(out, { recursive: true, force: true });
    data.rows.push(row);
    save();
    process.stderr.write(`${s.name} ${method}: ${row.error ? `FAILED ${row.error.split('\n')[0]}` : `layer error ${row.layerError.toExponential(3)}, CPU ${(row.time.user + row.time.sys).toFixed(1)} s, wall ${row.time.wall.toFixed(1)} s, RSS ${gib(row.time.maxRssKiB)}, load ${row.loadBefore} → ${row.loadAfter}`}\n`);
  }
}
data.finished = new Date().toISOString();
save();
process.stdout.write(table(data) + '\n');
