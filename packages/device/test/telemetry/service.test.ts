// Jetson sysfs readers against fixture trees, and the full telemetry collector.
import t from 'tap';
import { mkdirSync, writeFileSync, symlinkSync } from 'node:fs';
import path from 'node:path';
import { readJetson, readGpuLoad, readPowerRails } from '../../src/telemetry/jetson.js';
import { collectTelemetry } from '../../src/telemetry/service.js';
import { Telemetry } from '@shoal/protocol';
import { tmpDir } from '../helpers.js';

function put(root: string, rel: string, text: string): void {
  const f = path.join(root, rel);
  mkdirSync(path.dirname(f), { recursive: true });
  writeFileSync(f, text + '\n');
}

/** An Orin-like tree: platform GPU path, one INA3221 with 3 rails + the sum channel, two thermal zones, EMC rate. */
function orinTree(): string {
  const root = tmpDir('shoal-sysfs-');
  put(root, 'sys/devices/platform/gpu.0/load', '537');
  const hw = 'sys/bus/i2c/devices/1-0040/hwmon/hwmon3';
  put(root, `${hw}/name`, 'ina3221');
  put(root, `${hw}/in1_label`, 'VDD_IN'); put(root, `${hw}/in1_input`, '5080'); put(root, `${hw}/curr1_input`, '1200');
  put(root, `${hw}/in2_label`, 'VDD_CPU_GPU_CV'); put(root, `${hw}/in2_input`, '5072'); put(root, `${hw}/curr2_input`, '400');
  put(root, `${hw}/in3_label`, 'VDD_SOC'); put(root, `${hw}/in3_input`, '5064'); put(root, `${hw}/curr3_input`, '300');
  put(root, `${hw}/in7_label`, 'sum of shunt voltages'); put(root, `${hw}/in7_input`, '40');
  // the same hwmon also appears under /sys/class/hwmon (a symlink): not counted twice
  mkdirSync(path.join(root, 'sys/class/hwmon'), { recursive: true });
  symlinkSync(path.join(root, hw), path.join(root, 'sys/class/hwmon/hwmon3'));
  put(root, 'sys/devices/virtual/thermal/thermal_zone0/type', 'cpu-thermal'); put(root, 'sys/devices/virtual/thermal/thermal_zone0/temp', '48500');
  put(root, 'sys/devices/virtual/thermal/thermal_zone1/type', 'gpu-thermal'); put(root, 'sys/devices/virtual/thermal/thermal_zone1/temp', '46000');
  put(root, 'sys/kernel/debug/bpmp/debug/clk/emc/rate', '3199000000');
  return root;
}

t.test('Orin tree: all Jetson sources read and converted', async (t) => {
  const root = orinTree();
  const r = await readJetson(root);
  t.equal(r.jetson.gpuLoadPct, 53.7, 'per-mille → percent');
  t.same(r.jetson.power, [
    { name: 'VDD_IN', voltageMv: 5080, currentMa: 1200, powerMw: 6096 },
    { name: 'VDD_CPU_GPU_CV', voltageMv: 5072, currentMa: 400, powerMw: 2029 },
    { name: 'VDD_SOC', voltageMv: 5064, currentMa: 300, powerMw: 1519 },
  ], 'rails with P = V·I; sum channel skipped; symlinked hwmon not duplicated');
  t.same(r.jetson.thermal, [{ zone: 'thermal_zone0', type: 'cpu-thermal', tempC: 48.5 }, { zone: 'thermal_zone1', type: 'gpu-thermal', tempC: 46 }]);
  t.same(r.jetson.emc, { rateHz: 3199000000 });
  t.same(r.sources.sort(), ['jetson.emc', 'jetson.gpu', 'jetson.ina3221', 'jetson.thermal']);
  t.same(r.missing, []);
});

t.test('older layout: /sys/devices/gpu.0/load; absent sources are omitted and listed', async (t) => {
  const root = tmpDir('shoal-sysfs-');
  put(root, 'sys/devices/gpu.0/load', '1000');
  t.equal(await readGpuLoad(root), 100);
  t.equal(await readPowerRails(root), null);
  const r = await readJetson(root);
  t.same(r.jetson, { gpuLoadPct: 100 });
  t.same(r.missing.sort(), ['jetson.emc', 'jetson.ina3221', 'jetson.thermal']);
  put(root, 'sys/devices/platform/gpu.0/load', 'garbage');
  t.equal(await readGpuLoad(root), 100, 'unparsable value falls through to the next path');
});

t.test('collectTelemetry: schema-valid payload with si, statfs, Jetson and inference stats', async (t) => {
  const root = orinTree();
  const store = tmpDir('shoal-store-');
  const tel = await collectTelemetry({ deviceId: 'd1', storeDir: store, sysfsRoot: root, inference: () => ({ requests: 3, errors: 0, rejected: 1, queueDepth: 2, active: 1, ttftMs: 12, decodeTokPerSec: 100 }) });
  const parsed = Telemetry.safeParse(tel);
  t.ok(parsed.success, parsed.success ? 'valid' : JSON.stringify(parsed.error.issues));
  t.ok(tel.sources.includes('si.mem') && tel.sources.includes('statfs.store') && tel.sources.includes('jetson.gpu'));
  t.ok(tel.memory!.totalBytes > 0);
  t.ok(tel.disk!.freeBytes > 0 && tel.disk!.path === store);
  t.equal(tel.jetson!.gpuLoadPct, 53.7);
  t.equal(tel.inference.queueDepth, 2);
  t.ok(tel.cpu && tel.cpu.perCore.length >= 1);
  const bare = await collectTelemetry({ deviceId: 'd1', storeDir: store, sysfsRoot: tmpDir('shoal-empty-'), inference: () => ({ requests: 0, errors: 0, rejected: 0, queueDepth: 0, active: 0, ttftMs: null, decodeTokPerSec: null }) });
  t.notOk('jetson' in bare, 'no Jetson block without Jetson sources');
  t.ok(['jetson.gpu', 'jetson.ina3221', 'jetson.thermal', 'jetson.emc'].every((s) => bare.missing.includes(s)));
});
