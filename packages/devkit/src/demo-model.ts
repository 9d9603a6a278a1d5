// demo-model.ts — the model `shoal up` rolls out by default: the pretrained
// stories260K shipped in the repository (models/stories260K), quantized at start
// to INT4 with AWQ, the format the fleet runs.
//
// AWQ needs calibration text. The demo uses none from outside the repository: the
// F32 model writes it itself (stories sampled at temperature 1 with fixed seeds),
// the data-free calibration of LLM-QAT (Liu et al., 2023). The run is deterministic
// for a given engine build: same seeds, same stories, same scales.
import fs from 'node:fs';
import path from 'node:path';
import { shippedModelDir, ShoalError } from '@shoal/common';

/** AWQ settings for stories260K: in_features are 64 and 172, so g32 with the FFN padded to 192 quantizes all 35 linears. */
export const DEMO_QUANT = { bits: 4, groupSize: 32, samples: 8, seqlen: 128 } as const;

export interface DemoModel {
  dir: string;
  /** package name */
  name: string;
  source: string;
  calibrationTokens: number;
  calibrationSeconds: number;
  quantizeSeconds: number;
}

/** Stories the model writes from BOS alone, one per seed, until it starts the next story (BOS) or `maxTokens`. */
export async function sampleStories(modelDir: string, seeds: number[], maxTokens = 192): Promise<string[]> {
  const { loadModel } = await import('@shoal/engine');
  const model = await loadModel(modelDir, { threads: 1 });
  try {
    const stories: string[] = [];
    for (const seed of seeds) {
      const s = model.createSession({ contextSize: maxTokens + 8 });
      try {
        let text = '';
        // prompt '' = BOS only; stories260K separates stories with BOS (id 1) and has no EOS
        const gen = s.generate('', { temperature: 1, topP: 0.9, seed, maxTokens, stopTokenIds: [1] });
        for await (const c of gen) text += c.text;
        stories.push(text.trim());
      } finally {
        s.dispose();
      }
    }
    return stories;
  } finally {
    model.dispose();
  }
}

/** Quantizes the shipped stories260K to INT4 AWQ g32 in `<dir>/stories260K-awq-w4g32` (replaced on each run). */
export async function prepareDemoModel(dir: string, log: (s: string) => void): Promise<DemoModel> {
  const source = shippedModelDir;
  if (!fs.existsSync(path.join(source, 'model.safetensors'))) {
    throw new ShoalError('MODEL_DIR_INVALID', `the shipped model is missing (${source}/model.safetensors); restore it with \`git checkout -- models/stories260K\`, or pass --model DIR`);
  }
  let modelkit: typeof import('@shoal/modelkit');
  try {
    modelkit = await import('@shoal/modelkit');
  } catch (e) {
    throw new ShoalError('MODEL_DIR_INVALID', `cannot load the quantizer (${(e as Error).message}); run \`make\` first, or pass --model DIR`);
  }
  const { bits, groupSize, samples, seqlen } = DEMO_QUANT;
  const t0 = performance.now();
  // about 100 tokens per story: 16 stories give the 8 × 128 calibration tokens with room to spare
  const docs = await sampleStories(source, Array.from({ length: 16 }, (_, i) => i + 1));
  const calibrationSeconds = (performance.now() - t0) / 1000;
  const out = path.join(dir, `stories260K-awq-w${bits}g${groupSize}`);
  const r = await modelkit.quantizeAwqModel({
    model: source, out, method: 'awq', bits, groupSize, padFfn: true, dtype: 'f16', force: true,
    calibDocs: docs, samples, seqlen,
  });
  log(`model     stories260K (models/stories260K, pretrained, F32) → INT4 AWQ w${bits} g${groupSize}: ${r.quantizedLinears} linears, `
    + `calibration ${samples} × ${seqlen} tokens of stories the model wrote itself (${calibrationSeconds.toFixed(1)} s), quantized in ${r.seconds.toFixed(1)} s`);
  return { dir: out, name: 'stories260K', source, calibrationTokens: samples * seqlen, calibrationSeconds, quantizeSeconds: r.seconds };
}
