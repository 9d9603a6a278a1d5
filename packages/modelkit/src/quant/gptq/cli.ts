// gptq/cli.ts — the low-bit side of `shoal quantize` (--format gptq|gptq-v1|eqat,
// --method gptq): options, a progress bar with layer, phase and time left, and
// the summary.
import { Command, InvalidArgumentError } from 'commander';
import cliProgress from 'cli-progress';
import type { FloatDType } from '../../arch/model-shapes.js';
import { checkGptqOptions, quantizeModelGptq, type GptqQuantizeResult } from '../gptq.js';
import type { GptqLayerReport } from './sequential.js';
import { ShoalError } from '@shoal/common';

export interface LowbitCliOpts {
  method: string; bits: number; group: number; model: string; out: string; dtype: FloatDType; force?: boolean; json?: boolean;
  format: string; sym?: boolean; calib?: string[]; calibSep?: string; samples?: number; seqlen?: number;
  damp: number; actOrder?: boolean; staticGroups?: boolean; layerError?: boolean;
}

function fraction(v: string): number {
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n) || n < 0 || n >= 1) throw new InvalidArgumentError('expected a number in [0, 1)');
  return n;
}

/** Adds the GPTQ options to the `quantize` command. */
export function addGptqQuantizeOptions(cmd: Command): Command {
  return cmd
    .option('--damp <f>', 'GPTQ dampening, a fraction of the Hessian mean diagonal', fraction, 0.01)
    .option('--act-order', 'GPTQ: quantize inputs by decreasing Hessian diagonal (desc_act; writes g_idx)')
    .option('--static-groups', 'GPTQ: group scales from the original weights (with --act-order: no g_idx permutation)')
    .option('--layer-error', 'GPTQ: measure each linear\'s ‖(Ŵ−W)X‖²/‖WX‖² for GPTQ and for RTN (about doubles the solve time)');
}

export function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

function layerLine(r: GptqLayerReport): string {
  const errs = r.linears.filter((l) => l.relErrGptq !== undefined)
    .map((l) => `${l.kind.split('.')[1]} ${l.relErrGptq!.toExponential(2)}/${l.relErrRtn!.toExponential(2)}`);
  return `layer ${r.layer}: ${r.seconds.toFixed(1)} s` + (errs.length ? `, rel. error gptq/rtn: ${errs.join(' ')}` : '');
}

export async function runLowbitQuantize(o: LowbitCliOpts): Promise<GptqQuantizeResult> {
  // --method gptq writes AutoGPTQ's v1 zeros unless --format gptq (v2) is given explicitly
  const format = o.method === 'gptq' && o.format === 'awq' ? 'gptq-v1' : o.format;
  const common = {
    method: o.method, bits: o.bits, groupSize: o.group, dtype: o.dtype,
    ...(o.method === 'gptq' ? { damp: o.damp, actOrder: o.actOrder ?? false, staticGroups: o.staticGroups ?? false } : {}),
    ...(format === 'eqat' ? { layout: 'eqat' as const } : format === 'compressed-tensors' ? { layout: 'ct' as const } : {}),
  };
  checkGptqOptions(common);
  let calibSep: RegExp | undefined;
  if (o.calibSep !== undefined) {
    try {
      calibSep = new RegExp(o.calibSep);
    } catch (err) {
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--calib-sep ${o.calibSep} is not a valid regular expression: ${(err as Error).message}`);
    }
  }
  const tty = !o.json && process.stderr.isTTY;
  const gptq = o.method === 'gptq';
  const bar = tty
    ? new cliProgress.SingleBar({
      stream: process.stderr, hideCursor: true, etaBuffer: 4,
      format: gptq ? `gptq w${o.bits}g${o.group} [{bar}] {value}/{total} layers | {left} | {stage}`
        : `quantize [{bar}] {percentage}% | {value}/{total} tensors | ETA {eta}s`,
    }, cliProgress.Presets.shades_classic)
    : null;
  let started = false;
  // time left from the finished layers' mean (every layer has the same shapes)
  const t0 = performance.now();
  let done = 0;
  const left = (total: number) => {
    if (done === 0) return 'time left: after layer 0';
    const s = ((performance.now() - t0) / 1000 / done) * (total - done);
    return `time left ${s >= 60 ? `${Math.floor(s / 60)} min ${Math.round(s % 60)} s` : `${Math.round(s)} s`}`;
  };
  const start = (total: number, value: number) => {
    if (!bar || started) return;
    bar.start(total, value, { stage: '', left: left(total) });
    started = true;
  };
  try {
    const r = await quantizeModelGptq({
      ...common, model: o.model, out: o.out, sym: o.sym ?? false,
      checkpointFormat: format === 'gptq-v1' ? 'gptq' : 'gptq_v2', layout: format === 'eqat' ? 'eqat' : format === 'compressed-tensors' ? 'ct' : 'gptq',
      ...(o.calib ? { calib: o.calib } : {}), ...(calibSep ? { calibSep } : {}), ...(o.samples ? { awqSamples: o.samples } : {}), ...(o.seqlen ? { awqSeqlen: o.seqlen } : {}),
      layerError: o.layerError ?? false, force: o.force ?? false,
      onProgress: (d, t) => {
        if (gptq || !bar) return;
        start(t, 0);
        bar.update(d);
      },
      onStage: (l, stage, total) => {
        if (!bar) return;
        start(total, l);
        bar.update(l, { stage: `layer ${l}: ${stage}`, left: left(total) });
      },
      onLayer: (rep, total) => {
        done = rep.layer + 1;
        if (!bar) return;
        start(total, rep.layer);
        bar.update(rep.layer + 1, { stage: '', left: left(total) });
        bar.stop();
        started = false;
        process.stderr.write(layerLine(rep) + '\n');
        if (rep.layer + 1 < total) start(total, rep.layer + 1);
      },
    });
    if (started) bar?.stop();
    started = false;
    if (r.note && !o.json) process.stderr.write(r.note + '\n');
    if (o.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
      return r;
    }
    if (!tty) for (const l of r.layers) process.stdout.write(layerLine(l) + '\n');
    const kind = r.layout === 'eqat' ? 'efficientqat' : r.layout === 'ct' ? `compressed-tensors ${r.sym ? 'sym' : 'asym'}` : r.checkpointFormat;
    process.stdout.write(`${r.method} ${kind} w${r.bits}${r.groupSize === -1 && r.layout === 'ct' ? ' channel' : `g${r.groupSize}`}${r.descAct ? ' act-order' : ''}${r.staticGroups ? ' static-groups' : ''}: `
      + `${r.quantizedLinears} linears quantized, ${r.keptLinears} kept in ${r.dtype}`
      + (r.modulesToNotConvert.length ? ` (not quantized: ${r.modulesToNotConvert.join(', ')})` : '') + '\n'
      + (r.calibration ? `calibration: ${r.calibration.samples} × ${r.calibration.seqlen} tokens from ${r.calibration.documents} documents; damp ${r.damp}\n` : '')
      + `mean relative weight error ${r.meanRelativeError.toFixed(4)}\n`
      + `wrote ${r.files.join(', ')} (${formatBytes(r.bytesOut)}, source ${formatBytes(r.bytesIn)}) to ${r.dir} in ${r.seconds.toFixed(1)} s `
      + `(peak RSS ${formatBytes(r.peakRssBytes)})\n`);
    return r;
  } finally {
    if (started) bar?.stop();
  }
}
