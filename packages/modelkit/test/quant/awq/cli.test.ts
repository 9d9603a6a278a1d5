// `shoal quantize --method awq` / `--bits 3` / `--pad-ffn` through commander,
// then `shoal eval ppl` on the result.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { backendOps } from '@shoal/engine';
import { runToolCli } from '../../helpers/cli.js';
import { calibDocs, skipStories, STORIES } from '../helpers.js';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-awq-cli-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const run = runToolCli;

t.test('quantize --method awq --pad-ffn --json, then eval ppl', { skip: skipStories }, async (t) => {
  const calib = path.join(root, 'calib.txt');
  writeFileSync(calib, calibDocs(60).join('\n\n'));
  const out = path.join(root, 'awq');
  const j = JSON.parse(await run(['quantize', '--method', 'awq', '--bits', '4', '--group', '32', '--model', STORIES, '--calib', calib,
    '--calib-sep', '\\n\\n', '--samples', '3', '--seqlen', '128', '--pad-ffn', '--out', out, '--json'])) as {
    method: string; bits: number; fakeQuant: boolean; paddedIntermediateSize: number; vClipError: string; calibration: { samples: number; seqlen: number; documents: number };
    layers: Array<{ seconds: number; outputMse: number; scales: unknown[] }>;
  };
  t.match(j, { method: 'awq', bits: 4, fakeQuant: false, paddedIntermediateSize: 192, vClipError: 'attention', calibration: { samples: 3, seqlen: 128 } });
  t.ok(j.calibration.documents > 1, 'the file was split into documents');
  t.equal(j.layers.length, 5);
  t.ok(j.layers.every((l) => l.seconds > 0 && l.outputMse > 0 && l.scales.length === 3));
  const cfg = JSON.parse(readFileSync(path.join(out, 'config.json'), 'utf8')) as { quantization_config: { quant_method: string } };
  t.equal(cfg.quantization_config.quant_method, 'awq');
  const ppl = JSON.parse(await run(['eval', 'ppl', '--model', out, '--text', calib, '--limit', '600', '--json'])) as { ppl: number; quant: string };
  t.ok(Number.isFinite(ppl.ppl) && ppl.ppl > 1, `ppl ${ppl.ppl}`);

  const out3 = path.join(root, 'rtn3');
  const text = await run(['quantize', '--method', 'rtn', '--bits', '3', '--group', '32', '--model', STORIES, '--out', out3]);
  t.match(text, /rtn w3 g32 fake-quantized/);
  t.ok(existsSync(path.join(out3, 'model.safetensors')));
});

t.test('quantize --method awq without --calib fails with a code', { skip: skipStories }, async (t) => {
  await t.rejects(run(['quantize', '--method', 'awq', '--group', '32', '--model', STORIES, '--out', path.join(root, 'x')]), { code: 'SHOAL_ERR_INVALID_ARG', message: /--calib/ });
  await t.rejects(run(['quantize', '--method', 'awq', '--bits', '5', '--model', STORIES, '--calib', 'x', '--out', path.join(root, 'x')]), { code: 'SHOAL_ERR_UNSUPPORTED_QUANT' });
  await t.rejects(run(['quantize', '--method', 'awq', '--clip-linears', 'q_proj', '--model', STORIES, '--calib', 'x', '--out', path.join(root, 'x')]),
    { code: 'SHOAL_ERR_INVALID_ARG', message: /q_proj is not one of v_proj, o_proj/ });
  t.notOk(existsSync(path.join(root, 'x')), 'no output folder left behind');
});

t.test('quantize --backend: cuda without a usable GPU is a clear error; cpu names the backend in the summary', { skip: skipStories }, async (t) => {
  const calib = path.join(root, 'calib-b.txt');
  writeFileSync(calib, calibDocs(20).join('\n\n'));
  const args = ['quantize', '--method', 'awq', '--bits', '4', '--group', '32', '--model', STORIES, '--calib', calib, '--samples', '2', '--seqlen', '64', '--fake-quant'];
  let cuda = false;
  try {
    cuda = backendOps().init('cuda').backend === 'cuda';
  } catch (err) {
    t.equal((err as { code?: string }).code, 'SHOAL_ERR_BACKEND');
  }
  if (!cuda) {
    await t.rejects(run([...args, '--backend', 'cuda', '--out', path.join(root, 'b-cuda')]), { code: 'SHOAL_ERR_BACKEND', message: /cuda/ });
    t.notOk(existsSync(path.join(root, 'b-cuda')), 'no output folder left behind');
  }
  const j = JSON.parse(await run([...args, '--backend', 'cpu', '--clip-linears', 'gate_proj,up_proj', '--out', path.join(root, 'b-cpu'), '--json'])) as {
    backend: { backend: string }; layers: Array<{ clip: Record<string, number> }>;
  };
  t.equal(j.backend.backend, 'cpu');
  const jt = JSON.parse(await run([...args, '--v-clip-error', 'token', '--out', path.join(root, 'b-token'), '--json'])) as { vClipError: string; layers: Array<{ clip: Record<string, number> }> };
  t.equal(jt.vClipError, 'token', '--v-clip-error token: the per-token objective of llm-awq');
  t.ok('v_proj' in jt.layers[0]!.clip);
  await t.rejects(run([...args, '--v-clip-error', 'heads', '--out', path.join(root, 'b-bad')]), /heads.*attention, token|Allowed choices/);
  t.same(Object.keys(j.layers[0]!.clip).sort(), ['gate_proj', 'up_proj'], 'only the listed linears were clipped');
});

t.test('quantize --search-tokens: whole blocks of the calibration, bad values rejected before any work', { skip: skipStories }, async (t) => {
  const calib = path.join(root, 'calib-s.txt');
  writeFileSync(calib, calibDocs(40).join('\n\n'));
  const args = ['quantize', '--method', 'awq', '--bits', '4', '--group', '32', '--model', STORIES, '--calib', calib, '--samples', '6', '--seqlen', '64', '--fake-quant', '--holdout', '0'];
  type J = { calibration: { tokens: number; searchTokens: number } };
  const a = JSON.parse(await run([...args, '--search-tokens', '100', '--out', path.join(root, 's-100'), '--json'])) as J;
  t.equal(a.calibration.tokens, 384);
  t.equal(a.calibration.searchTokens, 128, '100 tokens → 2 whole blocks of 64');
  const d = JSON.parse(await run([...args, '--out', path.join(root, 's-def'), '--json'])) as J;
  t.equal(d.calibration.searchTokens, 384, 'the default 4096 covers all 6 blocks');
  await t.rejects(run([...args, '--search-tokens', '0', '--out', path.join(root, 's-bad')]), /--search-tokens.*positive integer/);
  t.notOk(existsSync(path.join(root, 's-bad')), 'no output folder left behind');
});

t.test('quantize --layer-input, --precision, --alpha-search: reported, honoured, bad values rejected', { skip: skipStories }, async (t) => {
  const calib = path.join(root, 'calib-m.txt');
  writeFileSync(calib, calibDocs(40).join('\n\n'));
  const args = ['quantize', '--method', 'awq', '--bits', '4', '--group', '32', '--model', STORIES, '--calib', calib, '--samples', '6', '--seqlen', '64', '--fake-quant', '--holdout', '0'];
  type J = {
    layerInput: string; alphaSearch: string; precision: { products: string; bf16Native: boolean };
    layers: Array<{ outputMse: number; scales: Array<{ alpha: number; candidates: Array<{ alpha: number; loss: number }> }> }>;
  };
  const native = backendOps().info().bf16Native;
  const d = JSON.parse(await run([...args, '--out', path.join(root, 'm-def'), '--json'])) as J;
  t.equal(d.layerInput, 'fp', 'default: the FP output is the next layer input');
  t.equal(d.alphaSearch, 'coarse-fine');
  t.same(d.precision, { products: 'f32', bf16Native: native }, 'auto on stories260K (hidden 64): f32');
  t.ok(d.layers.every((l) => l.scales.every((s) => s.candidates.length <= 11 && s.candidates.some((c) => c.alpha === s.alpha))), 'coarse-fine: at most 11 α, the chosen one among them');
  t.ok(d.layers.every((l) => Number.isFinite(l.outputMse) && l.outputMse > 0), 'output error measured on the search blocks');

  const g = JSON.parse(await run([...args, '--layer-input', 'quantized', '--precision', 'f32', '--alpha-search', 'grid', '--out', path.join(root, 'm-old'), '--json'])) as J;
  t.match(g, { layerInput: 'quantized', alphaSearch: 'grid', precision: { products: 'f32' } });
  t.ok(g.layers.every((l) => l.scales.every((s) => s.candidates.length === 20)), 'grid: all 20 α');
  // layer 0 sees the embeddings either way: the same search as the default on f32 products
  const f = JSON.parse(await run([...args, '--precision', 'f32', '--alpha-search', 'grid', '--out', path.join(root, 'm-fp'), '--json'])) as J;
  t.same(f.layers[0]!.scales, g.layers[0]!.scales, 'layer 0: identical scale search whatever the layer input');
  t.notSame(f.layers.slice(1).map((l) => l.outputMse), g.layers.slice(1).map((l) => l.outputMse), 'later layers see different inputs');
  const b = JSON.parse(await run([...args, '--precision', 'bf16', '--alpha-search', 'grid', '--out', path.join(root, 'm-bf'), '--json'])) as J;
  t.equal(b.precision.products, 'bf16', 'bf16 forced (emulated where not native)');
  t.ok(b.layers[0]!.scales.every((s, i) => s.candidates.every((c, k) => Math.abs(c.loss - f.layers[0]!.scales[i]!.candidates[k]!.loss) <= 0.05 * f.layers[0]!.scales[i]!.candidates[k]!.loss)),
    'bf16 candidate losses within 5 % of f32 on layer 0');

  for (const [opt, bad, msg] of [['--layer-input', 'int4', /Allowed choices|fp, quantized/], ['--precision', 'fp8', /Allowed choices|auto, bf16, f32/], ['--alpha-search', 'random', /Allowed choices|coarse-fine, grid/]] as const) {
    await t.rejects(run([...args, opt, bad, '--out', path.join(root, 'm-bad')]), msg, `${opt} ${bad} refused`);
  }
  t.notOk(existsSync(path.join(root, 'm-bad')), 'no output folder left behind');
});
