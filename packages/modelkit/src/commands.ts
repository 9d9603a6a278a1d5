// commands.ts — model tooling commands: `shoal gen-model`, `shoal quantize`,
// `shoal eval ppl`, `shoal eval layer-error`, `shoal pull`. --model takes a folder or org/name[@revision] from the
// Hugging Face cache.
import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import cliProgress from 'cli-progress';
import { evaluatePerplexity, formatPplLine } from './eval/ppl.js';
import { generateModel, QUANT_NAMES } from './synth/gen-model.js';
import { SHAPE_NAMES, type FloatDType, type ModelShape, type ShapeName } from './arch/model-shapes.js';
import { checkQuantizeOptions, quantizeModel } from './quant/rtn.js';
import { addAwqQuantizeOptions, needsAwqQuantizer, runAwqQuantize, type AwqCliOpts } from './quant/awq/cli.js';
import { resolveModelArg } from '@shoal/common';
import { addGptqQuantizeOptions, runLowbitQuantize, type LowbitCliOpts } from './quant/gptq/cli.js';
import type { Isa, LoadOptions, Model } from '@shoal/engine';
import { ShoalError } from '@shoal/common';

function intArg(min: number) {
  return (v: string): number => {
    if (!/^\d+$/.test(v.trim())) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n < min) throw new InvalidArgumentError(`expected an integer >= ${min}`);
    return n;
  };
}

/** A group size: a positive integer, or -1 (one group over all inputs: GPTQ group -1, compressed-tensors channel). */
function groupArg(v: string): number {
  if (v.trim() === '-1') return -1;
  return intArg(1)(v);
}

/** A progress bar on stderr when it is a terminal and output is not JSON. */
function progressBar(enabled: boolean, format: string): { update(done: number, total: number, payload?: Record<string, string>): void; stop(): void } {
  if (!enabled || !process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar({ stream: process.stderr, format, hideCursor: true, etaBuffer: 50 }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(done, total, payload) {
      if (!started) {
        bar.start(total, 0, payload);
        started = true;
      }
      bar.setTotal(total);
      bar.update(done, payload);
    },
    stop() {
      if (started) bar.stop();
    },
  };
}

function formatBytes(n: number): string {
  if (n >= 1024 ** 3) return `${(n / 1024 ** 3).toFixed(2)} GiB`;
  if (n >= 1024 ** 2) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024).toFixed(1)} KiB`;
}

/** Loads the engine lazily (the addon is only needed by `eval`). */
async function loadEngineModel(dir: string, opts: LoadOptions): Promise<Model> {
  const spec = '@shoal/engine';
  let mod: { loadModel?: (dir: string, opts?: LoadOptions) => Promise<Model> };
  try {
    mod = (await import(spec)) as typeof mod;
  } catch (err) {
    throw new ShoalError('SHOAL_ERR_BACKEND', `the inference engine is not available (${(err as Error).message}); build it with \`make native\``);
  }
  if (typeof mod.loadModel !== 'function') throw new ShoalError('SHOAL_ERR_BACKEND', 'the engine module has no loadModel; rebuild with `make`');
  return mod.loadModel(dir, opts);
}

interface GenModelCliOpts {
  shape: ShapeName; quant: string; out: string; seed: number; dtype: FloatDType;
  tokenizer?: string; layers?: number; vocab?: number; force?: boolean; json?: boolean;
}

interface QuantizeCliOpts {
  method: string; bits: number; group: number; model: string; out: string; dtype: FloatDType; force?: boolean; json?: boolean;
  format?: string; sym?: boolean;
}

interface LayerErrorCliOpts {
  model: string; reference: string; text: string[]; textSep?: string; samples: number; seqlen: number; json?: boolean;
}

interface PplCliOpts {
  model: string; text: string; ctx?: number; stride?: number; threads?: number; isa?: Isa; limit?: number; json?: boolean;
}

export function registerToolCommands(program: Command): void {
  program
    .command('gen-model')
    .description('write a synthetic random-weight checkpoint with a real LLaMA-family shape (HF layout, optional AutoAWQ INT4)')
    .addOption(new Option('--shape <name>', 'model shape').choices(SHAPE_NAMES).makeOptionMandatory())
    .addOption(new Option('--quant <q>', 'quantization').choices(QUANT_NAMES).default('none'))
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .option('--seed <n>', 'random seed', intArg(0), 0)
    .addOption(new Option('--dtype <t>', 'storage dtype of unquantized tensors').choices(['f16', 'f32', 'bf16']).default('f16'))
    .option('--tokenizer <dir>', 'copy tokenizer.json, tokenizer_config.json, special_tokens_map.json from this folder')
    .option('--layers <n>', 'override the number of layers (tests)', intArg(1))
    .option('--vocab <n>', 'override the vocabulary size', intArg(1))
    .option('--force', 'replace a non-empty output folder')
    .option('--json', 'print the result as JSON')
    .action((o: GenModelCliOpts) => {
      const overrides: Partial<ModelShape> = {};
      if (o.layers !== undefined) overrides.layers = o.layers;
      if (o.vocab !== undefined) overrides.vocabSize = o.vocab;
      const bar = progressBar(!o.json, 'gen-model [{bar}] {percentage}% | {value}/{total} bytes | ETA {eta}s');
      let r;
      try {
        r = generateModel({
          out: o.out, shape: o.shape, quant: o.quant, seed: o.seed, dtype: o.dtype, overrides,
          ...(o.tokenizer ? { tokenizerDir: o.tokenizer } : {}), force: o.force ?? false,
          onProgress: (d, t) => bar.update(d, t),
        });
      } finally {
        bar.stop();
      }
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      const s = r.shape;
      process.stdout.write(
        `${s.arch} ${o.shape}: ${s.layers} layers, hidden ${s.hiddenSize}, ffn ${s.intermediateSize}, heads ${s.heads}/${s.kvHeads}, vocab ${s.vocabSize}\n`
        + `quant ${r.quant}, dtype ${r.dtype}, seed ${r.seed}, ${(r.parameters / 1e6).toFixed(2)}M parameters`
        + (r.modulesToNotConvert.length ? ` (not converted: ${r.modulesToNotConvert.join(', ')})` : '') + '\n'
        + `wrote ${r.files.join(', ')} (${formatBytes(r.bytes)}) to ${r.dir} in ${r.seconds.toFixed(1)} s\n`);
    });

  addGptqQuantizeOptions(addAwqQuantizeOptions(program
    .command('quantize')))
    .description('quantize an F32/F16/BF16 checkpoint: INT4 AutoAWQ gemm, or 2/3/4/8-bit GPTQ / EfficientQAT layouts')
    .option('--method <m>', 'rtn (round to nearest), gptq (GPTQ, calibrated; writes the GPTQ layout) or awq (activation-aware); gptq and awq need --calib', 'rtn')
    .option('--bits <n>', 'bits per weight: 4 (AutoAWQ gemm); 2 or 3 write a fake-quantized F32 checkpoint (packed low-bit: --format)', intArg(1), 4)
    .option('--group <n>', 'group size (input channels per scale); -1 for low-bit formats: one scale per output row (compressed-tensors channel)', groupArg, 128)
    .requiredOption('--model <dir>', 'unquantized Hugging Face model folder, or org/name[@revision] from the Hugging Face cache')
    .requiredOption('--out <dir>', 'output folder (written atomically)')
    .addOption(new Option('--dtype <t>', 'storage dtype of tensors left unquantized').choices(['f16', 'f32', 'bf16']).default('f16'))
    .option('--force', 'replace a non-empty output folder')
    .option('--json', 'print the result as JSON')
    .addOption(new Option('--format <f>', 'awq (gemm, 4-bit), a low-bit layout (--bits 2|3|4|8, docs/lowbit.md): gptq (gptq_v2 zeros), gptq-v1, eqat; or compressed-tensors (llm-compressor pack-quantized, --bits 4|8, docs/formats.md); --method gptq defaults to gptq-v1').choices(['awq', 'gptq', 'gptq-v1', 'eqat', 'compressed-tensors']).default('awq'))
    .option('--sym', 'low-bit formats: symmetric zero points (AutoGPTQ sym=True; compressed-tensors symmetric: no zero points stored)')
    .action(async (o: QuantizeCliOpts) => {
      o.model = resolveModelArg(o.model);
      if ((o.format && o.format !== 'awq') || o.method === 'gptq') {
        await runLowbitQuantize(o as unknown as LowbitCliOpts);
        return;
      }
      if (needsAwqQuantizer(o as unknown as AwqCliOpts)) {
        await runAwqQuantize(o as unknown as AwqCliOpts);
        return;
      }
      checkQuantizeOptions({ method: o.method, bits: o.bits, groupSize: o.group, dtype: o.dtype });
      const bar = progressBar(!o.json, 'quantize [{bar}] {percentage}% | {value}/{total} tensors | ETA {eta}s');
      let r;
      try {
        r = quantizeModel({
          model: o.model, out: o.out, method: o.method, bits: o.bits, groupSize: o.group, dtype: o.dtype,
          force: o.force ?? false, onProgress: (d, t) => bar.update(d, t),
        });
      } finally {
        bar.stop();
      }
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      if (r.note) process.stderr.write(r.note + '\n');
      process.stdout.write(
        `rtn int4 g${r.groupSize}: ${r.quantizedLinears} linears quantized, ${r.keptLinears} kept in ${r.dtype}`
        + (r.modulesToNotConvert.length ? ` (modules_to_not_convert: ${r.modulesToNotConvert.join(', ')})` : '') + '\n'
        + `mean relative weight error ${r.meanRelativeError.toFixed(4)}\n`
        + `wrote ${r.files.join(', ')} (${formatBytes(r.bytesOut)}, source ${formatBytes(r.bytesIn)}) to ${r.dir} in ${r.seconds.toFixed(1)} s\n`);
    });

  let evalCmd = program.commands.find((c) => c.name() === 'eval');
  if (!evalCmd) evalCmd = program.command('eval').description('evaluate models');
  evalCmd
    .command('ppl')
    .description('perplexity of a model on a text file (sliding windows)')
    .requiredOption('--model <dir>', 'model folder (with tokenizer.json), or org/name[@revision] from the Hugging Face cache')
    .requiredOption('--text <file>', 'UTF-8 text file')
    .option('--ctx <n>', 'positions per window incl. BOS (default min(512, context length))', intArg(2))
    .option('--stride <n>', 'tokens between window starts, at most ctx - 1 (default ctx - 1: windows do not overlap)', intArg(1))
    .option('--threads <n>', 'CPU threads (default all cores)', intArg(0))
    .addOption(new Option('--isa <isa>', 'CPU kernels').choices(['auto', 'scalar', 'avx2', 'avx512', 'neon', 'neon-dotprod']))
    .option('--limit <n>', 'score only the first N tokens of the text', intArg(1))
    .option('--json', 'print the result as JSON')
    .action(async (o: PplCliOpts) => {
      let text: string;
      try {
        text = readFileSync(o.text, 'utf8');
      } catch (err) {
        throw new ShoalError('SHOAL_ERR_IO', `cannot read --text ${o.text}: ${(err as Error).message}`);
      }
      const loadOpts: LoadOptions = {};
      if (o.threads !== undefined) loadOpts.threads = o.threads;
      if (o.isa !== undefined) loadOpts.isa = o.isa;
      const model = await loadEngineModel(resolveModelArg(o.model), loadOpts);
      try {
        if (!model.tokenizer) throw new ShoalError('SHOAL_ERR_CONFIG', `${o.model} has no tokenizer.json; perplexity needs the model's tokenizer`);
        let ids = model.tokenizer.encode(text, { addSpecialTokens: false });
        if (o.limit !== undefined) ids = ids.slice(0, o.limit);
        const bar = progressBar(!o.json, 'ppl [{bar}] {percentage}% | {value}/{total} tokens | ETA {eta}s');
        let r;
        try {
          r = await evaluatePerplexity(model, ids, {
            ...(o.ctx !== undefined ? { ctx: o.ctx } : {}),
            ...(o.stride !== undefined ? { stride: o.stride } : {}),
            onProgress: (d, t) => bar.update(d, t),
          });
        } finally {
          bar.stop();
        }
        if (o.json) {
          process.stdout.write(JSON.stringify({ model: o.model, text: o.text, quant: model.info.quant, isa: model.info.isa, ...r }) + '\n');
        } else {
          process.stdout.write(`${model.info.arch} ${model.info.quant} on ${model.info.backend}/${model.info.isa}: ctx ${r.ctx}, stride ${r.stride}, ${r.windows} windows, ${r.tokensPerSecond.toFixed(0)} tok/s\n`);
          process.stdout.write(formatPplLine(r) + '\n');
        }
      } finally {
        model.dispose();
      }
    });

  evalCmd
    .command('layer-error')
    .description('per-layer error of a quantized checkpoint against its FP model: ‖ŷ−y‖²/‖y−x‖² of each decoder layer on the FP input (any method or format)')
    .requiredOption('--model <dir>', 'quantized model folder (AutoAWQ gemm, GPTQ, or a float / fake-quantized checkpoint), or org/name[@revision]')
    .requiredOption('--reference <dir>', 'the FP model it was quantized from (its tokenizer.json tokenizes --text)')
    .requiredOption('--text <files...>', 'UTF-8 text; the held-out blocks are cut from its end (calibration takes the start)')
    .option('--text-sep <regex>', 'split the text into documents at this regex (BOS before each)', '\\n\\s*\\n')
    .option('--samples <n>', 'held-out blocks', intArg(1), 8)
    .option('--seqlen <n>', 'tokens per block', intArg(1), 512)
    .option('--json', 'print the result as JSON')
    .action(async (o: LayerErrorCliOpts) => {
      let sep: RegExp;
      try {
        sep = new RegExp(o.textSep ?? '\\n\\s*\\n');
      } catch (err) {
        throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--text-sep ${o.textSep} is not a valid regular expression: ${(err as Error).message}`);
      }
      // imported here: only this command needs the layer forward and the format readers
      const { measureLayerError, formatLayerErrorLine } = await import('./eval/layer-error.js');
      const bar = progressBar(!o.json, 'layer-error [{bar}] {value}/{total} layers | ETA {eta}s');
      let r;
      try {
        r = await measureLayerError({
          model: resolveModelArg(o.model), reference: resolveModelArg(o.reference), text: o.text, sep, samples: o.samples, seqlen: o.seqlen,
          onLayer: (rep, total) => bar.update(rep.layer + 1, total),
        });
      } finally {
        bar.stop();
      }
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      process.stdout.write(`${o.model} (${r.format.label}) vs ${o.reference}: ${r.samples} × ${r.seqlen} held-out tokens, `
        + `documents ${r.documents.first}..${r.documents.first + r.documents.count - 1} of ${r.documents.total} (the end of the text)\n`);
      for (const l of r.layers) process.stdout.write(formatLayerErrorLine(l) + '\n');
      if (r.layers.some((l) => l.linearsNote)) process.stdout.write(`per-linear errors not reported: ${r.layers.find((l) => l.linearsNote)!.linearsNote}\n`);
      process.stdout.write(`mean over ${r.layers.length} layers ${r.meanRelError.toExponential(3)}, all layers together ${r.totalRelError.toExponential(3)} (${r.seconds.toFixed(1)} s)\n`);
    });

  program
    .command('pull')
    .description('download a model from the Hugging Face Hub into the Hugging Face cache (resumable, sha256-checked)')
    .argument('<repo>', 'org/name or org/name@revision (branch, tag or commit)')
    .option('--include <glob...>', 'only files matching these patterns (fnmatch: * also crosses /), e.g. "*.json" "*.safetensors"')
    .option('--exclude <glob...>', 'skip files matching these patterns, e.g. "*.bin" "original/*"')
    .option('--cache-dir <dir>', 'cache folder (default $HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub)')
    .option('--jobs <n>', 'files downloaded at once', intArg(1), 4)
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nEnvironment: HF_TOKEN (gated or private models), HF_ENDPOINT (a mirror, default https://huggingface.co).\n'
      + 'The snapshot folder it prints works as --model, and so does the repo name: shoal run -m org/name.')
    .action(async (repo: string, o: { include?: string[]; exclude?: string[]; cacheDir?: string; jobs: number; json?: boolean }) => {
      const bar = progressBar(!o.json, 'pull [{bar}] {percentage}% | {value}/{total} bytes | {files} | ETA {eta}s');
      // imported here: @huggingface/hub is large, and every other shoal command starts without it
      const { pullModel } = await import('./hub/pull.js');
      let r;
      try {
        r = await pullModel({
          spec: repo, jobs: o.jobs,
          ...(o.include ? { include: o.include } : {}), ...(o.exclude ? { exclude: o.exclude } : {}),
          ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
          onProgress: (p) => bar.update(p.bytesDone, p.bytesTotal, { files: `${p.filesDone}/${p.filesTotal} files` }),
        });
      } finally {
        bar.stop();
      }
      if (o.json) {
        process.stdout.write(JSON.stringify(r) + '\n');
        return;
      }
      const count = (s: string) => r.files.filter((f) => f.status === s).length;
      process.stdout.write(`${r.repo}@${r.revision} (commit ${r.commit.slice(0, 12)}): ${r.files.length} files, `
        + `${count('downloaded')} downloaded, ${count('resumed')} resumed, ${count('cached')} already cached; `
        + `${formatBytes(r.bytesDownloaded)} in ${r.seconds.toFixed(1)} s\n${r.snapshot}\n`);
    });
}
