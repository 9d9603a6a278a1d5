// Artifact server: full GET, Range (206/416), ETag, If-None-Match, If-Range, HEAD.
import t from 'tap';
import fs from 'node:fs';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { addPackage, startBroker, startTestController, tmpDir } from '@shoal/testkit/fleet';

t.test('artifact server', async (t) => {
  const broker = await startBroker('aedes');
  const dir = tmpDir();
  const ctl = await startTestController(broker.url, dir);
  t.teardown(async () => { await ctl.close(); await broker.close(); fs.rmSync(dir, { recursive: true, force: true }); });
  const pkgDir = await addPackage(ctl, dir, 'art', '1.0');
  const file = fs.readFileSync(path.join(pkgDir, 'part-1.bin'));
  const sha = createHash('sha256').update(file).digest('hex');
  const base = `http://127.0.0.1:${ctl.api.address.port}/artifacts/art/1.0`;
  const get = (p: string, headers: Record<string, string> = {}, method = 'GET') => fetch(`${base}/${p}`, { headers, method });

  const full = await get('part-1.bin');
  t.equal(full.status, 200);
  t.equal(full.headers.get('content-length'), String(file.length));
  t.equal(full.headers.get('etag'), `"${sha}"`);
  t.equal(full.headers.get('accept-ranges'), 'bytes');
  t.ok(Buffer.from(await full.arrayBuffer()).equals(file), 'body is the file');

  const mid = await get('part-1.bin', { Range: 'bytes=100-199' });
  t.equal(mid.status, 206);
  t.equal(mid.headers.get('content-range'), `bytes 100-199/${file.length}`);
  t.equal(mid.headers.get('content-length'), '100');
  t.ok(Buffer.from(await mid.arrayBuffer()).equals(file.subarray(100, 200)));

  const open = await get('part-1.bin', { Range: 'bytes=69990-' });
  t.equal(open.status, 206);
  t.equal(open.headers.get('content-range'), `bytes 69990-69999/70000`);
  t.ok(Buffer.from(await open.arrayBuffer()).equals(file.subarray(69990)));

  const suffix = await get('part-1.bin', { Range: 'bytes=-5' });
  t.equal(suffix.status, 206);
  t.ok(Buffer.from(await suffix.arrayBuffer()).equals(file.subarray(file.length - 5)));

  const clamp = await get('part-1.bin', { Range: 'bytes=69999-80000' });
  t.equal(clamp.status, 206);
  t.equal(clamp.headers.get('content-length'), '1');
  await clamp.arrayBuffer();

  const bad = await get('part-1.bin', { Range: 'bytes=70000-' });
  t.equal(bad.status, 416);
  t.equal(bad.headers.get('content-range'), 'bytes */70000');
  t.equal(((await bad.json()) as any).error.code, 'RANGE_NOT_SATISFIABLE');

  const multi = await get('part-1.bin', { Range: 'bytes=0-1,5-6' });
  t.equal(multi.status, 200, 'multi-range is answered with the whole file');
  t.equal(Buffer.from(await multi.arrayBuffer()).length, file.length);

  const cached = await get('part-1.bin', { 'If-None-Match': `"${sha}"` });
  t.equal(cached.status, 304);
  const stale = await get('part-1.bin', { 'If-None-Match': '"other"' });
  t.equal(stale.status, 200);
  await stale.arrayBuffer();

  const ifRangeOk = await get('part-1.bin', { Range: 'bytes=0-9', 'If-Range': `"${sha}"` });
  t.equal(ifRangeOk.status, 206, 'If-Range with the current ETag resumes');
  await ifRangeOk.arrayBuffer();
  const ifRangeStale = await get('part-1.bin', { Range: 'bytes=0-9', 'If-Range': '"old-etag"' });
  t.equal(ifRangeStale.status, 200, 'If-Range with a stale ETag sends the whole file');
  t.equal(Buffer.from(await ifRangeStale.arrayBuffer()).length, file.length);

  const head = await get('part-1.bin', {}, 'HEAD');
  t.equal(head.status, 200);
  t.equal(head.headers.get('content-length'), String(file.length));

  const manifest = await get('manifest.json');
  t.equal(manifest.status, 200);
  const mbytes = Buffer.from(await manifest.arrayBuffer());
  const rec = ctl.registry.get('art', '1.0')!;
  t.equal(createHash('sha256').update(mbytes).digest('hex'), rec.manifestSha256, 'manifest sha256 = the one in desired state');
  t.equal(manifest.headers.get('etag'), `"${rec.manifestSha256}"`);

  t.equal((await get('../../../etc/passwd')).status, 404, 'no path traversal');
  t.equal((await get('not-in-manifest.bin')).status, 404);
  t.equal((await fetch(`http://127.0.0.1:${ctl.api.address.port}/artifacts/art/9.9/manifest.json`)).status, 404);
  t.equal((await get('part-1.bin', {}, 'POST')).status, 405);
  const desired = ctl.desiredFor('art', '1.0');
  t.equal(desired.manifestUrl, `${base}/manifest.json`);
});
