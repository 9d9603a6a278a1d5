// io/hf-folder.ts — the Hugging Face model folder around the weights: config.json,
// generation_config.json and the tokenizer files, read by every quantizer and
// written by every model writer.
import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseModelConfig } from '../arch/model-shapes.js';
import { writeFileAtomicSync, ShoalError } from '@shoal/common';

function readJson(file: string): unknown {
  try {
    return JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new ShoalError('SHOAL_ERR_CONFIG', `cannot read ${file}: ${(err as Error).message}; --model must be a Hugging Face model folder`);
  }
}

/** config.json (an object) and generation_config.json (null when absent) of a model folder, as JSON. */
export function readFolderJson(dir: string): { config: Record<string, unknown>; gen: unknown; cfgPath: string } {
  const cfgPath = path.join(dir, 'config.json');
  if (!existsSync(cfgPath)) throw new ShoalError('SHOAL_ERR_CONFIG', `${dir} has no config.json; --model must be a Hugging Face model folder`);
  const config = readJson(cfgPath);
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new ShoalError('SHOAL_ERR_CONFIG', `${cfgPath} is not a JSON object`);
  const genPath = path.join(dir, 'generation_config.json');
  const gen = existsSync(genPath) ? readJson(genPath) : null;
  return { config: config as Record<string, unknown>, gen, cfgPath };
}

/** config.json (+ generation_config.json) of a Hugging Face model folder, parsed. */
export function readModelFolder(dir: string): { config: Record<string, unknown>; gen: unknown } & ReturnType<typeof parseModelConfig> {
  const { config, gen, cfgPath } = readFolderJson(dir);
  return { config, gen, ...parseModelConfig(config, gen, cfgPath) };
}

/** Vocabulary size a tokenizer.json needs (largest id + 1). */
export function tokenizerVocabSize(tokenizerJsonPath: string): number {
  let j: { model?: { vocab?: unknown }; added_tokens?: Array<{ id?: unknown }> };
  try {
    j = JSON.parse(readFileSync(tokenizerJsonPath, 'utf8')) as typeof j;
  } catch (err) {
    throw new ShoalError('SHOAL_ERR_IO', `cannot read ${tokenizerJsonPath}: ${(err as Error).message}`);
  }
  let max = -1;
  const vocab = j.model?.vocab;
  if (Array.isArray(vocab)) max = vocab.length - 1;
  else if (vocab && typeof vocab === 'object') {
    for (const v of Object.values(vocab as Record<string, unknown>)) if (typeof v === 'number' && v > max) max = v;
  }
  for (const t of j.added_tokens ?? []) if (typeof t.id === 'number' && t.id > max) max = t.id;
  if (max < 0) throw new ShoalError('SHOAL_ERR_CONFIG', `${tokenizerJsonPath}: no vocabulary found`);
  return max + 1;
}

export const TOKENIZER_FILES = ['tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json'] as const;

/** Copies the tokenizer files present in src (tokenizer.json is required). */
export function copyTokenizerFiles(srcDir: string, dstDir: string, required = true): string[] {
  if (!existsSync(path.join(srcDir, 'tokenizer.json'))) {
    if (!required) return [];
    throw new ShoalError('SHOAL_ERR_IO', `${srcDir} has no tokenizer.json; point --tokenizer at a Hugging Face tokenizer folder`);
  }
  const copied: string[] = [];
  for (const f of TOKENIZER_FILES) {
    const src = path.join(srcDir, f);
    if (existsSync(src)) {
      copyFileSync(src, path.join(dstDir, f));
      copied.push(f);
    }
  }
  return copied;
}

/**
 * The metadata tail every model writer shares: config.json, generation_config.json
 * (when the source has one) and the tokenizer files of tokenizerFrom, written
 * into the temporary output folder. Returns the file names written.
 */
export function writeModelMetadata(tmp: string, config: Record<string, unknown>, gen: unknown, tokenizerFrom: string): string[] {
  writeFileAtomicSync(path.join(tmp, 'config.json'), JSON.stringify(config, null, 2) + '\n');
  const files = ['config.json'];
  if (gen !== null && gen !== undefined) {
    writeFileAtomicSync(path.join(tmp, 'generation_config.json'), JSON.stringify(gen, null, 2) + '\n');
    files.push('generation_config.json');
  }
  files.push(...copyTokenizerFiles(tokenizerFrom, tmp, false));
  return files;
}
