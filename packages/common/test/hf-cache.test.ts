import t from 'tap';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { cachedSnapshot, hfHubCacheDir, parseRepoSpec, repoFolder, resolveModelArg } from '../src/hf-cache.js';
import { ShoalError } from '../src/errors.js';

t.test('hfHubCacheDir follows huggingface_hub order', async (t) => {
  t.equal(hfHubCacheDir({ HF_HUB_CACHE: '/a', HF_HOME: '/b' }), '/a');
  t.equal(hfHubCacheDir({ HF_HOME: '/b', XDG_CACHE_HOME: '/c' }), '/b/hub');
  t.equal(hfHubCacheDir({ XDG_CACHE_HOME: '/c' }), '/c/huggingface/hub');
});

t.test('parseRepoSpec accepts org/name[@rev] and refuses paths that escape', async (t) => {
  t.same(parseRepoSpec('TinyLlama/TinyLlama-1.1B'), { repo: 'TinyLlama/TinyLlama-1.1B', revision: null });
  t.same(parseRepoSpec('a/b@refs/pr/1'), { repo: 'a/b', revision: 'refs/pr/1' });
  for (const bad of ['a', 'a/b/c', '../b', 'a/..', 'a/b@', 'a/b@../x', 'a/b@x/', '/abs/path', 'a/b@x y']) t.equal(parseRepoSpec(bad), null, bad);
});

t.test('resolveModelArg: a path as is, a cached snapshot by ref or commit, a ShoalError naming `shoal pull`', async (t) => {
  const cache = mkdtempSync(path.join(os.tmpdir(), 'shoal-hfc-'));
  t.teardown(() => rmSync(cache, { recursive: true, force: true }));
  const commit = 'a'.repeat(40);
  const root = repoFolder(cache, 'org/model');
  mkdirSync(path.join(root, 'snapshots', commit), { recursive: true });
  mkdirSync(path.join(root, 'refs'), { recursive: true });
  writeFileSync(path.join(root, 'refs', 'main'), commit + '\n');
  const snap = path.join(root, 'snapshots', commit);
  t.equal(resolveModelArg(cache, { cacheDir: cache }), cache, 'an existing path is used as it is');
  t.equal(resolveModelArg('org/model', { cacheDir: cache }), snap);
  t.equal(resolveModelArg(`org/model@${commit}`, { cacheDir: cache }), snap);
  t.equal(cachedSnapshot(cache, { repo: 'org/model', revision: 'v2' }), null, 'unknown ref');
  writeFileSync(path.join(root, 'refs', 'bad'), 'not-a-commit');
  t.equal(cachedSnapshot(cache, { repo: 'org/model', revision: 'bad' }), null, 'a ref that names no commit');
  try {
    resolveModelArg('org/other', { cacheDir: cache });
    t.fail('should throw');
  } catch (e) {
    t.ok(e instanceof ShoalError);
    t.equal((e as ShoalError).code, 'SHOAL_ERR_IO');
    t.match((e as Error).message, /shoal pull org\/other/);
  }
});
