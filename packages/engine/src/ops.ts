// ops.ts — the addon's backend ops (matmul, attention, fake-quant, clip deltas on a
// worker thread) for the quantizer, which must not load the addon itself.
import { addon } from './addon.js';
import type { AddonOps } from './addon-types.js';

let opsCache: AddonOps | null = null;

export function backendOps(): AddonOps {
  if (!opsCache) opsCache = addon().ops;
  return opsCache;
}
export type { GptqNativeOptions, GptqNativeResult } from './addon-types.js';
