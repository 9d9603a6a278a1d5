// The one atomic write every package uses: the result, its mode, no temporary left
// behind on success or failure, and — with a real process killed mid-write — never a
// torn file.
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { tempSibling, writeFileAtomic, writeFileAtomicSync, writeJsonAtomic } from '../src/atomic.js';

function tmpDir(t: Test): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'shoal-atomic-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}

const writers = [
  ['async', writeFileAtomic],
  ['sync', async (f: string, d: string | Uint8Array, o?: { mode?: number }) => writeFileAtomicSync(f, d, o)],
] as const;

for (const [name, write] of writers) {
  t.test(`${name}: writes the bytes, creates the folder, replaces the old file, leaves no temporary`, async (t) => {
    const dir = tmpDir(t);
    const file = path.join(dir, 'a', 'b', 'state.json');
    await write(file, 'first');
    t.equal(readFileSync(file, 'utf8'), 'first');
    const bytes = new Uint8Array(3 * 1024 * 1024).map((_, i) => (i * 31) & 0xff);
    await write(file, bytes);
    t.same(readFileSync(file), Buffer.from(bytes), 'a 3 MiB Uint8Array replaces the text');
    t.same(readdirSync(path.dirname(file)), ['state.json'], 'only the target is in the folder');
  });

  t.test(`${name}: mode is applied whatever the umask`, async (t) => {
    const dir = tmpDir(t);
    const old = process.umask(0o077);
    try {
      await write(path.join(dir, 'key'), 'secret', { mode: 0o600 });
      await write(path.join(dir, 'pub'), 'public');
    } finally { process.umask(old); }
    t.equal(statSync(path.join(dir, 'key')).mode & 0o777, 0o600);
    t.equal(statSync(path.join(dir, 'pub')).mode & 0o777, 0o644, 'default 0o644');
  });

  t.test(`${name}: a failed rename keeps the target and removes the temporary`, async (t) => {
    const dir = tmpDir(t);
    const target = path.join(dir, 'occupied');
    mkdirSync(target);
    writeFileSync(path.join(target, 'inside'), 'keep');
    await t.rejects(write(target, 'new'), { code: 'EISDIR' });
    t.equal(readFileSync(path.join(target, 'inside'), 'utf8'), 'keep');
    t.same(readdirSync(dir), ['occupied'], 'no temporary left');
  });
}

t.test('writeJsonAtomic writes indented JSON with a final newline', async (t) => {
  const file = path.join(tmpDir(t), 'x.json');
  await writeJsonAtomic(file, { a: [1, 2] });
  t.equal(readFileSync(file, 'utf8'), '{\n  "a": [\n    1,\n    2\n  ]\n}\n');
});

t.test('tempSibling is in the same folder, hidden and unique', async (t) => {
  const a = tempSibling('/x/y/state.json');
  const b = tempSibling('/x/y/state.json');
  t.equal(path.dirname(a), '/x/y');
  t.match(path.basename(a), /^\.state\.json\.tmp-\d+-[0-9a-f]{8}$/);
  t.not(a, b);
});

// A child rewrites the file as fast as it can (each version a different length and fill)
// and is killed with SIGKILL; whatever is on disk must be one complete version.
t.test('kill -9 during a stream of writes never leaves a torn file', async (t) => {
  const dir = tmpDir(t);
  const file = path.join(dir, 'state.bin');
  const atomic = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src', 'atomic.js');
  const script = `
    import { writeFileAtomicSync } from ${JSON.stringify(atomic)};
    for (let i = 1; ; i++) {
      const n = 65536 + (i % 7) * 40000;
      const b = Buffer.alloc(n, i & 0xff);
      b.writeUInt32LE(i, 0); b.writeUInt32LE(n, 4);
      writeFileAtomicSync(${JSON.stringify(file)}, b);
      if (i === 3) process.stdout.write('going\\n');
    }`;
  for (let round = 0; round < 5; round++) {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    await new Promise((r) => setTimeout(r, 20 + round * 15));
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    const b = readFileSync(file);
    const i = b.readUInt32LE(0);
    const n = b.readUInt32LE(4);
    t.equal(b.length, n, `round ${round}: version ${i} has its full length`);
    t.ok(b.subarray(8).every((v) => v === (i & 0xff)), `round ${round}: version ${i} is one version throughout`);
  }
  // the killed writers may leave their temporaries; the target is never one of them
  t.ok(existsSync(file));
});
