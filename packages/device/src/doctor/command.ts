// command.ts — `shoal doctor`: runs the checks, prints a table (or --json), exits 1
// when a check failed. Loaded only when the command runs (shoal --help stays fast).
import Table from 'cli-table3';
import { loadConfig } from '../config/load.js';
import { runDoctor, type CheckStatus, type DoctorReport } from './checks.js';

export interface DoctorCliOptions { model?: string; ctx?: number; broker?: string; store?: string; config?: string; json?: boolean }

const MARK: Record<CheckStatus, string> = { ok: 'OK', warn: 'WARN', fail: 'FAIL', skip: 'skip' };

export function renderDoctor(r: DoctorReport, width = process.stdout.columns || 120): string {
  const fixW = Math.max(30, Math.min(60, width - 70));
  const table = new Table({
    head: ['check', 'status', 'found', 'to fix'],
    colWidths: [14, 8, Math.max(30, width - fixW - 30), fixW],
    wordWrap: true,
    style: { head: [], border: [] },
  });
  for (const c of r.checks) table.push([c.title, MARK[c.status], c.detail, c.fix ?? '']);
  const failed = r.checks.filter((c) => c.status === 'fail').length;
  const warned = r.checks.filter((c) => c.status === 'warn').length;
  const verdict = failed ? `${failed} problem(s) to fix before this machine can run a device` : warned ? `ready, with ${warned} warning(s)` : 'ready';
  return `${table.toString()}\n${verdict}\n`;
}

export async function runDoctorCli(o: DoctorCliOptions): Promise<number> {
  let broker = o.broker;
  let store = o.store;
  if (o.config) {
    const cfg = loadConfig(o.config);
    broker ??= cfg.broker.url;
    store ??= cfg.store.dir;
  }
  const report = await runDoctor({ model: o.model, contextLength: o.ctx, broker, store });
  process.stdout.write(o.json ? JSON.stringify(report, null, 2) + '\n' : renderDoctor(report));
  return report.ok ? 0 : 1;
}
