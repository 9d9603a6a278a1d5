// cli-options.ts — option parsing shared by the engine's commands.
import { InvalidArgumentError, Option, type Command } from 'commander';
import { KV_CACHE_TYPES, LM_HEAD_MODES, PRECISIONS } from './types.js';
import type { Backend, GenerateOptions, Isa, KvCacheType, LmHeadMode, LoadOptions, Precision } from './types.js';

export function intArg(name: string, min = -Infinity) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer${min > -Infinity ? ` >= ${min}` : ''}, got '${v}'`);
    return n;
  };
}

export function numArg(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number, got '${v}'`);
    return n;
  };
}

export function addLoadOptions(cmd: Command): Command {
  return cmd
    .requiredOption('-m, --model <dir>', 'Hugging Face model directory (config.json + safetensors), or org/name[@revision] from the Hugging Face cache (shoal pull)')
    .option('-t, --threads <n>', 'CPU threads (0 = all cores)', intArg('--threads', 0), 0)
    .option('--backend <name>', 'auto | cpu | cuda', 'auto')
    .option('--isa <name>', 'CPU kernels: auto | scalar | avx2 | avx512 | neon | neon-dotprod', 'auto')
    .addOption(new Option('--kv-cache <type>', 'KV cache: f16 | f32 | q8 (int8, CPU only)').choices(KV_CACHE_TYPES).default('f16'))
    .addOption(new Option('--lm-head <mode>', 'output matrix: auto (q8 where it applies) | q8 (int8, half the bytes of f16) | native (as stored)').choices(LM_HEAD_MODES).default('auto'))
    .addOption(new Option('--precision <p>', 'quantized linears: fast (int8 activations) | exact (f32 math, for checks against a float64 reference; CPU)').choices(PRECISIONS).default('fast'))
    .option('--expert-cache <file>', 'MoE: file of the repacked experts, mapped so only routed experts are resident: auto (under $SHOAL_CACHE_DIR or ~/.cache/shoal) | off | a path', 'auto');
}

export function addSamplingOptions(cmd: Command): Command {
  return cmd
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', numArg('--temperature'), 0)
    .option('--top-k <k>', 'keep the k most likely tokens (0 = off)', intArg('--top-k', 0), 0)
    .option('--top-p <p>', 'nucleus sampling mass (1 = off)', numArg('--top-p'), 1)
    .option('--min-p <p>', 'drop tokens below p × the top probability (0 = off)', numArg('--min-p'), 0)
    .option('--repeat-penalty <r>', 'repetition penalty (1 = off)', numArg('--repeat-penalty'), 1)
    .option('--repeat-last-n <n>', 'tokens the penalty looks back over (-1 = all)', intArg('--repeat-last-n', -1), 64)
    .option('--seed <n>', 'random seed (same seed, same output)', intArg('--seed', 0), 0)
    .option('-n, --max-tokens <n>', 'tokens to generate at most', intArg('--max-tokens', 0), 256);
}

export interface LoadFlags { model: string; threads: number; backend: string; isa: string; kvCache: string; lmHead: string; expertCache?: string; precision?: string }
export interface SamplingFlags {
  temperature: number; topK: number; topP: number; minP: number; repeatPenalty: number;
  repeatLastN: number; seed: number; maxTokens: number;
}

export const loadOptions = (f: LoadFlags): LoadOptions => ({
  threads: f.threads, backend: f.backend as Backend, isa: f.isa as Isa,
  kvCache: f.kvCache as KvCacheType, lmHead: f.lmHead as LmHeadMode,
  ...(f.expertCache !== undefined ? { expertCache: f.expertCache } : {}),
  ...(f.precision !== undefined ? { precision: f.precision as Precision } : {}),
});

export const generateOptions = (f: SamplingFlags): GenerateOptions => ({
  temperature: f.temperature, topK: f.topK, topP: f.topP, minP: f.minP, repeatPenalty: f.repeatPenalty,
  repeatLastN: f.repeatLastN, seed: f.seed, maxTokens: f.maxTokens,
});
