// stories260K (a real trained model) quantized by quant/gptq.ts to GPTQ
// 4-bit, 3-bit and 2-bit (w2g32, also in EfficientQAT's native layout) loads in
// the engine and evaluates; perplexities on the TinyStories sample stay in
// documented bounds (docs/lowbit.md). Skips without the addon or shared data.
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { evaluatePerplexity } from '../../src/eval/ppl.js';
import { quantizeModelGptq } from '../../src/quant/gptq.js';
import type { LoadOptions, Model } from '@shoal/engine';
import { hasShared, repoRoot, sharedPath } from '@shoal/testkit';

type Engine = { loadModel(dir: string, o?: LoadOptions): Promise<Model> };
const addonPath = path.join(repoRoot, 'native', 'build', 'Release', 'shoal.node');
let engine: Engine | null = null;
let skip: string | false = false;
if (!existsSync(addonPath)) skip = 'native addon not built (run `make native`)';
else if (!hasShared('models', 'stories260K', 'model.safetensors') || !hasShared('data', 'tinystories-valid-sample', 'tinystories_val.txt')) {
  skip = 'shared stories260K / TinyStories sample not found (set SHOAL_SHARED)';
} else engine = (await import('@shoal/engine')) as unknown as Engine;

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-lowbit-stories-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

t.test('stories260K at 4, 3 and 2 bits (GPTQ RTN): loads, evaluates, perplexity bounds', { skip }, async (t) => {
  const model = sharedPath('models', 'stories260K');
  const text = readFileSync(sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt'), 'utf8').slice(0, 40_000);
  const variants = [
    { label: 'F32', dir: model },
    { label: 'gptq w4g64', bits: 4, group: 64, layout: 'gptq' as const, fmt: 'gptq_v2' as const },
    { label: 'gptq-v1 w4g32', bits: 4, group: 32, layout: 'gptq' as const, fmt: 'gptq' as const },
    { label: 'gptq w3g32', bits: 3, group: 32, layout: 'gptq' as const, fmt: 'gptq_v2' as const },
    { label: 'gptq w2g32', bits: 2, group: 32, layout: 'gptq' as const, fmt: 'gptq_v2' as const },
    { label: 'eqat w2g32', bits: 2, group: 32, layout: 'eqat' as const, fmt: 'gptq_v2' as const },
  ];
  const ppl: Record<string, number> = {};
  for (const v of variants) {
    let dir = v.dir;
    if (!dir) {
      dir = path.join(root, v.label.replace(/\W+/g, '-'));
      const r = await quantizeModelGptq({ model, out: dir, bits: v.bits!, groupSize: v.group!, layout: v.layout!, checkpointFormat: v.fmt!, dtype: 'f32' });
      t.equal(r.quantizedLinears, 30, `${v.label}: q/k/v/o/gate/up quantized (down_proj has in_features 172, not a multiple of 32)`);
    }
    const m = await engine!.loadModel(dir, { threads: 2 });
    try {
      const ids = m.tokenizer!.encode(text, { addSpecialTokens: false });
      const r = await evaluatePerplexity(m, ids, { ctx: 512 });
      t.comment(`${v.label} (${m.info.quant}): ppl ${r.ppl.toFixed(3)} over ${r.tokens} tokens, ${r.tokensPerSecond.toFixed(0)} tok/s`);
      t.ok(Number.isFinite(r.ppl) && r.ppl > 1, `${v.label}: finite perplexity`);
      ppl[v.label] = r.ppl;
    } finally {
      m.dispose();
    }
  }
  const f = ppl.F32!;
  t.ok(f > 1 && f < 20, 'F32 is a trained model on in-domain text');
  t.ok(ppl['gptq w4g64']! / f < 1.12, '4-bit g64 within 12% of F32');
  t.ok(ppl['gptq-v1 w4g32']! / f < 1.12, '4-bit g32 (v1 zeros) within 12% of F32');
  t.ok(ppl['gptq w3g32']! / f < 1.8 && ppl['gptq w3g32']! > ppl['gptq w4g64']!, '3-bit g32 within 1.8x of F32 and worse than 4-bit');
  t.ok(ppl['gptq w2g32']! < 512 && ppl['gptq w2g32']! > ppl['gptq w3g32']!, '2-bit g32 below uniform (512) and worse than 3-bit');
  t.ok(Math.abs(ppl['eqat w2g32']! - ppl['gptq w2g32']!) < 1e-9 * ppl['gptq w2g32']!, 'EfficientQAT native and GPTQ layouts of the same codes give the same perplexity');
});
