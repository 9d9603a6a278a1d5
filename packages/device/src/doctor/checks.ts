// checks.ts — `shoal doctor`: is this machine ready to run a Shoal device?
// Each check returns a status, what it found and, when something is wrong, what
// to do about it. Nothing here changes the machine (the store probe writes one
// temporary file and removes it).
import { execFile } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { readCpuInfo, readCudaVersion, readJetsonRelease, readMemInfo, readNvidiaGpus } from './platform.js';

export type CheckStatus = 'ok' | 'warn' | 'fail' | 'skip';

export interface CheckResult {
  /** stable id: cpu, gpu, memory, broker, clock, store */
  id: string;
  title: string;
  status: CheckStatus;
  /** what was found */
  detail: string;
  /** what to do (warn and fail only) */
  fix?: string;
  data?: Record<string, unknown>;
}

export type Exec = (cmd: string, args: string[]) => Promise<{ code: number; stdout: string }>;

export interface DoctorOptions {
  /** prefix for every system file read (tests use fixture trees); default '/' */
  root?: string;
  /** checkpoint folder: memory is checked against it */
  model?: string;
  /** context length the model is run with (KV cache size); default min(max_position_embeddings, 4096) */
  contextLength?: number;
  broker?: string;
  brokerTimeoutMs?: number;
  store?: string;
  /** runs timedatectl / chronyc (tests replace it) */
  exec?: Exec;
  /** the engine's CPU kernel sets, e.g. ['scalar', 'avx2', 'avx512']; default: ask the built addon */
  engineIsas?: () => Promise<string[]>;
  /** the clock (tests) */
  now?: () => Date;
}

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const fmtBytes = (b: number) => (b >= GiB ? `${(b / GiB).toFixed(1)} GiB` : `${(b / MiB).toFixed(0)} MiB`);

export const defaultExec: Exec = (cmd, args) => new Promise((resolve) => {
  execFile(cmd, args, { timeout: 3000, encoding: 'utf8' }, (err, stdout) => {
    const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127) : 0;
    resolve({ code, stdout: stdout ?? '' });
  });
});

async function builtEngineIsas(): Promise<string[]> {
  const { cpuIsas } = await import('@shoal/engine');
  return cpuIsas();
}

// The kernel set the engine's `auto` picks: the last (best) supported one in this order.
const ISA_ORDER = ['scalar', 'neon', 'neon-dotprod', 'avx2', 'avx512'];

export async function checkCpu(o: DoctorOptions): Promise<CheckResult> {
  const root = o.root ?? '/';
  const cpu = await readCpuInfo(root);
  const arch = os.arch();
  const where = `${cpu?.model ?? arch}, ${os.cpus().length} logical CPUs`;
  let isas: string[];
  try {
    isas = await (o.engineIsas ?? builtEngineIsas)();
  } catch (e) {
    return {
      id: 'cpu', title: 'CPU kernels', status: 'fail', detail: `${where}; the engine cannot be loaded (${(e as Error).message.split('\n')[0]})`,
      fix: 'build it: `make` in the checkout (needs g++ and cmake: scripts/setup.sh --for demo)',
    };
  }
  const best = [...isas].sort((a, b) => ISA_ORDER.indexOf(a) - ISA_ORDER.indexOf(b)).pop() ?? 'scalar';
  const flags = cpu?.flags.length ? `; CPU flags ${cpu.flags.join(' ')}` : '';
  const detail = `${where}; engine kernels ${isas.join(', ')} (auto uses ${best})${flags}`;
  const data = { isas, best, flags: cpu?.flags ?? [], model: cpu?.model ?? null };
  if (best === 'scalar') {
    return {
      id: 'cpu', title: 'CPU kernels', status: 'warn', detail, data,
      fix: arch === 'arm64' ? 'only the scalar reference kernels run: this Arm CPU lacks NEON (asimd)' : 'only the scalar reference kernels run (no AVX2): expect several times slower decoding',
    };
  }
  if (best === 'neon') {
    return { id: 'cpu', title: 'CPU kernels', status: 'warn', detail, data, fix: 'no dot-product instructions (asimddp, ARMv8.2): INT4 matvec runs at about half speed; Orin CPUs have them' };
  }
  return { id: 'cpu', title: 'CPU kernels', status: 'ok', detail, data };
}

export async function checkGpu(o: DoctorOptions): Promise<CheckResult> {
  const root = o.root ?? '/';
  const cuda = await readCudaVersion(root);
  const jetson = await readJetsonRelease(root);
  if (jetson) {
    const { l4t, jetpack, model } = jetson;
    const detail = `${model ?? 'Jetson'}: L4T R${l4t.release}, JetPack ${jetpack ?? 'unknown'}; CUDA ${cuda ?? 'not found under /usr/local/cuda'}`;
    const data = { jetson: true, l4t: l4t.release, jetpack, model, cuda };
    if (l4t.major !== 35 && l4t.major !== 36) {
      return { id: 'gpu', title: 'GPU / CUDA', status: 'fail', detail, data, fix: 'Shoal supports Jetson Orin on JetPack 5 (L4T R35) and JetPack 6 (L4T R36): flash a supported JetPack' };
    }
    if (!cuda) return { id: 'gpu', title: 'GPU / CUDA', status: 'warn', detail, data, fix: 'install the CUDA toolkit (sudo apt-get install nvidia-jetpack), then rebuild the engine with CUDA (deploy/install/install-jetson.sh)' };
    return { id: 'gpu', title: 'GPU / CUDA', status: 'ok', detail, data };
  }
  const gpus = await readNvidiaGpus(root);
  const data = { jetson: false, gpus, cuda };
  if (gpus.length) {
    return { id: 'gpu', title: 'GPU / CUDA', status: cuda ? 'ok' : 'warn', detail: `${gpus.join(', ')}; CUDA ${cuda ?? 'toolkit not found under /usr/local/cuda'}`, data,
      ...(cuda ? {} : { fix: 'install the CUDA toolkit to build the engine with -DSHOAL_CUDA=ON (make cuda-build)' }) };
  }
  // no GPU is a supported setup: the CPU backend runs everything
  return { id: 'gpu', title: 'GPU / CUDA', status: 'ok', detail: `no NVIDIA GPU: the engine runs on the CPU${cuda ? ` (CUDA toolkit ${cuda} installed)` : ''}`, data };
}

interface ModelNeed { weightsBytes: number; kvBytes: number; contextLength: number; totalBytes: number }

/** Bytes a checkpoint needs in memory: its tensor files, the KV cache (F32) for the context, 64 MiB of runtime. */
export async function modelMemory(dir: string, contextLength?: number): Promise<ModelNeed> {
  const cfgText = await fsp.readFile(path.join(dir, 'config.json'), 'utf8');
  const cfg = JSON.parse(cfgText) as Record<string, number | undefined>;
  let weightsBytes = 0;
  for (const f of await fsp.readdir(dir)) if (f.endsWith('.safetensors')) weightsBytes += (await fsp.stat(path.join(dir, f))).size;
  if (weightsBytes === 0) throw new Error(`no *.safetensors in ${dir}`);
  const layers = cfg.num_hidden_layers ?? 0;
  const heads = cfg.num_attention_heads ?? 1;
  const kvHeads = cfg.num_key_value_heads ?? heads;
  const headDim = cfg.head_dim ?? Math.floor((cfg.hidden_size ?? 0) / heads);
  const ctx = contextLength ?? Math.min(cfg.max_position_embeddings ?? 2048, 4096);
  const kvBytes = 2 * layers * kvHeads * headDim * ctx * 4;
  return { weightsBytes, kvBytes, contextLength: ctx, totalBytes: weightsBytes + kvBytes + 64 * MiB };
}

export async function checkMemory(o: DoctorOptions): Promise<CheckResult> {
  const mem = await readMemInfo(o.root ?? '/') ?? { availableBytes: os.freemem(), totalBytes: os.totalmem() };
  const have = `${fmtBytes(mem.availableBytes)} available of ${fmtBytes(mem.totalBytes)}`;
  if (!o.model) {
    const low = mem.availableBytes < 512 * MiB;
    return { id: 'memory', title: 'Memory', status: low ? 'warn' : 'ok', detail: `${have} (pass --model DIR to check a model)`, data: { ...mem },
      ...(low ? { fix: 'less than 512 MiB free: stop other services or use a smaller model' } : {}) };
  }
  let need: ModelNeed;
  try {
    need = await modelMemory(o.model, o.contextLength);
  } catch (e) {
    return { id: 'memory', title: 'Memory', status: 'fail', detail: `${have}; cannot read the model: ${(e as Error).message}`, fix: '--model must be a checkpoint folder with config.json and *.safetensors' };
  }
  const detail = `${have}; ${path.basename(o.model)} needs ${fmtBytes(need.totalBytes)} (weights ${fmtBytes(need.weightsBytes)}, KV cache ${fmtBytes(need.kvBytes)} for ${need.contextLength} tokens, runtime 64 MiB)`;
  const data = { ...mem, need };
  if (mem.availableBytes < need.totalBytes) {
    return { id: 'memory', title: 'Memory', status: 'fail', detail, data, fix: 'not enough free memory: use a smaller or lower-bit model, a shorter context (engine.contextSize), or free memory (stop other services; on Jetson, sudo systemctl set-default multi-user.target frees the desktop)' };
  }
  if (mem.availableBytes < need.totalBytes * 1.25) {
    return { id: 'memory', title: 'Memory', status: 'warn', detail, data, fix: 'under 25% headroom: an OTA update loads the new model beside the old one; expect the health check to fail or swapping' };
  }
  return { id: 'memory', title: 'Memory', status: 'ok', detail, data };
}

export async function checkBroker(o: DoctorOptions): Promise<CheckResult> {
  if (!o.broker) return { id: 'broker', title: 'MQTT broker', status: 'skip', detail: 'pass --broker URL (or --config device.json) to check it' };
  const url = o.broker;
  const { connectAsync } = await import('mqtt');
  const t0 = performance.now();
  const timeoutMs = o.brokerTimeoutMs ?? 5000;
  try {
    const c = await connectAsync(url, { connectTimeout: timeoutMs, reconnectPeriod: 0, clientId: `shoal-doctor-${process.pid}`, clean: true });
    const ms = performance.now() - t0;
    const version = c.options.protocolVersion ?? 4;
    await c.endAsync();
    return { id: 'broker', title: 'MQTT broker', status: 'ok', detail: `${url}: connected in ${ms.toFixed(0)} ms (MQTT ${version === 5 ? '5' : '3.1.1'})`, data: { url, ms } };
  } catch (e) {
    const msg = (e as Error).message || String(e);
    const refused = /ECONNREFUSED/.test(msg);
    const auth = /Not authorized|Bad username|bad user name/i.test(msg);
    return {
      id: 'broker', title: 'MQTT broker', status: 'fail', detail: `${url}: ${msg}`, data: { url },
      fix: refused ? 'nothing listens there: start the broker (deploy/mosquitto) or fix broker.url'
        : auth ? 'the broker refused the credentials: check broker.username/password (deploy/mosquitto/make-credentials.sh)'
          : 'check broker.url, the network and the firewall; for mqtts://, the CA file and the clock',
    };
  }
}

export async function checkClock(o: DoctorOptions): Promise<CheckResult> {
  const exec = o.exec ?? defaultExec;
  const now = (o.now ?? (() => new Date()))();
  // TLS certificates and signed manifests' timestamps need a sane clock first of all
  if (now.getUTCFullYear() < 2024) {
    return { id: 'clock', title: 'Clock sync', status: 'fail', detail: `the clock says ${now.toISOString()}`, fix: 'set the time (sudo timedatectl set-ntp true, or sudo date -s ...): TLS to the broker fails with a clock this far off' };
  }
  const td = await exec('timedatectl', ['show', '--property=NTP', '--property=NTPSynchronized']);
  const props = Object.fromEntries(td.stdout.split('\n').map((l) => l.trim().split('=')).filter((kv) => kv.length === 2)) as Record<string, string>;
  if (td.code === 0 && props.NTPSynchronized) {
    const ntp = props.NTP ?? '?', synced = props.NTPSynchronized;
    if (synced === 'yes') return { id: 'clock', title: 'Clock sync', status: 'ok', detail: 'NTP-synchronized (timedatectl)' };
    return {
      id: 'clock', title: 'Clock sync', status: 'warn', detail: `not NTP-synchronized (timedatectl: NTP=${ntp}, NTPSynchronized=${synced})`,
      fix: ntp === 'yes' ? 'NTP is on but not synchronized yet: check that the NTP servers are reachable (timedatectl timesync-status)' : 'turn NTP on: sudo timedatectl set-ntp true',
    };
  }
  const ch = await exec('chronyc', ['-n', 'tracking']);
  if (ch.code === 0 && /Leap status/.test(ch.stdout)) {
    const leap = /Leap status\s*:\s*(.+)/.exec(ch.stdout)?.[1]?.trim() ?? '';
    const offset = /System time\s*:\s*(.+)/.exec(ch.stdout)?.[1]?.trim();
    if (leap === 'Normal') return { id: 'clock', title: 'Clock sync', status: 'ok', detail: `synchronized (chrony${offset ? `: ${offset}` : ''})` };
    return { id: 'clock', title: 'Clock sync', status: 'warn', detail: `chrony: leap status ${leap}`, fix: 'chrony is not synchronized: check its sources (chronyc sources)' };
  }
  return { id: 'clock', title: 'Clock sync', status: 'skip', detail: `cannot tell: no timedatectl (systemd) or chronyc here; the clock says ${now.toISOString()}` };
}

export async function checkStore(o: DoctorOptions, modelBytes?: number): Promise<CheckResult> {
  if (!o.store) return { id: 'store', title: 'Model store', status: 'skip', detail: 'pass --store DIR (or --config device.json) to check it' };
  const dir = path.resolve(o.store);
  // the daemon creates the store: check the folder, or the nearest existing parent
  let at = dir;
  for (;;) {
    try {
      if ((await fsp.stat(at)).isDirectory()) break;
      return { id: 'store', title: 'Model store', status: 'fail', detail: `${at} is not a folder`, fix: 'point store.dir at a folder' };
    } catch {
      const up = path.dirname(at);
      if (up === at) break;
      at = up;
    }
  }
  const probe = path.join(at, `.shoal-doctor-${process.pid}`);
  try {
    const fh = await fsp.open(probe, 'w', 0o600);
    await fh.writeFile('probe');
    await fh.sync();
    await fh.close();
    await fsp.rename(probe, probe + '.renamed');
    await fsp.unlink(probe + '.renamed');
  } catch (e) {
    await fsp.rm(probe, { force: true }).catch(() => undefined);
    await fsp.rm(probe + '.renamed', { force: true }).catch(() => undefined);
    return {
      id: 'store', title: 'Model store', status: 'fail', detail: `${at}: not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      fix: `give the daemon's user write access: sudo chown -R shoal:shoal ${dir} (deploy/install creates /var/lib/shoal)`,
    };
  }
  const st = await fsp.statfs(at);
  const free = st.bavail * st.bsize;
  const where = at === dir ? dir : `${dir} (to be created in ${at})`;
  const detail = `${where}: writable, ${fmtBytes(free)} free`;
  // an update keeps the working version while the new one downloads: room for two
  const want = modelBytes ? 2 * modelBytes : GiB;
  if (free < want) {
    return { id: 'store', title: 'Model store', status: 'warn', detail, data: { dir, free }, fix: modelBytes ? `less than twice the model (${fmtBytes(want)}) free: an update needs room for the new version beside the working one` : 'less than 1 GiB free: free disk space or move store.dir' };
  }
  return { id: 'store', title: 'Model store', status: 'ok', detail, data: { dir, free } };
}

export interface DoctorReport { ok: boolean; checks: CheckResult[] }

/** Every check (independent ones in parallel); ok = no check failed. */
export async function runDoctor(o: DoctorOptions): Promise<DoctorReport> {
  let modelBytes: number | undefined;
  if (o.model) modelBytes = await modelMemory(o.model, o.contextLength).then((n) => n.weightsBytes, () => undefined);
  const checks = await Promise.all([checkCpu(o), checkGpu(o), checkMemory(o), checkBroker(o), checkClock(o), checkStore(o, modelBytes)]);
  return { ok: checks.every((c) => c.status !== 'fail'), checks };
}
