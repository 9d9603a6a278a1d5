// helpers.ts — shared bits of the quantizer tests: stories260K, calibration
// text and engine logits.
import { readFileSync } from 'node:fs';
import { loadModel, type LoadOptions } from '@shoal/engine';
import { engineGreedy, hasShared, sharedPath, storiesPath } from '@shoal/testkit';

export const STORIES = storiesPath();
export const STORIES_TXT = sharedPath('data', 'tinystories-valid-sample', 'tinystories_val.txt');
export const skipStories: string | false = hasShared('data', 'tinystories-valid-sample', 'tinystories_val.txt')
  ? false : 'shared data/tinystories-valid-sample not found (set SHOAL_SHARED)';

/** The first n paragraphs of the TinyStories sample (calibration documents). */
export function calibDocs(n = 40): string[] {
  return readFileSync(STORIES_TXT, 'utf8').split(/\n\s*\n/).slice(0, n);
}

/** Token ids of a later part of the TinyStories sample (held out from calibration). */
export const EVAL_TOKENS = [1, 403, 407, 261, 378, 275, 260, 265, 349, 432, 271, 297, 433, 301, 356, 268, 310, 395, 286, 266, 302, 289, 370, 291, 270, 476, 267, 318, 280, 260, 485, 346];

/** All-position logits of `tokens` from the engine (prefill path); opts: e.g. precision 'exact' with an f32 KV cache. */
export async function engineLogits(dir: string, tokens: number[] = EVAL_TOKENS, opts: LoadOptions = {}): Promise<Float32Array> {
  const m = await loadModel(dir, { threads: 1, ...opts });
  try {
    const s = m.createSession({ contextSize: 64 });
    try {
      return await s.eval(tokens, { allLogits: true });
    } finally {
      s.dispose();
    }
  } finally {
    m.dispose();
  }
}

export { maxAbs, maxAbsDiff, rand } from '@shoal/testkit';

/** The engine's greedy tokens on the model at dir in precision exact with an f32 KV cache (for the float64 comparisons). */
export async function exactGreedy(dir: string, prompt: readonly number[], steps: number, contextSize = 64): Promise<number[]> {
  const m = await loadModel(dir, { threads: 1, precision: 'exact', kvCache: 'f32', tokenizer: false });
  try {
    return await engineGreedy(m, prompt, steps, contextSize);
  } finally {
    m.dispose();
  }
}
