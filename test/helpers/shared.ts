// shared.ts — locates the repository root and the shared data folder for tests.
//
// Real models and data sets live outside the repository in `<repo>/../shared`
// (override with SHOAL_SHARED). Tests that need them check hasShared(...) and
// skip with a clear message when they are absent.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

function findRepoRoot(start: string): string {
  let dir = start;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        const name = (JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name;
        if (name === 'shoal') return dir;
      } catch {
        // not our package.json; keep walking up
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the shoal repository root above ${start}`);
    dir = parent;
  }
}

/** Repository root (the folder holding shoal's package.json), from src or dist. */
export const repoRoot: string = findRepoRoot(path.dirname(fileURLToPath(import.meta.url)));

/** Shared data folder: $SHOAL_SHARED, else `<repoRoot>/../shared`. */
export const sharedDir: string = process.env.SHOAL_SHARED
  ? path.resolve(process.env.SHOAL_SHARED)
  : path.resolve(repoRoot, '../shared');

/** Absolute path of a file or folder inside the shared data folder. */
export function sharedPath(...parts: string[]): string {
  return path.join(sharedDir, ...parts);
}

/** True when the shared path exists (a model dir, a data file...). */
export function hasShared(...parts: string[]): boolean {
  return existsSync(sharedPath(...parts));
}

/** Skip message for tap's `{ skip }` option when a shared path is missing, else false. */
export function skipUnlessShared(...parts: string[]): string | false {
  return hasShared(...parts)
    ? false
    : `shared data ${path.join(...parts)} not found under ${sharedDir} (set SHOAL_SHARED)`;
}
