// awq/ppl-table.ts — measures the perplexity table of docs/quantization.md on
// stories260K: FP32, RTN and AWQ at w4/w3, group 32/64, down_proj left
// unquantized or the FFN zero-padded to a multiple of the group; TinyStories
// and WikiText-2.
//
//   node packages/modelkit/dist/src/quant/awq/ppl-table.js --model M --stories TXT --wiki RAW --work DIR [--samples 64 --seqlen 512]
//     [--methods rtn,awq-token,awq,awq-mlpclip] [--bits 4,3] [--groups 32,64] [--pads 0,1]
//     [--calib-seed N] [--clip-tokens N] [--search-tokens N] [--clip-linears LIST] [--no-clip] [--wiki-limit N] [--stories-limit N] [--json FILE]
//     [--layer-input fp|quantized] [--precision auto|bf16|f32] [--alpha-search grid|coarse-fine]
//
// Methods: rtn; awq (Shoal's default: v_proj's clip error after attention
// averaging, per-layer RTN fallback on held-out blocks); awq-token (llm-awq's
// per-token v clip error); awq-mlpclip (clip search on gate/up/down only);
// gptq, gptq-act (GPTQ, without / with act order: real GPTQ v2 checkpoints,
// calibrated on the same blocks). A setting whose group fits no linear is
// reported as skipped.
//
// TinyStories protocol: the file separates stories and paragraphs alike by
// blank lines, so a story is taken to start at a paragraph beginning with
// "Once" (the usual opening; stories
// that open otherwise stay joined to the previous one). BOS before each story;
// calibration on the first 200 stories (samples × seqlen tokens); evaluation
// on the last 500 stories, concatenated with their BOS and scored in windows of
// 512 tokens (no extra BOS per window). WikiText-2: the raw test file (or its
// first --wiki-limit tokens), BOS + 511 tokens per window (`shoal eval ppl` defaults).
//
// All quantized variants are written as quantize-dequantize F32 checkpoints
// (the 4-bit values equal the packed AutoAWQ checkpoint's, see
// packages/modelkit/test/quant/awq/checkpoint.test.ts), so the unpadded w4 rows can quantize
// gate/up, whose 172 outputs the packed layout cannot hold.
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { loadModel } from '@shoal/engine';
import { evaluatePerplexity } from '../../eval/ppl.js';
import { quantizeAwqModel } from './quantize-awq.js';
import { quantizeModelGptq } from '../gptq.js';
import { mulberry32 } from '../seeded-random.js';

/** Stories of the TinyStories sample: paragraphs grouped from one starting with "Once" to the next. */
export function splitStories(text: string): string[] {
  return text.split(/\n\s*\n(?=Once\b)/).map((s) => s.trim()).filter((s) => s.length > 0);
}

/** Fisher–Yates with a small seeded generator (mulberry32); seed 0 keeps the order. */
export function shuffled<T>(items: readonly T[], seed: number): T[] {
  const out = [...items];
  if (seed === 0) return out;
  const rand = mulberry32(seed);
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string' }, stories: { type: 'string' }, wiki: { type: 'string' }, work: { type: 'string' },
      samples: { type: 'string', default: '64' }, seqlen: { type: 'string', default: '512' },
      bits: { type: 'string', default: '4,3' }, groups: { type: 'string', default: '32,64' },
      json: { type: 'string' }, 'no-clip': { type: 'boolean' }, methods: { type: 'string', default: 'rtn,awq' }, pads: { type: 'string', default: '0,1' }, 'wiki-limit': { type: 'string' },
      'clip-tokens': { type: 'string' }, 'clip-linears': { type: 'string' }, 'calib-seed': { type: 'string', default: '0' },
      'stories-limit': { type: 'string' }, 'search-tokens': { type: 'string' },
      'layer-input': { type: 'string' }, precision: { type: 'string' }, 'alpha-search': { type: 'string' },
    },
  });
  const model = values.model!;
  const work = values.work!;
  const storiesText = readFileSync(values.stories!, 'utf8');
  const wikiText = readFileSync(values.wiki!, 'utf8');
  const stories = splitStories(storiesText);
  // --calib-seed N > 0: the same 200 stories in a seeded random order, so the
  // calibration blocks are another draw from them (measures the spread between draws).
  const calibDocs = shuffled(stories.slice(0, 200), Number(values['calib-seed']));
  const evalStories = stories.slice(-500);
  const samples = Number(values.samples);
  const seqlen = Number(values.seqlen);
  const methods = values.methods!.split(',');
  for (const m of methods) {
    if (!['rtn', 'awq', 'awq-token', 'awq-mlpclip', 'gptq', 'gptq-act'].includes(m)) throw new Error(`unknown method ${m}: rtn, awq, awq-token, awq-mlpclip, gptq or gptq-act`);
  }
  const clipTokens = values['clip-tokens'] ? { clipTokens: Number(values['clip-tokens']) } : {};
  const searchTokens = values['search-tokens'] ? { searchTokens: Number(values['search-tokens']) } : {};
  const awqMode = {
    ...(values['layer-input'] ? { layerInput: values['layer-input'] as 'fp' | 'quantized' } : {}),
    ...(values.precision ? { precision: values.precision as 'auto' | 'bf16' | 'f32' } : {}),
    ...(values['alpha-search'] ? { alphaSearch: values['alpha-search'] as 'grid' | 'coarse-fine' } : {}),
  };
  const clipLinears = values['clip-linears'] ? { clipLinears: values['clip-linears'].split(',') } : {};
  process.stderr.write(`${stories.length} stories; calibration: first 200, evaluation: last 500\n`);

  const rows: Array<Record<string, unknown>> = [];
  // Every checkpoint keeps the FP model's tokenizer: tokenize the evaluation texts once.
  let tokens: { stories: number[]; wiki: number[] } | null = null;
  async function evaluate(dir: string): Promise<{ stories: number; wiki: number; storyTokens: number; wikiTokens: number }> {
    const m = await loadModel(dir);
    try {
      if (!tokens) {
        const tok = m.tokenizer!;
        const bos = m.info.bosTokenId!;
        const ids: number[] = [];
        for (const s of evalStories) ids.push(bos, ...tok.encode(s, { addSpecialTokens: false }));
        if (values['stories-limit']) ids.length = Math.min(ids.length, Number(values['stories-limit']));
        let wikiIds = tok.encode(wikiText, { addSpecialTokens: false });
        if (values['wiki-limit']) wikiIds = wikiIds.slice(0, Number(values['wiki-limit']));
        tokens = { stories: ids, wiki: wikiIds };
      }
      const st = await evaluatePerplexity(m, tokens.stories, { ctx: 512, bos: null });
      const wk = await evaluatePerplexity(m, tokens.wiki, { ctx: 512 });
      return { stories: st.ppl, wiki: wk.ppl, storyTokens: st.tokens, wikiTokens: wk.tokens };
    } finally {
      m.dispose();
    }
  }
  const fp = await evaluate(model);
  rows.push({ name: 'fp32', ...fp });
  process.stderr.write(`fp32: ${JSON.stringify(fp)}\n`);
  for (const bits of values.bits!.split(',').map(Number)) {
    for (const G of values.groups!.split(',').map(Number)) {
      for (const pad of values.pads!.split(',').map((p) => p === '1')) {
        for (const variant of methods) {
          const out = path.join(work, `${variant}-w${bits}g${G}${pad ? '-pad' : ''}`);
          const name = `${variant} w${bits}g${G}${pad ? ' pad' : ''}`;
          const t0 = performance.now();
          let info: Record<string, unknown>;
          try {
            if (variant.startsWith('gptq')) {
              if (pad) continue; // GPTQ rows: down_proj FP (no FFN padding in the GPTQ writer)
              const r = await quantizeModelGptq({
                model, out, method: 'gptq', bits, groupSize: G, checkpointFormat: 'gptq_v2', dtype: 'f32', force: true,
                calibDocs, awqSamples: samples, awqSeqlen: seqlen, actOrder: variant === 'gptq-act',
              });
              info = { notConverted: r.modulesToNotConvert };
            } else {
              const method = variant === 'rtn' ? 'rtn' : 'awq';
              const mlpClip = variant === 'awq-mlpclip';
              const r = await quantizeAwqModel({
                model, out, method, bits, groupSize: G, padFfn: pad, fakeQuant: true, force: true,
                calibDocs, samples, seqlen,
                clip: !values['no-clip'], clipVAttention: variant !== 'awq-token', ...clipTokens, ...searchTokens, ...awqMode,
                ...(mlpClip ? { clipLinears: ['gate_proj', 'up_proj', 'down_proj'] } : clipLinears),
              });
              info = {
                notConverted: r.modulesToNotConvert, alphas: r.layers.map((l) => l.scales.map((s) => s.alpha)),
                clip: r.layers.map((l) => l.clip), outputMse: r.layers.map((l) => l.outputMse),
                fallback: r.layers.map((l) => l.fallback ?? null), rtnFallbackLayers: r.rtnFallbackLayers,
              };
            }
          } catch (err) {
            const e = err as Error & { code?: string };
            if (e.code !== 'SHOAL_ERR_GROUP_SIZE') throw err;
            rows.push({ name, method: variant, bits, G, pad, skipped: e.message });
            process.stderr.write(`${name}: skipped (${e.message})\n`);
            continue;
          }
          const seconds = (performance.now() - t0) / 1000;
          const e = await evaluate(out);
          const row = { name, method: variant, bits, G, pad, ...e, seconds, ...info };
          rows.push(row);
          process.stderr.write(`${row.name}: stories ${e.stories.toFixed(4)} wiki ${e.wiki.toFixed(4)} (${seconds.toFixed(1)} s)\n`);
          if (values.json) writeFileSync(values.json, JSON.stringify({ samples, seqlen, stories: stories.length, rows }, null, 1));
        }
      }
    }
  }
  process.stdout.write(JSON.stringify({ samples, seqlen, rows }) + '\n');
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  main().catch((err: unknown) => {
    process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
    process.exit(1);
  });
}
