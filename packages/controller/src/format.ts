// Human-readable output shared by the CLI commands and `shoal up`.
import cliProgress from 'cli-progress';
import Table from 'cli-table3';
import type { ControllerClient } from './client.js';
import type { RolloutRecord } from './storage/types.js';

const isTty = () => Boolean(process.stdout.isTTY);
const out = (s: string): void => { process.stdout.write(s + "\n"); };

/** Colours only on a terminal. */
export function tableStyle(): { head: string[]; border: string[] } {
  return isTty() ? { head: ['cyan'], border: ['grey'] } : { head: [], border: [] };
}

export function ago(ts: number | null | undefined): string {
  if (!ts) return '-';
  const s = Math.max(0, Math.round((Date.now() - ts) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

export function renderDevices(devices: Record<string, any>[]): string {
  const table = new Table({ head: ['device', 'online', 'group', 'model', 'phase', 'tok/s', 'temp °C', 'cpu %', 'last seen'], style: tableStyle() });
  for (const d of devices) {
    table.push([
      d.id, d.online ? 'yes' : 'NO', d.group ?? '-',
      d.model ? `${d.model.name}@${d.model.version}` : '-',
      d.phase ?? '-' + (d.lastError ? ` (${d.lastError.code})` : ''),
      d.tokPerSec === null || d.tokPerSec === undefined ? '-' : Number(d.tokPerSec).toFixed(1),
      d.maxTempC === null || d.maxTempC === undefined ? '-' : Number(d.maxTempC).toFixed(1),
      d.cpuLoadPct === null || d.cpuLoadPct === undefined ? '-' : Number(d.cpuLoadPct).toFixed(0),
      ago(d.lastSeen),
    ]);
  }
  return table.toString();
}

export function renderRollout(r: RolloutRecord): string {
  const waves = Math.max(...r.devices.map((d) => d.wave)) + 1;
  const lines = [
    `rollout ${r.id}: ${r.name}@${r.version} to ${r.target} — ${r.status.toUpperCase()} (wave ${Math.min(r.currentWave + 1, waves)}/${waves}, max failures ${r.maxFailures}, timeout ${r.timeoutSec}s)`,
  ];
  if (r.message) lines.push(`  ${r.message}`);
  const t = new Table({ head: ['wave', 'device', 'status', 'previous', 'error'], style: tableStyle() });
  for (const d of r.devices) t.push([String(d.wave + 1), d.id, d.status, d.previous ? `${d.previous.name}@${d.previous.version}` : '-', d.error ?? '']);
  lines.push(t.toString());
  return lines.join('\n');
}

export async function waitRollout(c: ControllerClient, id: string, json: boolean): Promise<RolloutRecord> {
  const bar = !json && isTty() ? new cliProgress.SingleBar({ format: ' {bar} {value}/{total} devices active | wave {wave} | {status}', hideCursor: true }, cliProgress.Presets.shades_classic) : null;
  let last = '';
  for (;;) {
    const { rollout: r } = await c.json<{ rollout: RolloutRecord }>('GET', `/api/rollouts/${encodeURIComponent(id)}`);
    const active = r.devices.filter((d) => d.status === 'active').length;
    const waves = Math.max(...r.devices.map((d) => d.wave)) + 1;
    const wave = `${Math.min(r.currentWave + 1, waves)}/${waves}`;
    if (bar) {
      if (!last) bar.start(r.devices.length, active, { wave, status: r.status });
      bar.update(active, { wave, status: r.status });
    } else if (!json) {
      const line = `wave ${wave}: ${active}/${r.devices.length} active (${r.status})`;
      if (line !== last) out(line);
      last = line;
    }
    last ||= 'x';
    if (r.status !== 'running' && r.status !== 'paused') {
      bar?.stop();
      return r;
    }
    await new Promise((res) => setTimeout(res, 500));
  }
}

