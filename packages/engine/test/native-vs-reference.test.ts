// The native engine against the float64 TypeScript reference: synthetic models
// of several shapes (GQA 1/2/3/4, Qwen2 biases, tied/untied, AWQ g32/64/128,
// dims that are not powers of two, llama3 RoPE scaling, f16/bf16/f32 storage)
// for every CPU kernel set the engine reports, stories260K F32 and its F16
// conversion against the published float64 logits, and RTN INT4 perplexity.
// Skips when the native addon is not built (`make native`).
import t from 'tap';
import { writeFileAtomicSync } from '@shoal/common';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  evaluatePerplexity, generateModel, copyTokenizerFiles, type ModelShape, type ShapeName, quantizeModel, loadReferenceModel, referenceForward, Checkpoint, encodeFloats, writeSafetensors,
} from '@shoal/modelkit';
import type { Model } from '../src/types.js';
import { engine, engineSkip, isas, hasShared, sharedPath } from '@shoal/testkit';


const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-nvr-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

/** max |a - b| / max |b| over all rows */
function relErr(a: Float32Array, b: Float64Array[], V: number): { rel: number; abs: number; scale: number } {
  let abs = 0;
  let scale = 0;
  b.forEach((row, p) => {
    for (let i = 0; i < V; i++) {
      abs = Math.max(abs, Math.abs(a[p * V + i]! - row[i]!));
      scale = Math.max(scale, Math.abs(row[i]!));
    }
  });
  return { rel: abs / scale, abs, scale };
}
const argmax = (a: ArrayLike<number>, off = 0, n = a.length) => {
  let b = 0;
  for (let i = 1; i < n; i++) if (a[off + i]! > a[off + b]!) b = i;
  return b;
};

interface Case {
  name: string;
  shape: ShapeName;
  overrides: Partial<ModelShape>;
  quant: number;
  dtype: 'f16' | 'f32' | 'bf16';
}

// Tolerances on max |logit - reference| / max |reference logit|.
// The reference runs in float64 on exactly the stored (f16/bf16/INT4) weights.
// For AWQ models the engine makes two documented approximations (kernels.h,
// q4-repack.h): -s*z is stored as f16, and decode steps (fewer than 4 rows)
// use int8 activations per 32-block. Compared with the exact math these cost
// ~1.5e-3 (prefill) and ~5e-2 (decode) of the logit range. Prefill is checked
// tightly against the reference that emulates the f16 -s*z (EngineNumerics).
// Decode cannot be emulated tightly: one int8 rounding flip (f32 vs f64
// activations) changes later activations by ~1e-3 and then flips many more,
// so decode is checked against the exact math with a bound above the int8
// noise (a layout or indexing bug gives errors of order 1) plus argmax agreement.
const REL_TOL = 1e-4;               // unquantized, and AWQ prefill vs the emulated numerics
const REL_TOL_EXACT_PREFILL = 5e-3; // AWQ prefill vs exact math (observed <= 1.6e-3)
const REL_TOL_EXACT_DECODE = 1e-1;  // AWQ int8-activation decode vs exact math (observed <= 6e-2)

const CASES: Case[] = [
  { name: 'llama GQA 3:1 h384 g128', shape: 'tiny', overrides: { vocabSize: 700 }, quant: 128, dtype: 'f16' },
  { name: 'llama GQA 2:1 h96 ffn200 g32 (down_proj f16)', shape: 'tiny', overrides: { hiddenSize: 96, intermediateSize: 200, heads: 6, kvHeads: 3, vocabSize: 333 }, quant: 32, dtype: 'f16' },
  { name: 'llama MHA h192 ffn320 g64', shape: 'tiny', overrides: { hiddenSize: 192, intermediateSize: 320, heads: 3, kvHeads: 3, vocabSize: 500 }, quant: 64, dtype: 'f16' },
  { name: 'qwen2 GQA 4:1 bias tied h256 g64', shape: 'qwen2-1.5b', overrides: { layers: 2, hiddenSize: 256, intermediateSize: 384, heads: 8, kvHeads: 2, vocabSize: 600 }, quant: 64, dtype: 'f16' },
  { name: 'llama3 rope GQA 4:1 h256 g128', shape: 'llama-3-8b', overrides: { layers: 2, hiddenSize: 256, intermediateSize: 768, heads: 4, kvHeads: 1, vocabSize: 400 }, quant: 128, dtype: 'f16' },
  { name: 'mistral f16 unquantized h160', shape: 'mistral-7b', overrides: { layers: 2, hiddenSize: 160, intermediateSize: 352, heads: 5, kvHeads: 1, vocabSize: 300 }, quant: 0, dtype: 'f16' },
  { name: 'llama bf16 unquantized', shape: 'tiny', overrides: { vocabSize: 256 }, quant: 0, dtype: 'bf16' },
  { name: 'llama f32 unquantized h96', shape: 'tiny', overrides: { hiddenSize: 96, intermediateSize: 200, heads: 6, kvHeads: 2, vocabSize: 256 }, quant: 0, dtype: 'f32' },
];

t.test('native logits vs reference forward on synthetic models, every ISA', { skip: engineSkip }, async (t) => {
  t.comment(`ISAs: ${isas.join(', ')}; tolerance max|diff| / max|logit| <= ${REL_TOL}`);
  for (const c of CASES) {
    const dir = path.join(root, c.name.replace(/[^a-z0-9]+/gi, '-'));
    const g = generateModel({ out: dir, shape: c.shape, overrides: c.overrides, quant: c.quant, dtype: c.dtype, seed: 11 });
    const V = g.shape.vocabSize;
    const toks = [1, 17, 5, 240, 3, 99, 42, 7, 150, 8, 64, 200].map((x) => x % V);
    const rm = loadReferenceModel(dir);
    const ref = referenceForward(rm, toks);
    const refPrefill = referenceForward(rm, toks, { f16ScaledZeros: true });
    const refInc = referenceForward(rm, toks, { f16ScaledZeros: true, q8From: 5 });
    for (const isa of isas) {
      const m = await engine!.loadModel(dir, { isa, threads: 2, tokenizer: false });
      try {
        t.equal(m.info.quant, c.quant ? `awq-w4g${c.quant}` : 'none', `${c.name}: quant reported`);
        const s = m.createSession({ contextSize: 32 });
        const all = await s.eval(toks, { allLogits: true });
        const e = relErr(all, refPrefill, V);
        const ex = relErr(all, ref, V);
        // incremental decode after a prefill must give the same rows (KV cache path)
        s.reset();
        await s.eval(toks.slice(0, 5), { allLogits: false });
        const inc = new Float32Array(toks.length * V);
        inc.set(all.subarray(0, 5 * V));
        for (let p = 5; p < toks.length; p++) inc.set(await s.eval([toks[p]!]), p * V);
        const ei = relErr(inc, refInc, V);
        const eix = relErr(inc, ref, V);
        s.dispose();
        let agree = 0;
        let agreeInc = 0;
        for (let p = 0; p < toks.length; p++) {
          if (argmax(all, p * V, V) === argmax(ref[p]!)) agree++;
          if (argmax(inc, p * V, V) === argmax(ref[p]!)) agreeInc++;
        }
        t.comment(`${c.name} [${isa}=${m.info.isa}]: prefill rel ${e.rel.toExponential(2)} (exact math ${ex.rel.toExponential(2)}), decode rel ${ei.rel.toExponential(2)} (exact math ${eix.rel.toExponential(2)}), |logit| ${e.scale.toFixed(2)}, argmax ${agree}/${toks.length} prefill, ${agreeInc}/${toks.length} decode`);
        t.ok(e.rel <= REL_TOL, `${c.name} [${isa}]: prefill logits within ${REL_TOL} (${e.rel.toExponential(2)})`);
        if (!c.quant) t.ok(ei.rel <= REL_TOL, `${c.name} [${isa}]: prefill + decode logits within ${REL_TOL} (${ei.rel.toExponential(2)})`);
        t.ok(ex.rel <= (c.quant ? REL_TOL_EXACT_PREFILL : REL_TOL), `${c.name} [${isa}]: prefill vs exact math (${ex.rel.toExponential(2)})`);
        t.ok(eix.rel <= (c.quant ? REL_TOL_EXACT_DECODE : REL_TOL), `${c.name} [${isa}]: decode vs exact math (${eix.rel.toExponential(2)})`);
        t.equal(agree, toks.length, `${c.name} [${isa}]: prefill argmax agrees`);
        t.ok(agreeInc >= toks.length - 2, `${c.name} [${isa}]: decode argmax agrees (${agreeInc}/${toks.length})`);
      } finally {
        m.dispose();
      }
    }
  }
});

const STORIES = ['models', 'stories260K'] as const;
const storiesSkip = engineSkip || (hasShared(...STORIES, 'reference_greedy.json') ? false : 'shared models/stories260K not found (set SHOAL_SHARED)');

interface RefJson {
  cases: Array<{ prompt: string; input_ids: number[]; ids_after_bos: number[]; steps: number }>;
  logits: { input_ids: number[]; values: number[][] };
}

/**
 * Greedy decode with the engine, llama2.c semantics: `steps` positions, the
 * prompt (BOS first) then argmax tokens; stops when BOS is produced. Returns
 * every token after BOS (prompt included), as ids_after_bos.
 */
async function greedy(m: Model, prompt: number[], steps: number): Promise<number[]> {
  const V = m.info.vocabSize;
  const s = m.createSession({ contextSize: steps });
  try {
    const out = [...prompt.slice(1)];
    let logits = await s.eval(prompt);
    while (out.length < steps) {
      const next = argmax(logits, 0, V);
      if (next === 1) break;
      out.push(next);
      if (out.length === steps) break;
      logits = await s.eval([next]);
    }
    return out;
  } finally {
    s.dispose();
  }
}

/** F32 -> F16 copy of a checkpoint folder (config torch_dtype float16). */
function convertToF16(src: string, dst: string): void {
  const ck = Checkpoint.open(src);
  try {
    writeSafetensors(path.join(dst, 'model.safetensors'), ck.names().map((n) => ({
      name: n, dtype: 'F16' as const, shape: ck.entry(n).shape, data: encodeFloats(ck.readFloat32(n), 'F16'),
    })));
  } finally {
    ck.close();
  }
  const cfg = JSON.parse(readFileSync(path.join(src, 'config.json'), 'utf8')) as Record<string, unknown>;
  writeFileAtomicSync(path.join(dst, 'config.json'), JSON.stringify({ ...cfg, torch_dtype: 'float16' }, null, 2));
  writeFileAtomicSync(path.join(dst, 'generation_config.json'), readFileSync(path.join(src, 'generation_config.json')));
  copyTokenizerFiles(src, dst);
}

t.test('stories260K F32 and F16: logits and greedy tokens vs the float64 reference, every ISA', { skip: storiesSkip }, async (t) => {
  const ref = JSON.parse(readFileSync(sharedPath(...STORIES, 'reference_greedy.json'), 'utf8')) as RefJson;
  const f16dir = path.join(root, 'stories-f16');
  const { mkdirSync } = await import('node:fs');
  mkdirSync(f16dir);
  convertToF16(sharedPath(...STORIES), f16dir);
  const refRows = ref.logits.values.map((r) => Float64Array.from(r));
  const f16Ref = referenceForward(loadReferenceModel(f16dir), ref.logits.input_ids);
  // F32: engine float32 arithmetic only. F16: plus the weight rounding, which we
  // measure separately as the reference-on-f16-weights vs reference difference.
  let f16WeightErr = 0;
  f16Ref.forEach((row, p) => row.forEach((v, i) => { f16WeightErr = Math.max(f16WeightErr, Math.abs(v - refRows[p]![i]!)); }));
  t.comment(`f16 weight rounding alone moves logits by up to ${f16WeightErr.toExponential(2)}`);
  for (const [label, dir, tol] of [['F32', sharedPath(...STORIES), 1e-4], ['F16', f16dir, 1e-4]] as const) {
    for (const isa of isas) {
      const m = await engine!.loadModel(dir, { isa, threads: 2, tokenizer: false });
      try {
        const s = m.createSession({ contextSize: 16 });
        const all = await s.eval(ref.logits.input_ids, { allLogits: true });
        s.dispose();
        const vsSelf = relErr(all, label === 'F32' ? refRows : f16Ref, 512);
        const vsF32 = relErr(all, refRows, 512);
        t.comment(`${label} [${isa}]: vs float64 on the same weights rel ${vsSelf.rel.toExponential(2)} (abs ${vsSelf.abs.toExponential(2)}); vs F32 reference abs ${vsF32.abs.toExponential(2)}`);
        t.ok(vsSelf.rel <= tol, `${label} [${isa}]: logits within ${tol} relative`);
        for (const c of ref.cases) {
          const got = await greedy(m, c.input_ids, c.steps);
          t.same(got, c.ids_after_bos.slice(0, got.length), `${label} [${isa}] greedy "${c.prompt}"`);
          t.equal(got.length, c.ids_after_bos.length, `${label} [${isa}] "${c.prompt}": ${got.length} tokens`);
        }
      } finally {
        m.dispose();
      }
    }
  }
});

const pplSkip = storiesSkip || (hasShared('data', 'tinystories-valid-sample', 'tinystories_val.txt') ? false : 'TinyStories sample not found');

t.test('stories260K RTN INT4 g32 perplexity within 10% of F32 (engine, TinyStories sample)', { skip: pplSkip }, async (t) => {
  const q = path.join(root, 'stories-q32');
  quantizeModel({ model: sharedPath(...STORIES), out: q, groupSize: 32 });
  // the first 80,000 characters (~38k tokens) keep the test short; SHOAL_FULL_PPL=1 scores the whole sample
  const full = readFileSync(sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt'), 'utf8');
  const text = process.env.SHOAL_FULL_PPL === '1' ? full : full.slice(0, 80_000);
  const res: Record<string, number> = {};
  let n = 0;
  for (const [label, dir] of [['F32', sharedPath(...STORIES)], ['INT4 g32', q]] as const) {
    const m = await engine!.loadModel(dir, { threads: 2 });
    try {
      const ids = m.tokenizer!.encode(text, { addSpecialTokens: false });
      const r = await evaluatePerplexity(m, ids, { ctx: 512 });
      t.comment(`${label}: ppl ${r.ppl.toFixed(4)} over ${r.tokens} tokens (${r.windows} windows, ${r.tokensPerSecond.toFixed(0)} tok/s, ${m.info.isa})`);
      res[label] = r.ppl;
      n = r.tokens;
    } finally {
      m.dispose();
    }
  }
  const ratio = res['INT4 g32']! / res.F32!;
  t.comment(`INT4/F32 perplexity ratio ${ratio.toFixed(4)} over ${n} tokens`);
  t.ok(res.F32! > 1 && res.F32! < 20, 'trained model on in-domain text');
  t.ok(Math.abs(ratio - 1) < 0.10, 'RTN INT4 g32 within 10% of F32');
});
