// hf-cache.ts — the Hugging Face cache layout, so `--model org/name[@revision]` finds
// what `shoal pull` (or Transformers / huggingface-cli) downloaded, one shared copy:
//   <cache>/models--<org>--<name>/blobs/<etag>                 file contents
//   <cache>/models--<org>--<name>/snapshots/<commit>/<path>    symlinks into blobs/
//   <cache>/models--<org>--<name>/refs/<revision>              the commit a branch/tag named
// <cache> is $HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
// else ~/.cache/huggingface/hub (huggingface_hub's constants.py order).
import { existsSync, readFileSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ShoalError } from './errors.js';

export function hfHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return path.resolve(env.HF_HUB_CACHE);
  if (env.HF_HOME) return path.resolve(env.HF_HOME, 'hub');
  const xdg = env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.resolve(xdg, 'huggingface', 'hub');
}

export interface RepoSpec {
  /** "org/name" */
  repo: string;
  /** branch, tag or 40-hex commit; null = main */
  revision: string | null;
}

const PART = /^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$/;
const REV = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}$/;

/** "org/name" or "org/name@revision" → RepoSpec; null when s is not of that form. */
export function parseRepoSpec(s: string): RepoSpec | null {
  const at = s.indexOf('@');
  const repo = at < 0 ? s : s.slice(0, at);
  const revision = at < 0 ? null : s.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => PART.test(p) && !p.includes('..'))) return null;
  if (revision !== null && (!REV.test(revision) || revision.includes('..') || revision.endsWith('/'))) return null;
  return { repo, revision };
}

export function repoFolder(cacheDir: string, repo: string): string {
  const [org, name] = repo.split('/') as [string, string];
  return path.join(cacheDir, `models--${org}--${name}`);
}

export const COMMIT_HASH = /^[0-9a-f]{40}$/;

/** The snapshot folder of spec in the cache, or null when it is not there. */
export function cachedSnapshot(cacheDir: string, spec: RepoSpec): string | null {
  const root = repoFolder(cacheDir, spec.repo);
  const rev = spec.revision ?? 'main';
  let commit = rev;
  if (!COMMIT_HASH.test(rev)) {
    const ref = path.join(root, 'refs', rev);
    if (!existsSync(ref)) return null;
    commit = readFileSync(ref, 'utf8').trim();
    if (!COMMIT_HASH.test(commit)) return null;
  }
  const snap = path.join(root, 'snapshots', commit);
  return existsSync(snap) && statSync(snap).isDirectory() ? snap : null;
}

/**
 * A `--model` argument: an existing path, or anything that is not of the form
 * "org/name[@revision]", as it is (the command reports a missing folder its own way);
 * otherwise the snapshot from the Hugging Face cache. Throws ShoalError
 * SHOAL_ERR_IO saying what to run when the repository is not in the cache.
 */
export function resolveModelArg(arg: string, opts: { cacheDir?: string; env?: NodeJS.ProcessEnv } = {}): string {
  if (existsSync(arg)) return arg;
  const spec = parseRepoSpec(arg);
  if (!spec) return arg;
  const cacheDir = opts.cacheDir ?? hfHubCacheDir(opts.env);
  const snap = cachedSnapshot(cacheDir, spec);
  if (!snap) {
    throw new ShoalError('SHOAL_ERR_IO', `${arg} is not a directory and not in the Hugging Face cache ${cacheDir}; `
      + `download it with: shoal pull ${arg}`);
  }
  return snap;
}
