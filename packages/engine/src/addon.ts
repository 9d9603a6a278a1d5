// addon.ts — finds and loads the native addon once.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { checkoutRoot, ShoalError } from '@shoal/common';
import type { Addon } from './addon-types.js';

const repoRoot = checkoutRoot;

let cached: Addon | null = null;

function candidates(): string[] {
  return [
    process.env.SHOAL_ADDON,
    path.join(repoRoot, 'native/build/Release/shoal.node'),
    path.join(repoRoot, 'native/build/Debug/shoal.node'),
  ].filter((p): p is string => !!p);
}

/** Path of the built addon (throws a clear error when it is not built). */
export function addonPath(): string {
  const list = candidates();
  const file = list.find((p) => existsSync(p));
  if (!file)
    throw new ShoalError('SHOAL_ERR_ADDON_MISSING',
      `the native engine is not built (looked for ${list.join(', ')}); run \`make\` in the repository`);
  return file;
}

/** @internal */
export function addon(): Addon {
  if (cached) return cached;
  const file = addonPath();
  try {
    cached = createRequire(import.meta.url)(file) as Addon;
  } catch (err) {
    throw new ShoalError('SHOAL_ERR_ADDON_MISSING', `cannot load ${file}: ${(err as Error).message}; rebuild with \`make native\``, { cause: err });
  }
  return cached;
}
