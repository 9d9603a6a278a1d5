// `shoal doctor` against fixture trees (Jetson Orin on JetPack 5 and 6, an unsupported
// L4T, a desktop GPU, no GPU), a fake timedatectl/chronyc, a real aedes broker and a
// closed port, a real and an unwritable store, and the command's table, JSON and exit code.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { CLI_MAIN, storiesPath } from '@shoal/testkit';
import { checkBroker, checkClock, checkCpu, checkGpu, checkMemory, checkStore, type Exec } from '../src/doctor/checks.js';
import { jetpackFor, parseNvTegraRelease } from '../src/doctor/platform.js';
import { freePort, startAedes, tmpDir } from './helpers.js';

function put(root: string, rel: string, text: string): void {
  const f = path.join(root, rel);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, text);
}

const R36 = '# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 01:49:37 UTC 2025\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n';
const R35 = '# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, DATE: Tue Aug  1 19:57:35 UTC 2023\n';
const ORIN_CPUINFO = 'processor\t: 0\nBogoMIPS\t: 62.50\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm paca pacg\nCPU implementer\t: 0x41\n';

t.test('L4T release and JetPack', async (t) => {
  t.same(parseNvTegraRelease(R36), { major: 36, revision: '4.3', release: '36.4.3', board: 'generic' });
  t.equal(jetpackFor(parseNvTegraRelease(R36)!), '6.2');
  t.equal(jetpackFor(parseNvTegraRelease(R35)!), '5.1.2');
  t.equal(jetpackFor(parseNvTegraRelease('# R36 (release), REVISION: 3.0, GCID: 1\n')!), '6.0');
  t.equal(jetpackFor(parseNvTegraRelease('# R36 (release), REVISION: 9.9, GCID: 1\n')!), '6.x', 'an unlisted R36 point release');
  t.equal(jetpackFor(parseNvTegraRelease('# R32 (release), REVISION: 7.4, GCID: 1\n')!), null);
  t.equal(parseNvTegraRelease('garbage'), null);
});

t.test('GPU: Jetson Orin on JetPack 6 and 5, unsupported L4T, no CUDA, a desktop GPU, none', async (t) => {
  const orin6 = tmpDir('shoal-doctor-');
  put(orin6, 'etc/nv_tegra_release', R36);
  put(orin6, 'proc/device-tree/model', 'NVIDIA Jetson AGX Orin Developer Kit\0');
  put(orin6, 'usr/local/cuda/version.json', JSON.stringify({ cuda: { name: 'CUDA SDK', version: '12.6.68' } }));
  let r = await checkGpu({ root: orin6 });
  t.equal(r.status, 'ok');
  t.equal(r.detail, 'NVIDIA Jetson AGX Orin Developer Kit: L4T R36.4.3, JetPack 6.2; CUDA 12.6.68');

  const orin5 = tmpDir('shoal-doctor-');
  put(orin5, 'etc/nv_tegra_release', R35);
  put(orin5, 'usr/local/cuda/version.txt', 'CUDA Version 11.4.315\n');
  r = await checkGpu({ root: orin5 });
  t.equal(r.status, 'ok');
  t.match(r.detail, /L4T R35\.4\.1, JetPack 5\.1\.2; CUDA 11\.4\.315/);

  const nano = tmpDir('shoal-doctor-');
  put(nano, 'etc/nv_tegra_release', '# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref, EABI: aarch64\n');
  r = await checkGpu({ root: nano });
  t.equal(r.status, 'fail');
  t.match(r.fix, /JetPack 5 \(L4T R35\) and JetPack 6 \(L4T R36\)/);

  const noCuda = tmpDir('shoal-doctor-');
  put(noCuda, 'etc/nv_tegra_release', R36);
  r = await checkGpu({ root: noCuda });
  t.equal(r.status, 'warn');
  t.match(r.fix, /nvidia-jetpack/);

  const desktop = tmpDir('shoal-doctor-');
  put(desktop, 'proc/driver/nvidia/gpus/0000:01:00.0/information', 'Model: \t\t NVIDIA GeForce RTX 4090\nIRQ:   139\n');
  put(desktop, 'usr/local/cuda/version.json', JSON.stringify({ cuda: { version: '13.0.48' } }));
  r = await checkGpu({ root: desktop });
  t.equal(r.status, 'ok');
  t.equal(r.detail, 'NVIDIA GeForce RTX 4090; CUDA 13.0.48');

  r = await checkGpu({ root: tmpDir('shoal-doctor-') });
  t.equal(r.status, 'ok', 'no GPU is a supported setup');
  t.equal(r.detail, 'no NVIDIA GPU: the engine runs on the CPU');
});

t.test('CPU: the engine kernels and the CPU flags', async (t) => {
  const root = tmpDir('shoal-doctor-');
  put(root, 'proc/cpuinfo', ORIN_CPUINFO);
  let r = await checkCpu({ root, engineIsas: async () => ['scalar', 'neon', 'neon-dotprod'] });
  t.equal(r.status, 'ok');
  t.match(r.detail, /engine kernels scalar, neon, neon-dotprod \(auto uses neon-dotprod\); CPU flags asimd asimddp asimdhp fphp/);
  r = await checkCpu({ root, engineIsas: async () => ['scalar', 'neon'] });
  t.equal(r.status, 'warn');
  t.match(r.fix, /dot-product/);
  r = await checkCpu({ root, engineIsas: async () => ['scalar'] });
  t.equal(r.status, 'warn');
  r = await checkCpu({ root, engineIsas: async () => { throw new Error('Cannot find module shoal.node'); } });
  t.equal(r.status, 'fail');
  t.match(r.detail, /the engine cannot be loaded \(Cannot find module shoal\.node\)/);
  t.match(r.fix, /make/);
  const x86 = tmpDir('shoal-doctor-');
  put(x86, 'proc/cpuinfo', 'processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Gold 6338\nflags\t\t: fpu sse2 avx avx2 fma f16c avx512f avx512bw avx512vl\n');
  r = await checkCpu({ root: x86, engineIsas: async () => ['scalar', 'avx2', 'avx512'] });
  t.equal(r.status, 'ok');
  t.match(r.detail, /^Intel\(R\) Xeon\(R\) Gold 6338, \d+ logical CPUs; engine kernels scalar, avx2, avx512 \(auto uses avx512\); CPU flags avx2 fma f16c avx512f avx512bw avx512vl$/);
});

t.test('memory versus the model', async (t) => {
  const meminfo = (availKb: number) => {
    const root = tmpDir('shoal-doctor-');
    put(root, 'proc/meminfo', `MemTotal:        7994512 kB\nMemFree:          100000 kB\nMemAvailable:    ${availKb} kB\n`);
    return root;
  };
  // stories260K: 1 MiB of weights, a 0.6 MiB F32 KV cache for 512 tokens, 64 MiB runtime: ~66 MiB
  let r = await checkMemory({ root: meminfo(40 * 1024), model: storiesPath() });
  t.equal(r.status, 'fail');
  t.match(r.detail, /^40 MiB available of 7\.6 GiB; stories260K needs 66 MiB \(weights 1 MiB, KV cache 1 MiB for 512 tokens, runtime 64 MiB\)$/);
  t.match(r.fix, /smaller or lower-bit model/);
  r = await checkMemory({ root: meminfo(75 * 1024), model: storiesPath() });
  t.equal(r.status, 'warn', 'under 25% headroom');
  r = await checkMemory({ root: meminfo(4 * 1024 * 1024), model: storiesPath() });
  t.equal(r.status, 'ok');
  r = await checkMemory({ root: meminfo(4 * 1024 * 1024), model: storiesPath(), contextLength: 100_000 });
  t.match(r.detail, /KV cache 122 MiB for 100000 tokens/, 'the KV cache follows --ctx: 2 × 5 layers × 4 heads × 8 dims × 100000 × 4 bytes');
  r = await checkMemory({ root: meminfo(4 * 1024 * 1024), model: tmpDir('shoal-doctor-') });
  t.equal(r.status, 'fail');
  t.match(r.fix, /config\.json/);
  r = await checkMemory({ root: meminfo(4 * 1024 * 1024) });
  t.equal(r.status, 'ok');
  t.match(r.detail, /pass --model DIR/);
});

t.test('broker: a real one and a closed port', async (t) => {
  const b = await startAedes();
  t.teardown(() => b.close());
  let r = await checkBroker({ broker: b.url });
  t.equal(r.status, 'ok');
  t.match(r.detail, /connected in \d+ ms \(MQTT 3\.1\.1\)/);
  const port = await freePort();
  r = await checkBroker({ broker: `mqtt://127.0.0.1:${port}`, brokerTimeoutMs: 2000 });
  t.equal(r.status, 'fail');
  t.match(r.detail, /ECONNREFUSED/);
  t.match(r.fix, /start the broker/);
  r = await checkBroker({});
  t.equal(r.status, 'skip');
});

t.test('clock: timedatectl, chrony, neither, a clock in the past', async (t) => {
  const fake = (answers: Record<string, { code: number; stdout: string }>): Exec => async (cmd) => answers[cmd] ?? { code: 127, stdout: '' };
  const now = () => new Date('2026-06-01T00:00:00Z');
  let r = await checkClock({ now, exec: fake({ timedatectl: { code: 0, stdout: 'NTP=yes\nNTPSynchronized=yes\n' } }) });
  t.equal(r.status, 'ok');
  t.equal(r.detail, 'NTP-synchronized (timedatectl)');
  r = await checkClock({ now, exec: fake({ timedatectl: { code: 0, stdout: 'NTP=no\nNTPSynchronized=no\n' } }) });
  t.equal(r.status, 'warn');
  t.match(r.fix, /sudo timedatectl set-ntp true/);
  r = await checkClock({ now, exec: fake({ timedatectl: { code: 0, stdout: 'NTP=yes\nNTPSynchronized=no\n' } }) });
  t.match(r.fix, /not synchronized yet/);
  r = await checkClock({ now, exec: fake({ chronyc: { code: 0, stdout: 'Reference ID    : A9FEA97B (169.254.169.123)\nSystem time     : 0.000012 seconds fast of NTP time\nLeap status     : Normal\n' } }) });
  t.equal(r.status, 'ok');
  t.match(r.detail, /chrony: 0\.000012 seconds fast of NTP time/);
  r = await checkClock({ now, exec: fake({ chronyc: { code: 0, stdout: 'Leap status     : Not synchronised\n' } }) });
  t.equal(r.status, 'warn');
  r = await checkClock({ now, exec: fake({}) });
  t.equal(r.status, 'skip');
  r = await checkClock({ now: () => new Date('2001-01-01T00:00:00Z'), exec: fake({}) });
  t.equal(r.status, 'fail', 'a clock years off breaks TLS');
});

t.test('store: writable, to be created, not a folder, unwritable', async (t) => {
  const dir = tmpDir('shoal-doctor-store-');
  let r = await checkStore({ store: dir });
  t.equal(r.status, 'ok');
  t.match(r.detail, /writable, [\d.]+ [GM]iB free/);
  r = await checkStore({ store: path.join(dir, 'models', 'store') });
  t.equal(r.status, 'ok');
  t.match(r.detail, /to be created in/);
  r = await checkStore({ store: dir }, 2 ** 60);
  t.equal(r.status, 'warn', 'no room for two copies of a huge model');
  put(dir, 'file', 'x');
  r = await checkStore({ store: path.join(dir, 'file') });
  t.equal(r.status, 'fail');
  t.match(r.detail, /is not a folder/);
  // procfs refuses new files even to root
  r = await checkStore({ store: '/proc/shoal-doctor-store' });
  t.equal(r.status, 'fail');
  t.match(r.detail, /not writable/);
  t.match(r.fix, /chown/);
  t.same((await import('node:fs')).readdirSync(dir).sort(), ['file'], 'the probe left nothing behind');
});

t.test('shoal doctor: table, --json, exit codes', async (t) => {
  const store = tmpDir('shoal-doctor-store-');
  const ok = spawnSync(process.execPath, [CLI_MAIN, 'doctor', '--json', '--model', storiesPath(), '--store', store], { encoding: 'utf8' });
  t.equal(ok.status, 0, ok.stderr);
  const j = JSON.parse(ok.stdout) as { ok: boolean; checks: { id: string; status: string }[] };
  t.equal(j.ok, true);
  t.same(j.checks.map((c) => c.id), ['cpu', 'gpu', 'memory', 'broker', 'clock', 'store']);
  t.equal(j.checks.find((c) => c.id === 'store')!.status, 'ok');
  const port = await freePort();
  const bad = spawnSync(process.execPath, [CLI_MAIN, 'doctor', '--broker', `mqtt://127.0.0.1:${port}`], { encoding: 'utf8' });
  t.equal(bad.status, 1, 'a failed check exits 1');
  t.match(bad.stdout, /MQTT broker\s*│ FAIL/);
  t.match(bad.stdout, /1 problem\(s\) to fix/);
  const cfgErr = spawnSync(process.execPath, [CLI_MAIN, 'doctor', '--config', path.join(store, 'missing.json')], { encoding: 'utf8' });
  t.not(cfgErr.status, 0);
  t.match(cfgErr.stderr, /missing\.json/);
});
