// awq/cli.ts — the AWQ side of `shoal quantize`: extra options, a progress bar
// with per-layer timings and losses, and the summary. commands.ts adds the
// options to its `quantize` command and hands over when --method awq, --bits 2/3
// or --pad-ffn is asked for (RTN w4 without padding stays in quant/rtn.ts).
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import type { FloatDType } from '../../arch/model-shapes.js';
import { DEFAULT_ALPHA_SEARCH, DEFAULT_LAYER_INPUT, quantizeAwqModel, type AwqQuantizeResult, type LayerReport } from './quantize-awq.js';
import { ShoalError } from '@shoal/common';

export interface AwqCliOpts {
  method: string; bits: number; group: number; model: string; out: string; dtype: FloatDType; force?: boolean; json?: boolean;
  calib?: string[]; calibSep?: string; samples: number; seqlen: number; duoScaling?: boolean; padFfn?: boolean;
  clip: boolean; fakeQuant?: boolean; backend: 'auto' | 'cpu' | 'cuda'; clipLinears?: string; vClipError: 'attention' | 'token';
  holdout?: number; searchTokens?: number; alphaSearch: 'grid' | 'coarse-fine'; layerInput: 'fp' | 'quantized'; precision: 'auto' | 'bf16' | 'f32';
}

function posInt(v: string): number {
  if (!/^\d+$/.test(v.trim()) || Number(v) < 1) throw new InvalidArgumentError('expected a positive integer');
  return Number(v);
}

/** Adds the AWQ / low-bit options to the `quantize` command. */
export function addAwqQuantizeOptions(cmd: Command): Command {
  return cmd
    .option('--calib <files...>', 'calibration text files (AWQ; tokenized with the model tokenizer, BOS before each document)')
    .option('--calib-sep <regex>', 'split calibration files into documents at this regex (default: one document per file)')
    .option('--samples <n>', 'calibration blocks (AWQ)', posInt, 128)
    .option('--seqlen <n>', 'tokens per calibration block (AWQ)', posInt, 512)
    .option('--duo-scaling', 'AutoAWQ duo scaling: s = mean|x|^a / mean|w|^(1-a)')
    .option('--search-tokens <n>', 'AWQ: calibration tokens (whole blocks, a fixed seeded subsample) on which the q,k,v and gate,up scale candidates are evaluated; statistics, v→o / up→down losses and the forward use all tokens (default 4096; see docs/quantization.md)', posInt)
    .addOption(new Option('--alpha-search <how>', 'AWQ: walk the scale exponent grid coarse-fine (every 4th α, then the neighbours of the best: 11 of 20 candidates, the same α when the loss is unimodal) or the whole grid (llm-awq)').choices(['coarse-fine', 'grid']).default(DEFAULT_ALPHA_SEARCH))
    .addOption(new Option('--layer-input <which>', "AWQ: each layer's calibration input is the previous FP layer's output (AutoAWQ, llm-awq) or the previous quantized layer's (one more forward per layer)").choices(['fp', 'quantized']).default(DEFAULT_LAYER_INPUT))
    .addOption(new Option('--precision <p>', 'AWQ: products of the calibration forwards and candidate losses: bf16 inputs with f32 sums, f32, or auto (bf16 where the CPU has AVX512-BF16 and the hidden size is 1024 or more)').choices(['auto', 'bf16', 'f32']).default('auto'))
    .option('--no-clip', 'skip the AWQ clipping search')
    .option('--clip-linears <names>', 'comma list of linears to clip (default v_proj,o_proj,gate_proj,up_proj,down_proj; see docs/quantization.md)')
    .addOption(new Option('--v-clip-error <where>', "where v_proj's clip error is measured: after attention averaging (what o_proj sees) or per token (llm-awq)").choices(['attention', 'token']).default('attention'))
    .addOption(new Option('--backend <b>', 'backend of the AWQ products: auto (CUDA when usable), cpu or cuda').choices(['auto', 'cpu', 'cuda']).default('auto'))
    .option('--holdout <n>', 'AWQ: calibration blocks held out of the search; each layer keeps AWQ or RTN, whichever errs less on them (default samples/8, 0: off)', (v: string) => {
      if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError('expected an integer >= 0');
      return Number(v);
    })
    .option('--pad-ffn', 'zero-pad the FFN intermediate size to a multiple of the group so down_proj can be quantized')
    .option('--fake-quant', 'write the quantize-dequantize weights as F32 (always so for --bits 2 and 3)');
}

/** True when the quantize command must go through the AWQ module. */
export function needsAwqQuantizer(o: { method: string; bits: number; padFfn?: boolean; fakeQuant?: boolean }): boolean {
  return o.method === 'awq' || o.bits !== 4 || o.padFfn === true || o.fakeQuant === true;
}

function layerLine(r: LayerReport): string {
  const sc = r.scales.map((s) => `${s.name.split('→')[1]} a=${s.alpha.toFixed(2)}`).join(' ');
  const rtn = r.rtnOutputMse !== undefined ? ` (rtn ${r.rtnOutputMse.toExponential(2)})` : '';
  const mseText = r.outputMse !== null && Number.isFinite(r.outputMse) ? `, out mse ${r.outputMse.toExponential(2)}${rtn}` : '';
  const fb = r.fallback
    ? `, held-out mse awq ${r.fallback.awqMse.toExponential(2)} rtn ${r.fallback.rtnMse.toExponential(2)}${r.fallback.choice === 'rtn' ? ' → RTN kept' : ''}`
    : '';
  return `layer ${r.layer}: ${r.seconds.toFixed(1)} s${mseText}${fb}${sc ? ', ' + sc : ''}`;
}

export async function runAwqQuantize(o: AwqCliOpts): Promise<AwqQuantizeResult> {
  if (o.method !== 'awq' && o.method !== 'rtn') throw new ShoalError('SHOAL_ERR_INVALID_ARG', `unknown --method ${o.method}; use rtn or awq`);
  let sep: RegExp | undefined;
  if (o.calibSep !== undefined) {
    try {
      sep = new RegExp(o.calibSep);
    } catch (err) {
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--calib-sep ${o.calibSep} is not a valid regular expression: ${(err as Error).message}`);
    }
  }
  if (o.method === 'rtn' && o.calib?.length) process.stderr.write('note: --calib is only used by --method awq\n');
  const tty = !o.json && process.stderr.isTTY;
  const bar = tty
    ? new cliProgress.SingleBar({
      stream: process.stderr, hideCursor: true, etaBuffer: 4,
      format: `${o.method} w${o.bits}g${o.group} [{bar}] {value}/{total} layers | ETA {eta_formatted} | {stage}`,
    }, cliProgress.Presets.shades_classic)
    : null;
  let started = false;
  try {
    const r = await quantizeAwqModel({
      model: o.model, out: o.out, method: o.method, bits: o.bits, groupSize: o.group, dtype: o.dtype, force: o.force ?? false,
      ...(o.calib ? { calib: o.calib } : {}), ...(sep ? { calibSep: sep } : {}),
      samples: o.samples, seqlen: o.seqlen, duoScaling: o.duoScaling ?? false, padFfn: o.padFfn ?? false,
      clip: o.clip, ...(o.clipLinears ? { clipLinears: o.clipLinears.split(',').map((x) => x.trim()) } : {}), fakeQuant: o.fakeQuant ?? false, backend: o.backend,
      clipVAttention: o.vClipError === 'attention', alphaSearch: o.alphaSearch, layerInput: o.layerInput, precision: o.precision, ...(o.holdout !== undefined ? { holdout: o.holdout } : {}),
      ...(o.searchTokens !== undefined ? { searchTokens: o.searchTokens } : {}),
      onStage: (l, stage) => {
        if (!bar) return;
        if (!started) {
          bar.start(1, 0, { stage: '' });
          started = true;
        }
        bar.update({ stage: `layer ${l}: ${stage}` });
      },
      onLayer: (rep, total) => {
        if (!bar) return;
        bar.setTotal(total);
        bar.update(rep.layer + 1, { stage: '' });
        // keep a line per layer above the bar
        bar.stop();
        process.stderr.write(layerLine(rep) + '\n');
        if (rep.layer + 1 < total) bar.start(total, rep.layer + 1, { stage: '' });
        else started = false;
      },
    });
    if (r.note && !o.json) process.stderr.write(r.note + '\n');
    if (o.json) {
      process.stdout.write(JSON.stringify(r) + '\n');
    } else {
      if (!tty) for (const l of r.layers) process.stdout.write(layerLine(l) + '\n');
      const kind = r.fakeQuant ? 'fake-quantized (F32 quantize-dequantize)' : 'AutoAWQ gemm';
      process.stdout.write(
        `${r.method} w${r.bits} g${r.groupSize} ${kind}: ${r.quantizedLinears} linears quantized, ${r.keptLinears} kept`
        + (r.modulesToNotConvert.length ? ` (not converted: ${r.modulesToNotConvert.join(', ')})` : '')
        + (r.paddedIntermediateSize ? `; FFN padded ${r.intermediateSize} → ${r.paddedIntermediateSize}` : '') + '\n'
        + (r.calibration ? `calibration: ${r.calibration.samples} × ${r.calibration.seqlen} tokens from ${r.calibration.documents} documents`
          + (r.calibration.heldOutTokens ? `, ${r.calibration.heldOutTokens} held out${r.calibration.heldOutFromSamples ? ' (taken from the samples: too little text for both)' : ''}` : '')
          + `; scale candidates of q,k,v and gate,up on ${r.calibration.searchTokens} of them (--search-tokens)`
          + `; backend ${r.backend?.backend}/${r.backend?.isa} ×${r.backend?.threads}\n` : '')
        + (r.method === 'awq' && r.calibration?.heldOutTokens
          ? (r.rtnFallbackLayers.length ? `RTN kept for layer${r.rtnFallbackLayers.length > 1 ? 's' : ''} ${r.rtnFallbackLayers.join(', ')} (lower held-out error than AWQ)\n` : 'AWQ kept for every layer (held-out error at or below RTN)\n')
          : '')
        + `wrote ${r.files.join(', ')} to ${r.dir} in ${r.seconds.toFixed(1)} s (peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB)\n`);
    }
    return r;
  } finally {
    if (started) bar?.stop();
  }
}


