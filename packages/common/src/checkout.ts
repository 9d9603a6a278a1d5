// checkout.ts — where the Shoal checkout (or install tree) is: the folder whose
// package.json is named "shoal". The addon and the shared data folder are found from it.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export function findCheckoutRoot(start: string): string {
  let dir = start;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'shoal') return dir;
      } catch {
        // not our package.json; keep walking up
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the shoal checkout (a package.json named "shoal") above ${start}`);
    dir = parent;
  }
}

/** The checkout this code runs from (from src or dist). */
export const checkoutRoot: string = findCheckoutRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Shared data folder (real models, data sets): $SHOAL_SHARED, else `<checkout>/../shared`. */
export const sharedDir: string = process.env.SHOAL_SHARED ? path.resolve(process.env.SHOAL_SHARED) : path.resolve(checkoutRoot, '../shared');

/** The pretrained stories260K shipped in the repository (models/stories260K/README.md): the demo's and the tests' real model. */
export const shippedModelDir: string = path.join(checkoutRoot, 'models', 'stories260K');
