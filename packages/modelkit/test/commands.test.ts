// `shoal gen-model`, `shoal quantize`, `shoal eval ppl` through commander.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runToolCli } from './helpers/cli.js';
import { hasShared, repoRoot, sharedPath, storiesPath } from '@shoal/testkit';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-cli-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const run = runToolCli;

t.test('gen-model --json and human output', async (t) => {
  const out = path.join(root, 'g');
  const j = JSON.parse(await run(['gen-model', '--shape', 'tiny', '--quant', 'awq-w4g64', '--out', out, '--seed', '3', '--layers', '1', '--vocab', '300', '--json'])) as {
    quant: string; shape: { layers: number; vocabSize: number }; files: string[];
  };
  t.equal(j.quant, 'awq-w4g64');
  t.equal(j.shape.layers, 1);
  t.equal(j.shape.vocabSize, 300);
  t.ok(existsSync(path.join(out, 'model.safetensors')));
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: { group_size: number } };
  t.equal(cfg.quantization_config.group_size, 64);
  const text = await run(['gen-model', '--shape', 'mistral-7b', '--out', path.join(root, 'g2'), '--layers', '1', '--vocab', '64', '--dtype', 'bf16']);
  t.match(text, /MistralForCausalLM mistral-7b: 1 layers, hidden 4096, ffn 14336, heads 32\/8, vocab 64/);
  t.match(text, /quant none, dtype bf16/);
  await t.rejects(run(['gen-model', '--shape', 'gpt-9', '--out', path.join(root, 'g3')]), { code: 'commander.invalidArgument' });
  await t.rejects(run(['gen-model', '--shape', 'tiny', '--out', out]), { code: 'SHOAL_ERR_OUTPUT_EXISTS' });
});

t.test('quantize --json and errors', async (t) => {
  const out = path.join(root, 'q');
  const j = JSON.parse(await run(['quantize', '--method', 'rtn', '--bits', '4', '--group', '32', '--model', storiesPath(), '--out', out, '--json'])) as {
    quantizedLinears: number; modulesToNotConvert: string[]; groupSize: number;
  };
  t.equal(j.groupSize, 32);
  t.equal(j.quantizedLinears, 20);
  t.same(j.modulesToNotConvert, ['mlp.gate_proj', 'mlp.up_proj', 'mlp.down_proj']);
  // AWQ needs calibration text: the error says so before anything is written
  await t.rejects(run(['quantize', '--method', 'awq', '--group', '32', '--model', storiesPath(), '--out', path.join(root, 'x')]), { code: 'SHOAL_ERR_INVALID_ARG', message: /--calib/ });
  await t.rejects(run(['quantize', '--bits', '8', '--model', storiesPath(), '--out', path.join(root, 'x')]), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  t.notOk(existsSync(path.join(root, 'x')));
});

const addon = existsSync(path.join(repoRoot, 'native', 'build', 'Release', 'shoal.node'));
t.test('eval ppl --json', {
  skip: !addon ? 'native addon not built (run `make native`)'
    : hasShared('data', 'tinystories-valid-sample') ? false : 'shared TinyStories sample not found (set SHOAL_SHARED)',
}, async (t) => {
  // a 20,000-character excerpt keeps tokenization short
  const txt = path.join(root, 'excerpt.txt');
  writeFileSync(txt, readFileSync(sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt'), 'utf8').slice(0, 20_000));
  const j = JSON.parse(await run(['eval', 'ppl', '--model', storiesPath(), '--text', txt, '--limit', '3000', '--ctx', '128', '--stride', '64', '--threads', '2', '--json'])) as {
    ppl: number; tokens: number; ctx: number; stride: number; windows: number;
  };
  t.equal(j.tokens, 3000);
  t.equal(j.ctx, 128);
  t.equal(j.stride, 64);
  t.ok(j.ppl > 1 && j.ppl < 20, `ppl ${j.ppl}`);
  const line = await run(['eval', 'ppl', '--model', storiesPath(), '--text', txt, '--limit', '500']);
  t.match(line, /\nppl \d+\.\d{3} over 500 tokens\n$/);
  await t.rejects(run(['eval', 'ppl', '--model', storiesPath(), '--text', path.join(root, 'missing.txt')]), { code: 'SHOAL_ERR_IO' });
});
