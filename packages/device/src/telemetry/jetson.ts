// Jetson sysfs readers (GPU load, INA3221 power rails, thermal zones, EMC
// clock). `root` is prefixed to every path so tests can use a fake tree.
// Absent or unreadable sources are omitted and reported in `missing`.
import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { JetsonTelemetry, PowerRail } from '@shoal/protocol';

async function readText(file: string): Promise<string | null> {
  try { return (await fsp.readFile(file, 'utf8')).trim(); } catch { return null; }
}
async function readNum(file: string): Promise<number | null> {
  const t = await readText(file);
  if (t === null || t === '') return null;
  const n = Number(t.split(/\s+/)[0]);
  return Number.isFinite(n) ? n : null;
}
async function list(dir: string): Promise<string[]> {
  try { return (await fsp.readdir(dir)).sort(); } catch { return []; }
}

export const GPU_LOAD_PATHS = ['sys/devices/platform/gpu.0/load', 'sys/devices/gpu.0/load'];

/** GPU load in percent (the sysfs value is per-mille). */
export async function readGpuLoad(root: string): Promise<number | null> {
  for (const p of GPU_LOAD_PATHS) {
    const v = await readNum(path.join(root, p));
    if (v !== null) return v / 10;
  }
  return null;
}

/** INA3221 rails from hwmon: in{N}_label, in{N}_input (mV), curr{N}_input (mA). Skips "sum of shunt voltages". */
export async function readPowerRails(root: string): Promise<PowerRail[] | null> {
  const hwmonDirs: string[] = [];
  const i2c = path.join(root, 'sys/bus/i2c/devices');
  for (const dev of await list(i2c)) {
    const hw = path.join(i2c, dev, 'hwmon');
    for (const h of await list(hw)) if (h.startsWith('hwmon')) hwmonDirs.push(path.join(hw, h));
  }
  const cls = path.join(root, 'sys/class/hwmon');
  for (const h of await list(cls)) {
    const dir = path.join(cls, h);
    if ((await readText(path.join(dir, 'name'))) === 'ina3221') hwmonDirs.push(dir);
  }
  const rails: PowerRail[] = [];
  const seen = new Set<string>();
  for (const dir of hwmonDirs) {
    let real = dir;
    try { real = await fsp.realpath(dir); } catch { /* keep */ }
    if (seen.has(real)) continue;
    seen.add(real);
    for (const f of await list(dir)) {
      const m = /^in(\d+)_label$/.exec(f);
      if (!m) continue;
      const n = m[1];
      const label = await readText(path.join(dir, f));
      if (!label || /sum of shunt/i.test(label)) continue;
      const mv = await readNum(path.join(dir, `in${n}_input`));
      const ma = await readNum(path.join(dir, `curr${n}_input`));
      const rail: PowerRail = { name: label };
      if (mv !== null) rail.voltageMv = mv;
      if (ma !== null) rail.currentMa = ma;
      if (mv !== null && ma !== null) rail.powerMw = Math.round((mv * ma) / 1000);
      rails.push(rail);
    }
  }
  return rails.length ? rails : null;
}

/** thermal_zone*: type and temp (millidegrees C). */
export async function readThermalZones(root: string): Promise<Array<{ zone: string; type: string; tempC: number }> | null> {
  const base = path.join(root, 'sys/devices/virtual/thermal');
  const out: Array<{ zone: string; type: string; tempC: number }> = [];
  for (const z of await list(base)) {
    if (!z.startsWith('thermal_zone')) continue;
    const t = await readNum(path.join(base, z, 'temp'));
    if (t === null) continue;
    out.push({ zone: z, type: (await readText(path.join(base, z, 'type'))) ?? z, tempC: t / 1000 });
  }
  return out.length ? out : null;
}

export const EMC_RATE_PATH = 'sys/kernel/debug/bpmp/debug/clk/emc/rate';

/** EMC clock rate in Hz (BPMP debugfs; readable by root only, else reported missing). */
export async function readEmc(root: string): Promise<{ rateHz: number } | null> {
  const rate = await readNum(path.join(root, EMC_RATE_PATH));
  return rate !== null ? { rateHz: rate } : null;
}

export async function readJetson(root: string): Promise<{ jetson: JetsonTelemetry; sources: string[]; missing: string[] }> {
  const jetson: JetsonTelemetry = {};
  const sources: string[] = [];
  const missing: string[] = [];
  const gpu = await readGpuLoad(root);
  if (gpu !== null) { jetson.gpuLoadPct = gpu; sources.push('jetson.gpu'); } else missing.push('jetson.gpu');
  const rails = await readPowerRails(root);
  if (rails) { jetson.power = rails; sources.push('jetson.ina3221'); } else missing.push('jetson.ina3221');
  const zones = await readThermalZones(root);
  if (zones) { jetson.thermal = zones; sources.push('jetson.thermal'); } else missing.push('jetson.thermal');
  const emc = await readEmc(root);
  if (emc) { jetson.emc = emc; sources.push('jetson.emc'); } else missing.push('jetson.emc');
  return { jetson, sources, missing };
}
