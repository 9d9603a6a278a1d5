// awq/calib.ts — calibration data: text documents tokenized with the model's
// tokenizer, BOS before each document, concatenated and cut into `samples`
// blocks of `seqlen` tokens (as AutoAWQ's get_calib_dataset concatenates its
// samples and splits them into max_seq_len blocks).
import { readFileSync } from 'node:fs';
import type { Tokenizer } from '@shoal/engine';
import { ShoalError } from '@shoal/common';

export interface CalibrationOptions {
  samples: number;
  seqlen: number;
}

export interface Calibration {
  /** [samples * seqlen] token ids, block after block */
  tokens: Int32Array;
  samples: number;
  seqlen: number;
  documents: number;
  /** tokens available before cutting (BOS included) */
  availableTokens: number;
}

/** Reads calibration files and splits each into documents at `sep` (none: one document per file). */
export function readCalibDocuments(files: readonly string[], sep?: RegExp): string[] {
  if (files.length === 0) throw new ShoalError('SHOAL_ERR_INVALID_ARG', 'AWQ needs calibration text: pass --calib FILE (one or more UTF-8 text files)');
  const docs: string[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch (err) {
      throw new ShoalError('SHOAL_ERR_IO', `cannot read --calib ${f}: ${(err as Error).message}`);
    }
    for (const d of sep ? text.split(sep) : [text]) if (d.trim().length > 0) docs.push(d.trim());
  }
  return docs;
}

/** Tokenizes documents (BOS before each when the tokenizer has one) and cuts samples × seqlen blocks. */
export function buildCalibration(docs: readonly string[], tok: Tokenizer, opts: CalibrationOptions): Calibration {
  const { samples, seqlen } = opts;
  if (!Number.isSafeInteger(samples) || samples < 1) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--samples ${samples} must be a positive integer`);
  if (!Number.isSafeInteger(seqlen) || seqlen < 2) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seqlen ${seqlen} must be an integer >= 2`);
  const need = samples * seqlen;
  const ids: number[] = [];
  let used = 0;
  for (const d of docs) {
    if (ids.length >= need) break;
    if (tok.bosTokenId !== null) ids.push(tok.bosTokenId);
    for (const t of tok.encode(d, { addSpecialTokens: false })) ids.push(t);
    used++;
  }
  if (ids.length < need) {
    throw new ShoalError('SHOAL_ERR_CALIB_TOO_SHORT',
      `the calibration text gives ${ids.length} tokens but ${samples} samples × ${seqlen} tokens = ${need} are needed; add --calib files or lower --samples/--seqlen`);
  }
  return { tokens: Int32Array.from(ids.slice(0, need)), samples, seqlen, documents: used, availableTokens: ids.length };
}
