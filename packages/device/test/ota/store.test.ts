// Downloader (Range resume after network drops, hash checks), durable outbox,
// atomic writes and the model store's GC rules.
import t from 'tap';
import { promises as fsp, existsSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { downloadFile } from '../../src/ota/download.js';
import { Outbox } from '../../src/mqtt/outbox.js';
import { writeFileAtomic } from '@shoal/common';
import { ModelStore } from '../../src/ota/store.js';
import { startPackageServer, tmpDir } from '../helpers.js';

t.test('download resumes after network drops without re-fetching bytes on disk', async (t) => {
  const root = tmpDir();
  const data = randomBytes(300_000);
  mkdirSync(path.join(root, 'm/1'), { recursive: true });
  writeFileSync(path.join(root, 'm/1/blob.bin'), data);
  const srv = await startPackageServer(root);
  t.teardown(() => srv.close());
  srv.dropAfter = 70_000; // every response is cut after 70 kB
  const dest = path.join(tmpDir(), 'blob.bin');
  const url = `http://127.0.0.1:${srv.port}/m/1/blob.bin`;
  let resumedBytes = 0;
  await downloadFile(url, dest, { size: data.length, sha256: createHash('sha256').update(data).digest('hex') }, { retries: 3, idleTimeoutMs: 5000, onBytes: (n, resumed) => { if (resumed) resumedBytes += n; } });
  t.same(await fsp.readFile(dest), data);
  t.equal(srv.totalServed(), data.length, 'every byte fetched exactly once');
  t.ok(srv.requests.length >= 5, `${srv.requests.length} requests`);
  t.same(srv.requests.slice(1).map((r) => r.status), srv.requests.slice(1).map(() => 206), 'resumed with Range');
  t.equal(resumedBytes, 0);

  // a partial file from an earlier run: hashed, not re-fetched
  srv.dropAfter = 0;
  const dest2 = path.join(tmpDir(), 'blob.bin');
  await fsp.writeFile(dest2, data.subarray(0, 123_456));
  const before = srv.totalServed();
  await downloadFile(url, dest2, { size: data.length, sha256: createHash('sha256').update(data).digest('hex') }, { retries: 1, idleTimeoutMs: 5000, onBytes: (n, resumed) => { if (resumed) resumedBytes += n; } });
  t.equal(srv.totalServed() - before, data.length - 123_456);
  t.equal(resumedBytes, 123_456);
  t.equal(srv.requests[srv.requests.length - 1]!.range, 'bytes=123456-');
});

t.test('hash mismatch deletes the file; 404 is not retried', async (t) => {
  const root = tmpDir();
  mkdirSync(path.join(root, 'm/1'), { recursive: true });
  writeFileSync(path.join(root, 'm/1/f'), 'hello world');
  const srv = await startPackageServer(root);
  t.teardown(() => srv.close());
  const dest = path.join(tmpDir(), 'f');
  await t.rejects(downloadFile(`http://127.0.0.1:${srv.port}/m/1/f`, dest, { size: 11, sha256: 'a'.repeat(64) }, { retries: 1, idleTimeoutMs: 2000 }), { code: 'FILE_HASH_MISMATCH', message: /sha256 of .* is / });
  t.notOk(existsSync(dest));
  await t.rejects(downloadFile(`http://127.0.0.1:${srv.port}/m/1/f`, dest, { size: 5, sha256: 'a'.repeat(64) }, { retries: 1, idleTimeoutMs: 2000 }), { code: 'FILE_SIZE_MISMATCH' });
  const n = srv.requests.length;
  await t.rejects(downloadFile(`http://127.0.0.1:${srv.port}/nope`, dest, { size: 5, sha256: 'a'.repeat(64) }, { retries: 3, idleTimeoutMs: 2000 }), { code: 'DOWNLOAD_FAILED', message: /HTTP 404/ });
  t.equal(srv.requests.length, n + 1);
});

t.test('outbox: durable across reopen, bounded, ack removes', async (t) => {
  const file = path.join(tmpDir(), 'outbox.sqlite');
  const ob = new Outbox(file, 10);
  for (let i = 0; i < 12; i++) ob.append('topic', `{"n":${i}}`);
  t.equal(ob.size(), 10);
  t.equal(ob.dropped, 2);
  const rows = ob.pending();
  t.equal(rows[0]!.payload, '{"n":2}', 'oldest dropped first');
  ob.ack(rows[0]!.seq);
  ob.close();
  const again = new Outbox(file, 10);
  t.equal(again.size(), 9, 'survives reopen');
  t.equal(again.dropped, 2);
  t.equal(again.pending()[0]!.payload, '{"n":3}');
  again.close();
});

t.test('atomic write leaves no temp files; store GC keeps active and previous', async (t) => {
  const dir = tmpDir();
  await writeFileAtomic(path.join(dir, 'a.json'), '{"x":1}');
  await writeFileAtomic(path.join(dir, 'a.json'), '{"x":2}');
  t.same(readdirSync(dir), ['a.json']);
  t.equal(await fsp.readFile(path.join(dir, 'a.json'), 'utf8'), '{"x":2}');
  const store = new ModelStore(tmpDir());
  await store.init();
  for (const v of ['1', '2', '3', '4', '5']) {
    const d = store.versionDir({ name: 'm', version: v });
    mkdirSync(d, { recursive: true });
    writeFileSync(path.join(d, 'manifest.json'), '{}');
    await new Promise((r) => setTimeout(r, 15));
  }
  await store.setActive({ name: 'm', version: '2' }, { name: 'm', version: '1' });
  const removed = await store.gc(3);
  t.same(removed.map((r) => r.version), ['3', '4'], 'oldest non-active/non-previous versions removed');
  t.same((await store.list()).map((e) => `${e.version}${e.active ? '*' : ''}${e.previous ? '^' : ''}`), ['1^', '2*', '5']);
  await t.rejects(store.remove({ name: 'm', version: '2' }), { code: 'VERSION_ACTIVE' });
  await t.rejects(store.remove({ name: 'm', version: '9' }), { code: 'NOT_FOUND' });
  t.throws(() => store.versionDir({ name: '..', version: '1' }), { code: 'INVALID_ARGS' });
});
