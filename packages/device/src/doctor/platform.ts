// platform.ts — what the machine is, read from files so tests can use fixture trees
// (`root` is prefixed to every path, as in jetson.ts): CPU flags, Jetson L4T and its
// JetPack release, the board, the CUDA toolkit, available memory.
import { promises as fsp } from 'node:fs';
import path from 'node:path';

async function readText(file: string): Promise<string | null> {
  try { return (await fsp.readFile(file, 'utf8')); } catch { return null; }
}

export interface CpuInfo {
  model: string | null;
  /** the ISA-relevant flags the engine's kernels use (x86: avx2 fma f16c avx512*; Arm: asimd asimddp fphp) */
  flags: string[];
}

const ENGINE_FLAGS = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512vnni', 'asimd', 'asimddp', 'asimdhp', 'fphp'];

/** /proc/cpuinfo: model name and the flags (x86 "flags", Arm "Features") of the first CPU. */
export async function readCpuInfo(root: string): Promise<CpuInfo | null> {
  const text = await readText(path.join(root, 'proc/cpuinfo'));
  if (text === null) return null;
  let model: string | null = null;
  let flags: string[] = [];
  for (const line of text.split('\n')) {
    const m = /^([^:]+?)\s*:\s*(.*)$/.exec(line);
    if (!m) continue;
    const [, k, v] = m as unknown as [string, string, string];
    if (!model && (k === 'model name' || k === 'Model' || k === 'Hardware')) model = v.trim();
    if (!flags.length && (k === 'flags' || k === 'Features')) flags = v.trim().split(/\s+/);
  }
  return { model, flags: ENGINE_FLAGS.filter((f) => flags.includes(f)) };
}

export interface L4tRelease { major: number; revision: string; release: string; board: string | null }

/** /etc/nv_tegra_release: "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64, DATE: ..." */
export function parseNvTegraRelease(text: string): L4tRelease | null {
  const m = /^#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([0-9.]+)/m.exec(text);
  if (!m) return null;
  const board = /BOARD:\s*([^,\s]+)/.exec(text)?.[1] ?? null;
  return { major: Number(m[1]), revision: m[2]!, release: `${m[1]}.${m[2]}`, board };
}

// L4T release -> JetPack release, from NVIDIA's JetPack archive (developer.nvidia.com/embedded/jetpack-archive).
// Only the releases that support Jetson Orin (R35 = JetPack 5, R36 = JetPack 6).
const JETPACK: Array<[string, string]> = [
  ['35.1.0', '5.0.2'], ['35.2.1', '5.1'], ['35.3.1', '5.1.1'], ['35.4.1', '5.1.2'], ['35.5.0', '5.1.3'], ['35.6.0', '5.1.4'], ['35.6.1', '5.1.5'],
  ['36.2.0', '6.0 DP'], ['36.3.0', '6.0'], ['36.4.0', '6.1'], ['36.4.3', '6.2'], ['36.4.4', '6.2.1'],
];

/** JetPack release for an L4T release ("36.4.3" -> "6.2"); for an unlisted R35/R36 point release, "5.x" / "6.x". */
export function jetpackFor(l4t: L4tRelease): string | null {
  const full = l4t.release.split('.').length === 2 ? `${l4t.release}.0` : l4t.release;
  const hit = JETPACK.find(([r]) => r === full);
  if (hit) return hit[1];
  if (l4t.major === 35) return '5.x';
  if (l4t.major === 36) return '6.x';
  return null;
}

export interface JetsonInfo { l4t: L4tRelease; jetpack: string | null; model: string | null }

export async function readJetsonRelease(root: string): Promise<JetsonInfo | null> {
  const text = await readText(path.join(root, 'etc/nv_tegra_release'));
  const l4t = text === null ? null : parseNvTegraRelease(text);
  if (!l4t) return null;
  // device-tree strings end with NUL
  const model = (await readText(path.join(root, 'proc/device-tree/model')))?.replace(/\0/g, '').trim() || null;
  return { l4t, jetpack: jetpackFor(l4t), model };
}

/** The CUDA toolkit under /usr/local/cuda: version.json (CUDA >= 11.1) or version.txt. */
export async function readCudaVersion(root: string): Promise<string | null> {
  const json = await readText(path.join(root, 'usr/local/cuda/version.json'));
  if (json !== null) {
    try {
      const v = (JSON.parse(json) as { cuda?: { version?: string } }).cuda?.version;
      if (v) return v;
    } catch { /* fall through to version.txt */ }
  }
  const txt = await readText(path.join(root, 'usr/local/cuda/version.txt'));
  return txt ? /CUDA Version\s+([0-9.]+)/.exec(txt)?.[1] ?? null : null;
}

/** Discrete NVIDIA GPUs the driver lists (/proc/driver/nvidia/gpus/<bus id>/information "Model: ..."). */
export async function readNvidiaGpus(root: string): Promise<string[]> {
  const dir = path.join(root, 'proc/driver/nvidia/gpus');
  let ids: string[] = [];
  try { ids = (await fsp.readdir(dir)).sort(); } catch { return []; }
  const out: string[] = [];
  for (const id of ids) {
    const info = await readText(path.join(dir, id, 'information'));
    out.push(info ? /^Model:\s*(.+)$/m.exec(info)?.[1]?.trim() ?? id : id);
  }
  return out;
}

/** MemAvailable and MemTotal from /proc/meminfo, in bytes. */
export async function readMemInfo(root: string): Promise<{ availableBytes: number; totalBytes: number } | null> {
  const text = await readText(path.join(root, 'proc/meminfo'));
  if (text === null) return null;
  const kb = (k: string) => { const m = new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(text); return m ? Number(m[1]) * 1024 : null; };
  const total = kb('MemTotal');
  const avail = kb('MemAvailable') ?? kb('MemFree');
  return total !== null && avail !== null ? { availableBytes: avail, totalBytes: total } : null;
}
