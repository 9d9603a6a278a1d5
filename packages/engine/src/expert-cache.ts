// expert-cache.ts — where a MoE model's repacked experts are kept between loads
// (the native repack cache, native/src/repack-cache.h). Policy lives here: the
// engine only gets a file path.
import { createHash } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ShoalError } from '@shoal/common';

/** $SHOAL_CACHE_DIR, else $XDG_CACHE_HOME/shoal, else ~/.cache/shoal. */
export function shoalCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SHOAL_CACHE_DIR) return path.resolve(env.SHOAL_CACHE_DIR);
  return path.join(env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'shoal');
}

/** The expert cache file of a model folder under the user's cache: one per folder (its absolute path). */
export function expertCachePath(modelDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const id = createHash('sha256').update(path.resolve(modelDir)).digest('hex').slice(0, 16);
  return path.join(shoalCacheDir(env), 'experts', `${path.basename(path.resolve(modelDir))}-${id}.bin`);
}

/**
 * The file path handed to the engine ('' = experts in memory). 'auto' creates the cache folder;
 * when it cannot, the experts stay in memory (the engine reports why through info.expertCache).
 */
export function resolveExpertCache(opt: string | undefined, modelDir: string): string {
  if (opt === undefined || opt === 'off') return '';
  if (typeof opt !== 'string' || opt.length === 0)
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `expertCache must be 'auto', 'off' or a file path, got '${String(opt)}'`);
  if (opt !== 'auto') return path.resolve(opt);
  const file = expertCachePath(modelDir);
  // when the folder cannot be made, the engine's own attempt fails and says why; the model still loads
  try { mkdirSync(path.dirname(file), { recursive: true }); } catch { /* reported by info.expertCache */ }
  return file;
}
