// shoal pull against a loopback HTTP server that answers the Hub's API shapes
// (GET /api/models/<repo>/revision/<rev>, GET /api/models/<repo>/tree/<commit>?recursive&expand
// with a Link header for the next page, GET /<repo>/resolve/<commit>/<path> with Range),
// with faults injected: a connection cut mid-file, a corrupted body, a gated repository.
// No test touches the internet.
import t from 'tap';
import { createHash } from 'node:crypto';
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { fnmatch, pullModel } from '../../src/hub/pull.js';
import { cachedSnapshot, resolveModelArg } from '@shoal/common';
import { CLI_MAIN } from '@shoal/testkit';

const run = promisify(execFile);
const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-pull-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const gitSha1 = (b: Buffer) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');

interface RepoFile { path: string; data: Buffer; lfs: boolean }
interface Repo { commits: Record<string, RepoFile[]>; refs: Record<string, string>; gated?: boolean }

const C1 = 'a'.repeat(39) + '1';
const C2 = 'b'.repeat(39) + '2';
const big = Buffer.alloc(300_000);
for (let i = 0; i < big.length; i++) big[i] = (i * 2654435761) >>> 24;
const big2 = Buffer.from(big.map((v) => v ^ 0x5a));
const files1: RepoFile[] = [
  { path: 'config.json', data: Buffer.from(JSON.stringify({
    architectures: ['Qwen3ForCausalLM'],
    quantization_config: { quant_method: 'compressed-tensors', format: 'pack-quantized', config_groups: { group_0: { targets: ['Linear'], weights: { num_bits: 4, group_size: 128, strategy: 'group', symmetric: true } } }, ignore: ['lm_head'] },
  }) + '\n'), lfs: false },
  { path: 'model.safetensors', data: big, lfs: true },
  { path: 'tokenizer.json', data: Buffer.from('{"model": {}}\n'), lfs: false },
  { path: 'original/consolidated.bin', data: Buffer.alloc(5000, 7), lfs: true },
];
const files2: RepoFile[] = [files1[0]!, { path: 'model.safetensors', data: big2, lfs: true }];
const REPOS: Record<string, Repo> = {
  'org/tiny': { commits: { [C1]: files1, [C2]: files2 }, refs: { main: C1, 'v2.0': C2 } },
  'org/gated': { commits: { [C1]: files1.slice(0, 1) }, refs: { main: C1 }, gated: true },
};
const TOKEN = 'hf_testtoken1234';

/** Fault injection, per test. */
const faults = {
  /** resolve requests for this path send only this many bytes, then drop the connection (count: how many times) */
  cut: null as null | { path: string; after: number; times: number },
  /** resolve requests for this path send flipped bytes (times) */
  corrupt: null as null | { path: string; times: number },
};
const log: { url: string; range: string | undefined; auth: string | undefined }[] = [];

function json(res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function repoAndRest(parts: string[]): { repo: Repo; name: string; rest: string[] } | null {
  const name = `${parts[0]}/${parts[1]}`;
  const repo = REPOS[name];
  return repo ? { repo, name, rest: parts.slice(2) } : null;
}

const server = http.createServer((req, res) => {
  const u = new URL(req.url!, 'http://x');
  log.push({ url: u.pathname, range: req.headers.range, auth: req.headers.authorization });
  const parts = u.pathname.split('/').filter(Boolean).map(decodeURIComponent);
  const api = parts[0] === 'api' && parts[1] === 'models';
  const r = repoAndRest(api ? parts.slice(2) : parts);
  if (!r) return json(res, 404, { error: 'Repository not found' });
  if (r.repo.gated && req.headers.authorization !== `Bearer ${TOKEN}`) {
    return json(res, 401, { error: `Access to model ${r.name} is restricted. You must have access to it and be authenticated to access it. Please log in.` });
  }
  const commitOf = (rev: string) => (r.repo.commits[rev] ? rev : r.repo.refs[rev]);
  if (api && r.rest[0] === 'revision') {
    const c = commitOf(r.rest[1]!);
    if (!c) return json(res, 404, { error: `Invalid rev id: ${r.rest[1]}` });
    return json(res, 200, { _id: 'x', id: r.name, sha: c, private: false, gated: r.repo.gated ? 'manual' : false, downloads: 0, likes: 0, lastModified: '2026-01-01T00:00:00.000Z', pipeline_tag: 'text-generation' });
  }
  if (api && r.rest[0] === 'tree') {
    const c = commitOf(r.rest[1]!);
    if (!c) return json(res, 404, { error: 'Invalid rev id' });
    const all = r.repo.commits[c]!.map((f) => ({
      type: 'file', path: f.path, size: f.data.length, oid: gitSha1(f.lfs ? Buffer.from(`lfs pointer ${f.path}`) : f.data),
      ...(f.lfs ? { lfs: { oid: sha256(f.data), size: f.data.length, pointerSize: 134 } } : {}),
    }));
    const dirs = [...new Set(all.map((f) => f.path.split('/').slice(0, -1).join('/')).filter(Boolean))].map((d) => ({ type: 'directory', path: d, oid: 'd'.repeat(40), size: 0 }));
    const entries = [...dirs, ...all];
    // two pages: the client must follow the Link header
    const page = Number(u.searchParams.get('cursor') ?? 0);
    const slice = entries.slice(page * 3, page * 3 + 3);
    const next: Record<string, string> = (page + 1) * 3 < entries.length ? { link: `<http://127.0.0.1:${(server.address() as AddressInfo).port}${u.pathname}?recursive=true&expand=true&cursor=${page + 1}>; rel="next"` } : {};
    return json(res, 200, slice, next);
  }
  if (!api && r.rest[0] === 'resolve') {
    const c = commitOf(r.rest[1]!);
    const fpath = r.rest.slice(2).join('/');
    const f = c ? r.repo.commits[c]!.find((x) => x.path === fpath) : undefined;
    if (!f) return json(res, 404, { error: 'Entry not found' });
    let data = f.data;
    if (faults.corrupt && faults.corrupt.path === fpath && faults.corrupt.times > 0) {
      faults.corrupt.times--;
      data = Buffer.from(data);
      data[data.length >> 1] ^= 0xff;
    }
    let start = 0;
    const m = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    if (m) start = Number(m[1]);
    if (start >= data.length && m) { res.writeHead(416); return res.end(); }
    const body = data.subarray(start);
    res.writeHead(m ? 206 : 200, { 'content-length': String(body.length), ...(m ? { 'content-range': `bytes ${start}-${data.length - 1}/${data.length}` } : {}), 'accept-ranges': 'bytes' });
    if (faults.cut && faults.cut.path === fpath && faults.cut.times > 0) {
      faults.cut.times--;
      res.write(body.subarray(0, faults.cut.after));
      setTimeout(() => res.destroy(), 20); // drop mid-body
      return;
    }
    return res.end(body);
  }
  return json(res, 404, { error: 'not found' });
});

let endpoint = '';
t.before(async () => {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
t.teardown(() => server.close());

function cache(name: string): string {
  return path.join(root, name);
}
const env = (extra: Record<string, string> = {}) => ({ HF_ENDPOINT: endpoint, ...extra } as NodeJS.ProcessEnv);

t.test('fnmatch as huggingface_hub uses it', async (t) => {
  t.ok(fnmatch('*.json', 'config.json'));
  t.ok(fnmatch('*.bin', 'original/consolidated.bin'), '* crosses /');
  t.notOk(fnmatch('*.json', 'model.safetensors'));
  t.ok(fnmatch('model-0000[1-2]-of-*.safetensors', 'model-00002-of-00003.safetensors'));
  t.ok(fnmatch('original/*', 'original/params.json'));
});

t.test('fresh pull into the Hugging Face cache layout, every file hash-checked', async (t) => {
  const dir = cache('fresh');
  log.length = 0;
  const seen: number[] = [];
  const r = await pullModel({ spec: 'org/tiny', cacheDir: dir, env: env(), jobs: 3, onProgress: (p) => seen.push(p.bytesDone) });
  const repoDir = path.join(dir, 'models--org--tiny');
  t.equal(r.commit, C1);
  t.equal(r.snapshot, path.join(repoDir, 'snapshots', C1));
  t.equal(readFileSync(path.join(repoDir, 'refs', 'main'), 'utf8'), C1, 'refs/main names the commit');
  for (const f of files1) {
    const p = path.join(r.snapshot, f.path);
    t.ok(lstatSync(p).isSymbolicLink(), `${f.path} is a symlink`);
    const target = path.resolve(path.dirname(p), readlinkSync(p));
    t.equal(path.dirname(target), path.join(repoDir, 'blobs'), `${f.path} points into blobs/`);
    t.equal(path.basename(target), f.lfs ? sha256(f.data) : gitSha1(f.data), `${f.path}: blob named by its ${f.lfs ? 'sha256' : 'git oid'}`);
    t.same(readFileSync(p), f.data, `${f.path}: content`);
  }
  t.same(r.files.map((f) => f.status), ['downloaded', 'downloaded', 'downloaded', 'downloaded']);
  t.equal(r.bytesDownloaded, files1.reduce((a, f) => a + f.data.length, 0));
  t.equal(seen.at(-1), r.bytesDownloaded, 'progress reaches the total');
  t.notOk(readdirSync(path.join(repoDir, 'blobs')).some((n) => n.endsWith('.incomplete')), 'no partial files left');
  t.ok(log.some((l) => l.url.includes('/tree/') && l.url.length > 0) && log.filter((l) => l.url.includes('/tree/')).length >= 2, 'followed the Link header to the second page');
  // the cache resolves org/name for --model
  t.equal(resolveModelArg('org/tiny', { cacheDir: dir }), r.snapshot);
  t.equal(cachedSnapshot(dir, { repo: 'org/tiny', revision: C1 }), r.snapshot, 'by commit');
  // a second pull downloads nothing
  log.length = 0;
  const again = await pullModel({ spec: 'org/tiny', cacheDir: dir, env: env() });
  t.same(again.files.map((f) => f.status), ['cached', 'cached', 'cached', 'cached']);
  t.equal(log.filter((l) => l.url.includes('/resolve/')).length, 0, 'no file requests');
});

t.test('a pull cut mid-file resumes with Range, within the run and in the next run', async (t) => {
  const dir = cache('cut');
  // within a run: the first response stops after 100,000 bytes, the retry asks for the rest
  faults.cut = { path: 'model.safetensors', after: 100_000, times: 1 };
  log.length = 0;
  const r = await pullModel({ spec: 'org/tiny', cacheDir: dir, env: env(), include: ['model.safetensors'] });
  t.same(readFileSync(path.join(r.snapshot, 'model.safetensors')), big);
  const ranges = log.filter((l) => l.url.endsWith('/model.safetensors')).map((l) => l.range);
  t.same(ranges, [undefined, 'bytes=100000-'], 'second request resumes at the cut');
  // across runs: every attempt is cut, the run fails and keeps the partial file
  const dir2 = cache('cut2');
  faults.cut = { path: 'model.safetensors', after: 120_000, times: 4 };
  await t.rejects(pullModel({ spec: 'org/tiny', cacheDir: dir2, env: env(), include: ['model.safetensors'], retries: 0 }),
    { code: 'SHOAL_ERR_HUB', message: /connection dropped 1 times \(120000 of 300000 bytes kept in the cache\); run shoal pull again to resume/ });
  const partial = path.join(dir2, 'models--org--tiny', 'blobs', `${sha256(big)}.incomplete`);
  t.equal(statSync(partial).size, 120_000, 'partial file kept');
  faults.cut = null;
  log.length = 0;
  const r2 = await pullModel({ spec: 'org/tiny', cacheDir: dir2, env: env(), include: ['model.safetensors'] });
  t.same(r2.files.map((f) => f.status), ['resumed']);
  t.equal(r2.bytesDownloaded, 180_000, 'only the rest was downloaded');
  t.same(log.filter((l) => l.url.endsWith('/model.safetensors')).map((l) => l.range), ['bytes=120000-']);
  t.same(readFileSync(path.join(r2.snapshot, 'model.safetensors')), big);
});

t.test('revision pin: a tag and a commit', async (t) => {
  const dir = cache('pin');
  const r = await pullModel({ spec: 'org/tiny@v2.0', cacheDir: dir, env: env() });
  t.equal(r.commit, C2);
  t.equal(readFileSync(path.join(dir, 'models--org--tiny', 'refs', 'v2.0'), 'utf8'), C2);
  t.same(readFileSync(path.join(r.snapshot, 'model.safetensors')), big2);
  t.notOk(existsSync(path.join(dir, 'models--org--tiny', 'refs', 'main')), 'main is not touched');
  const c = await pullModel({ spec: `org/tiny@${C1}`, cacheDir: dir, env: env(), exclude: ['original/*', '*.safetensors'] });
  t.equal(c.commit, C1);
  t.same(c.files.map((f) => f.path), ['config.json', 'tokenizer.json'], '--exclude');
  t.equal(resolveModelArg('org/tiny@v2.0', { cacheDir: dir }), r.snapshot);
  t.equal(resolveModelArg(`org/tiny@${C1}`, { cacheDir: dir }), c.snapshot);
  await t.rejects(pullModel({ spec: 'org/tiny@nope', cacheDir: dir, env: env() }), { code: 'SHOAL_ERR_HUB_NOT_FOUND' });
  await t.rejects(pullModel({ spec: 'org/missing', cacheDir: dir, env: env() }), { code: 'SHOAL_ERR_HUB_NOT_FOUND', message: /org\/missing@main: not found on the Hub/ });
});

t.test('a corrupted file is downloaded again once, then a clear error', async (t) => {
  const dir = cache('corrupt');
  faults.corrupt = { path: 'model.safetensors', times: 1 };
  log.length = 0;
  const r = await pullModel({ spec: 'org/tiny', cacheDir: dir, env: env(), include: ['model.safetensors'] });
  t.same(readFileSync(path.join(r.snapshot, 'model.safetensors')), big, 'second download is the right one');
  t.equal(log.filter((l) => l.url.endsWith('/model.safetensors')).length, 2);
  const dir2 = cache('corrupt2');
  faults.corrupt = { path: 'model.safetensors', times: 2 };
  await t.rejects(pullModel({ spec: 'org/tiny', cacheDir: dir2, env: env(), include: ['model.safetensors'] }),
    { code: 'SHOAL_ERR_HASH_MISMATCH', message: /model\.safetensors: downloaded twice, and twice its sha256 .* is not the Hub's \(/ });
  t.notOk(existsSync(path.join(dir2, 'models--org--tiny', 'blobs', sha256(big))), 'no corrupt blob in the cache');
  t.notOk(existsSync(path.join(dir2, 'models--org--tiny', 'snapshots', C1, 'model.safetensors')), 'no link to it');
  // a small (git) file is checked against its git blob sha1
  faults.corrupt = { path: 'config.json', times: 2 };
  await t.rejects(pullModel({ spec: 'org/tiny', cacheDir: dir2, env: env(), include: ['config.json'] }), { code: 'SHOAL_ERR_HASH_MISMATCH', message: /git sha1/ });
  faults.corrupt = null;
});

t.test('a gated model: 401 without a token says to set HF_TOKEN; with HF_TOKEN it downloads', async (t) => {
  const dir = cache('gated');
  await t.rejects(pullModel({ spec: 'org/gated', cacheDir: dir, env: env() }), { code: 'SHOAL_ERR_HUB_AUTH', message: /gated or private\. Set HF_TOKEN/ });
  log.length = 0;
  const r = await pullModel({ spec: 'org/gated', cacheDir: dir, env: env({ HF_TOKEN: TOKEN }) });
  t.same(readFileSync(path.join(r.snapshot, 'config.json')), files1[0]!.data);
  t.ok(log.every((l) => l.auth === `Bearer ${TOKEN}`), 'every request carries the token');
  await t.rejects(pullModel({ spec: 'org/gated', cacheDir: cache('gated2'), env: env({ HF_TOKEN: 'hf_wrong' }) }), { code: 'SHOAL_ERR_HUB_AUTH', message: /HF_TOKEN was sent but has no access/ });
});

t.test('shoal pull on the command line; --model org/name resolves from the cache', async (t) => {
  const dir = cache('cli');
  const e = { ...process.env, HF_ENDPOINT: endpoint, HF_HUB_CACHE: dir };
  const { stdout } = await run(process.execPath, [CLI_MAIN, 'pull', 'org/tiny', '--exclude', 'original/*'], { env: e });
  t.match(stdout, /org\/tiny@main \(commit a{12}\): 3 files, 3 downloaded, 0 resumed, 0 already cached/);
  t.match(stdout, new RegExp(`snapshots/${C1}`));
  const j = JSON.parse((await run(process.execPath, [CLI_MAIN, 'pull', 'org/tiny', '--exclude', 'original/*', '--json'], { env: e })).stdout) as { files: { status: string }[] };
  t.same(j.files.map((f) => f.status), ['cached', 'cached', 'cached']);
  // pull → package: shoal package takes the repo name; the package holds the files, not the links
  const keys = path.join(root, 'keys');
  await run(process.execPath, [CLI_MAIN, 'keygen', '--out', keys], { env: e });
  const pkg = path.join(root, 'pkg');
  await run(process.execPath, [CLI_MAIN, 'package', '--model', 'org/tiny', '--name', 'tiny', '--version', '1', '--key', path.join(keys, 'fleet.key'), '--out', pkg], { env: e });
  const manifest = JSON.parse(readFileSync(path.join(pkg, 'manifest.json'), 'utf8')) as { architecture: string; quantization: string; files: { path: string; sha256: string }[] };
  t.equal(manifest.architecture, 'Qwen3ForCausalLM');
  t.equal(manifest.quantization, 'ct-w4g128', 'compressed-tensors named as the engine names it');
  t.same(manifest.files.map((f) => f.path).sort(), ['config.json', 'model.safetensors', 'tokenizer.json']);
  t.equal(manifest.files.find((f) => f.path === 'model.safetensors')!.sha256, sha256(big));
  t.notOk(lstatSync(path.join(pkg, 'model.safetensors')).isSymbolicLink(), 'a real file in the package');
  // a repo name that is not in the cache: the error says what to run
  const err = await run(process.execPath, [CLI_MAIN, 'run', '-m', 'org/other', '-p', 'x'], { env: e }).catch((x: { stderr: string }) => x);
  t.match((err as { stderr: string }).stderr, /org\/other is not a directory and not in the Hugging Face cache .*; download it with: shoal pull org\/other/);
});
