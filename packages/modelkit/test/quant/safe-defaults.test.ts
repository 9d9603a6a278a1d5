// Safe defaults and clear errors of `shoal quantize`, for every method and layout:
// a group that fits no linear stops with SHOAL_ERR_GROUP_SIZE naming the linears
// and the groups that would work (nothing written, exit 1); one that fits some
// writes the model and names the linears left in floating point; no NaN in any
// report; calibration problems (too short, empty file, missing file, missing
// tokenizer) fail before any work; Ctrl-C (a real SIGINT to a real process)
// leaves no output folder and no temporary folder behind.
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { CLI_MAIN } from '@shoal/testkit';
import { generateModel } from '../../src/synth/gen-model.js';
import { calibDocs, skipStories, STORIES, STORIES_TXT } from './helpers.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-safe-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

function shoal(args: string[]): { rc: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI_MAIN, ...args], { encoding: 'utf8', timeout: 240_000 });
  return { rc: r.status ?? -1, out: r.stdout, err: r.stderr };
}

const leftovers = (dir: string, name: string) => readdirSync(dir).filter((f) => f.startsWith(`.${name}.tmp-`) || f === name);

t.test('a group that fits no linear is an error naming the linears and the groups that work', { skip: skipStories }, async (t) => {
  const calib = path.join(root, 'calib.txt');
  writeFileSync(calib, calibDocs(200).join('\n\n'));
  const cases: Array<[string, string[]]> = [
    ['rtn awq-gemm (the defaults)', []],
    ['rtn fake-quant 3-bit', ['--bits', '3']],
    ['gptq layout', ['--format', 'gptq']],
    ['--method gptq', ['--method', 'gptq', '--calib', calib]],
    ['--method awq', ['--method', 'awq', '--calib', calib]],
  ];
  for (const [name, extra] of cases) {
    const out = path.join(root, `g128-${name.replace(/\W+/g, '-')}`);
    const r = shoal(['quantize', '--model', STORIES, '--out', out, ...extra]);
    t.equal(r.rc, 1, `${name}: exit 1`);
    t.match(r.err, /SHOAL_ERR_GROUP_SIZE/, `${name}: error code`);
    t.match(r.err, /--group 128 fits none of the linears/, `${name}: says nothing would be quantized`);
    t.match(r.err, /q_proj.*in_features 64.*down_proj \(in_features 172, out_features 64\)/, `${name}: names the linears and their in_features`);
    t.match(r.err, /Groups that would work: .*(64|32)/, `${name}: names working groups`);
    t.same(leftovers(root, path.basename(out)), [], `${name}: nothing written`);
  }
});

t.test('a group that fits some linears quantizes them and names the others; no NaN in reports', { skip: skipStories }, async (t) => {
  const out = path.join(root, 'g64');
  const r = shoal(['quantize', '--model', STORIES, '--out', out, '--bits', '3', '--group', '64']);
  t.equal(r.rc, 0, r.err);
  t.match(r.err, /note: --group 64 does not fit down_proj \(in_features 172, out_features 64\)/);
  t.match(r.out, /30 linears quantized/);
  t.notMatch(r.out + r.err, /NaN/, 'no NaN in the text report');
  const j = shoal(['quantize', '--model', STORIES, '--out', path.join(root, 'g64j'), '--bits', '3', '--group', '64', '--json']);
  t.equal(j.rc, 0, j.err);
  t.notMatch(j.out, /NaN/, 'no NaN in the JSON report');
  const layers = (JSON.parse(j.out) as { layers: Array<{ outputMse: number | null }> }).layers;
  t.ok(layers.every((l) => l.outputMse === null), 'RTN reports no output MSE (nothing was measured) instead of NaN');
});

t.test('calibration problems fail before any work, with codes', { skip: skipStories }, async (t) => {
  const empty = path.join(root, 'empty.txt');
  writeFileSync(empty, '  \n\n ');
  const short = path.join(root, 'short.txt');
  writeFileSync(short, 'Once upon a time there was a cat.');
  const noTok = path.join(root, 'no-tokenizer');
  mkdirSync(noTok);
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors']) {
    if (existsSync(path.join(STORIES, f))) copyFileSync(path.join(STORIES, f), path.join(noTok, f));
  }
  for (const method of ['awq', 'gptq']) {
    const base = ['quantize', '--method', method, '--bits', '4', '--group', '32', '--samples', '4', '--seqlen', '128'];
    const cases: Array<[string, string[], RegExp, RegExp]> = [
      ['too short', ['--model', STORIES, '--calib', short], /SHOAL_ERR_CALIB_TOO_SHORT/, /gives \d+ tokens but 4 samples × 128 tokens = 512 are needed/],
      ['empty file', ['--model', STORIES, '--calib', empty], /SHOAL_ERR_CALIB_EMPTY/, /empty\.txt is empty/],
      ['missing file', ['--model', STORIES, '--calib', path.join(root, 'nope.txt')], /SHOAL_ERR_IO/, /cannot read --calib/],
      ['no --calib', ['--model', STORIES], /SHOAL_ERR_INVALID_ARG/, /needs calibration text/],
      ['missing tokenizer', ['--model', noTok, '--calib', STORIES_TXT], /SHOAL_ERR_TOKENIZER/, /has no tokenizer\.json/],
    ];
    for (const [name, args, code, msg] of cases) {
      const out = path.join(root, `calib-${method}-${name.replace(/\W+/g, '-')}`);
      const t0 = performance.now();
      const r = shoal([...base, ...args, '--out', out]);
      t.equal(r.rc, 1, `${method} ${name}: exit 1`);
      t.match(r.err, code, `${method} ${name}: code`);
      t.match(r.err, msg, `${method} ${name}: message`);
      t.same(leftovers(root, path.basename(out)), [], `${method} ${name}: nothing written (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
    }
  }
});

t.test('Ctrl-C (SIGINT) during GPTQ leaves no partial output', async (t) => {
  const model = path.join(root, 'sigint-model');
  generateModel({
    out: model, shape: 'tiny', dtype: 'f32', seed: 3, tokenizerDir: STORIES,
    overrides: { hiddenSize: 512, intermediateSize: 1024, heads: 8, kvHeads: 8, headDim: 64, layers: 12, vocabSize: 512 },
  });
  const calib = path.join(root, 'sigint-calib.txt');
  writeFileSync(calib, calibDocs(400).join('\n\n'));
  const out = path.join(root, 'sigint-out');
  const child = spawn(process.execPath, [CLI_MAIN, 'quantize', '--method', 'gptq', '--bits', '4', '--group', '64', '--model', model,
    '--calib', calib, '--samples', '16', '--seqlen', '256', '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => child.on('exit', (code, signal) => res({ code, signal })));
  // wait until the temporary output folder exists and the first layer is done
  const t0 = Date.now();
  let sawTmp = false;
  while (Date.now() - t0 < 120_000 && child.exitCode === null) {
    sawTmp ||= leftovers(root, 'sigint-out').some((f) => f.includes('.tmp-'));
    if (sawTmp) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  t.ok(sawTmp, 'the quantizer was writing into a temporary folder');
  await new Promise((r) => setTimeout(r, 500));
  const tKill = Date.now();
  child.kill('SIGINT');
  const { code, signal } = await exited;
  t.ok(Date.now() - tKill < 15_000, `ended ${Date.now() - tKill} ms after the signal (does not wait for the running native op)`);
  t.ok(signal === 'SIGINT' || code === 130, `ended by the SIGINT (code ${code}, signal ${signal}; ${stderr.trim().split('\n').pop()})`);
  t.match(stderr, /interrupted \(SIGINT\); the unfinished output was removed/);
  t.same(leftovers(root, 'sigint-out'), [], 'no output folder, no temporary folder');
});
