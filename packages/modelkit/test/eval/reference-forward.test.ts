// The float64 TypeScript reference forward: validated against stories260K's
// float64 reference logits, plus structural checks (causality, GQA, RoPE scaling).
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { generateModel } from '../../src/synth/gen-model.js';
import { loadReferenceModel, referenceForward, ropeInvFreq, type ReferenceModel } from '../../src/eval/reference-forward.js';
import { MODEL_SHAPES } from '../../src/arch/model-shapes.js';
import { storiesPath } from '@shoal/testkit';


interface RefJson {
  cases: Array<{ prompt: string; input_ids: number[]; ids_after_bos: number[] }>;
  logits: { input_ids: number[]; values: number[][]; argmax: number[] };
}

const argmax = (a: ArrayLike<number>) => {
  let b = 0;
  for (let i = 1; i < a.length; i++) if (a[i]! > a[b]!) b = i;
  return b;
};

t.test('stories260K: logits equal the float64 reference', async (t) => {
  const ref = JSON.parse(readFileSync(storiesPath('reference_greedy.json'), 'utf8')) as RefJson;
  const m = loadReferenceModel(storiesPath());
  t.equal(m.shape.kvHeads, 4);
  t.equal(m.lmHead, m.embed, 'tied embeddings');
  const L = referenceForward(m, ref.logits.input_ids);
  t.equal(L.length, 5);
  // the JSON stores logits with 6 decimals, so agreement is bounded by 5e-7 absolute
  let maxAbs = 0;
  let maxLogit = 0;
  for (let p = 0; p < L.length; p++) {
    for (let i = 0; i < 512; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(L[p]![i]! - ref.logits.values[p]![i]!));
      maxLogit = Math.max(maxLogit, Math.abs(ref.logits.values[p]![i]!));
    }
    t.equal(argmax(L[p]!), ref.logits.argmax[p], `argmax at position ${p}`);
  }
  t.comment(`max |logit - reference| = ${maxAbs.toExponential(3)} (max |logit| ${maxLogit.toFixed(2)}, relative ${(maxAbs / maxLogit).toExponential(2)})`);
  t.ok(maxAbs <= 5.0e-7 + 1e-9, `max abs diff ${maxAbs.toExponential(3)} <= 5e-7 (the reference's 6-decimal rounding)`);
});

t.test('stories260K: greedy continuation of "Once upon a time" matches', async (t) => {
  const ref = JSON.parse(readFileSync(storiesPath('reference_greedy.json'), 'utf8')) as RefJson;
  const c = ref.cases.find((x) => x.prompt === 'Once upon a time')!;
  const m = loadReferenceModel(storiesPath());
  const seq = [...c.input_ids];
  const steps = 16;
  for (let i = 0; i < steps; i++) {
    const L = referenceForward(m, seq);
    seq.push(argmax(L[L.length - 1]!));
  }
  // ids_after_bos holds the prompt tokens followed by the generated ones
  t.same(seq.slice(1), c.ids_after_bos.slice(0, seq.length - 1));
});

t.test('causal: a position does not see later tokens', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shoal-ref-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  generateModel({ out: path.join(dir, 'm'), shape: 'tiny', overrides: { layers: 2, vocabSize: 64 }, force: true });
  const m = loadReferenceModel(path.join(dir, 'm'));
  const a = referenceForward(m, [1, 5, 9, 13]);
  const b = referenceForward(m, [1, 5, 9, 40]);
  t.same(Array.from(b[2]!), Array.from(a[2]!));
  t.notSame(Array.from(b[3]!), Array.from(a[3]!));
});

/** The same model with each kv head duplicated for its query heads (GQA -> MHA). */
function expandToMha(m: ReferenceModel): ReferenceModel {
  const s = m.shape;
  const rep = s.heads / s.kvHeads;
  const hd = s.headDim;
  const D = s.hiddenSize;
  const layers = m.layers.map((l) => {
    const expand = (kind: 'self_attn.k_proj' | 'self_attn.v_proj') => {
      const src = l.linears[kind];
      const w = new Float64Array(s.heads * hd * D);
      const bias = src.bias ? new Float64Array(s.heads * hd) : null;
      for (let h = 0; h < s.heads; h++) {
        const kv = Math.floor(h / rep);
        w.set(src.w.subarray(kv * hd * D, (kv + 1) * hd * D), h * hd * D);
        if (bias && src.bias) bias.set(src.bias.subarray(kv * hd, (kv + 1) * hd), h * hd);
      }
      return { ...src, out: s.heads * hd, w, bias };
    };
    return { ...l, linears: { ...l.linears, 'self_attn.k_proj': expand('self_attn.k_proj'), 'self_attn.v_proj': expand('self_attn.v_proj') } };
  });
  return { ...m, shape: { ...s, kvHeads: s.heads }, layers };
}

t.test('GQA maps query head h to kv head h / (H / Hkv), with and without biases', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'shoal-ref-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const [name, shape, kv] of [['llama', 'tiny', 2], ['qwen2', 'qwen2-1.5b', 2], ['gqa4', 'tiny', 1]] as const) {
    const out = path.join(dir, name);
    generateModel({ out, shape, overrides: { layers: 2, vocabSize: 97, hiddenSize: 128, intermediateSize: 160, heads: 4, kvHeads: kv }, seed: 3 });
    const m = loadReferenceModel(out);
    t.equal(m.shape.qkvBias, shape === 'qwen2-1.5b');
    const toks = [1, 7, 3, 50, 96, 2];
    const a = referenceForward(m, toks);
    const b = referenceForward(expandToMha(m), toks);
    let d = 0;
    for (let p = 0; p < toks.length; p++) for (let i = 0; i < 97; i++) d = Math.max(d, Math.abs(a[p]![i]! - b[p]![i]!));
    t.ok(d < 1e-12, `${name}: GQA ${4 / kv}:1 == expanded MHA (max diff ${d})`);
    if (shape === 'qwen2-1.5b') {
      t.equal(m.lmHead, m.embed, 'qwen2-1.5b ties the embeddings');
      // the biases matter
      const nb = { ...m, layers: m.layers.map((l) => ({ ...l, linears: { ...l.linears, 'self_attn.k_proj': { ...l.linears['self_attn.k_proj'], bias: null } } })) };
      t.notSame(Array.from(referenceForward(nb, toks)[3]!), Array.from(a[3]!));
    }
  }
});

t.test('RoPE inverse frequencies: default, linear, llama3', async (t) => {
  const base = { ...MODEL_SHAPES['llama-2-7b'] };
  const inv = ropeInvFreq(base);
  t.equal(inv.length, 64);
  t.equal(inv[0], 1);
  t.ok(Math.abs(inv[1]! - 1 / Math.pow(10000, 2 / 128)) < 1e-15);
  const lin = ropeInvFreq({ ...base, ropeScaling: { type: 'linear', factor: 4 } });
  for (let i = 0; i < 64; i++) t.equal(lin[i], inv[i]! / 4);
  const l3 = MODEL_SHAPES['llama-3-8b'];
  const plain = ropeInvFreq({ ...l3, ropeScaling: null });
  const scaled = ropeInvFreq(l3);
  let hi = 0, lo = 0, mid = 0;
  for (let i = 0; i < 64; i++) {
    const wavelen = (2 * Math.PI) / plain[i]!;
    if (wavelen < 8192 / 4) { t.equal(scaled[i], plain[i]); hi++; }
    else if (wavelen > 8192 / 1) { t.equal(scaled[i], plain[i]! / 8); lo++; }
    else {
      const smooth = (8192 / wavelen - 1) / (4 - 1);
      t.ok(Math.abs(scaled[i]! - ((1 - smooth) * plain[i]! / 8 + smooth * plain[i]!)) < 1e-18);
      t.ok(scaled[i]! < plain[i]! && scaled[i]! > plain[i]! / 8);
      mid++;
    }
  }
  t.ok(hi > 0 && lo > 0 && mid > 0, `bands: ${hi} high, ${mid} medium, ${lo} low`);
  for (let i = 1; i < 64; i++) t.ok(scaled[i]! < scaled[i - 1]!, 'monotonic');
});
