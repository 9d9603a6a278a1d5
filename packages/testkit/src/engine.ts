// engine.ts — loads the engine for tests that compare it with references:
// skips with a clear message when the addon is not built, and lists the CPU
// kernel sets this machine runs.
import { existsSync } from 'node:fs';
import path from 'node:path';
import type { Isa, LoadOptions, Model } from '@shoal/engine';
import { repoRoot } from './shared.js';

export type Engine = { loadModel(dir: string, o?: LoadOptions): Promise<Model>; cpuIsas?: () => string[] };

const addonPath = path.join(repoRoot, 'native', 'build', 'Release', 'shoal.node');
let loaded: Engine | null = null;
let skip: string | false = false;
if (!existsSync(addonPath)) skip = 'native addon not built (run `make native`)';
else {
  try {
    loaded = (await import('@shoal/engine')) as unknown as Engine;
  } catch (err) {
    skip = `engine cannot be loaded: ${(err as Error).message}`;
  }
}

export const engine: Engine | null = loaded;
/** tap skip message when the engine is unavailable, else false. */
export const engineSkip: string | false = skip;
const KNOWN_ISAS: readonly Isa[] = ['scalar', 'avx2', 'avx512', 'neon', 'neon-dotprod'];
/** Every CPU kernel set compiled in and supported here (['auto'] without the engine). */
export const isas: Isa[] = engine?.cpuIsas ? KNOWN_ISAS.filter((i) => engine!.cpuIsas!().includes(i)) : ['auto'];
