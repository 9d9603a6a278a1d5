// shared.ts — locates the repository root, the shipped model and the shared data folder for tests.
//
// The real model the tests need, stories260K, ships in the repository
// (models/stories260K). Larger data sets (TinyStories and WikiText samples, the
// Llama-2 tokenizer) live outside it in `<repo>/../shared` (override with
// SHOAL_SHARED); tests that need them check hasShared(...) and skip with a clear
// message when they are absent.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { checkoutRoot, sharedDir, shippedModelDir } from '@shoal/common';

/** Repository root (the folder holding shoal's package.json), from src or dist. */
export const repoRoot: string = checkoutRoot;
export { sharedDir };

/** The pretrained stories260K shipped in the repository (models/stories260K). */
export const STORIES_DIR: string = shippedModelDir;

/** A file of the shipped stories260K (e.g. 'reference_greedy.json'), or its folder. */
export function storiesPath(...parts: string[]): string {
  return path.join(STORIES_DIR, ...parts);
}

/** The built `shoal` command (packages/cli). */
export const CLI_MAIN: string = path.join(repoRoot, 'packages', 'cli', 'dist', 'src', 'main.js');

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
