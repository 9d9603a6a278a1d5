// awq/calib.ts — calibration data: text documents tokenized with the model's
// tokenizer, BOS before each document, concatenated and cut into `samples`
// blocks of `seqlen` tokens (as AutoAWQ's get_calib_dataset concatenates its
// samples and splits them into max_seq_len blocks).
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { HfModelTokenizer, type Tokenizer } from '@shoal/engine';
import type { ModelShape } from '../../arch/model-shapes.js';
import { ShoalError } from '@shoal/common';

export interface CalibrationOptions {
  samples: number;
  seqlen: number;
  /** extra blocks kept out of the search to check its result (taken from the samples when the text runs short) */
  holdout?: number;
}

export interface Calibration {
  /** [samples * seqlen] token ids, block after block */
  tokens: Int32Array;
  samples: number;
  seqlen: number;
  documents: number;
  /** tokens available before cutting (BOS included) */
  availableTokens: number;
  /** held-out blocks [holdout · seqlen] (null: none asked) */
  heldOut: Int32Array | null;
  /** true when the held-out blocks were taken from the requested samples (too little text for both) */
  heldOutFromSamples: boolean;
}

/** Reads calibration files and splits each into documents at `sep` (none: one document per file). */
export function readCalibDocuments(files: readonly string[], sep?: RegExp): string[] {
  if (files.length === 0) throw new ShoalError('SHOAL_ERR_INVALID_ARG', 'calibration text is needed: pass --calib FILE (one or more UTF-8 text files)');
  const docs: string[] = [];
  for (const f of files) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch (err) {
      throw new ShoalError('SHOAL_ERR_IO', `cannot read --calib ${f}: ${(err as Error).message}`);
    }
    if (text.trim().length === 0) throw new ShoalError('SHOAL_ERR_CALIB_EMPTY', `--calib ${f} is empty (no text); pass a UTF-8 text file with calibration text`);
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
  const hold = Math.max(0, opts.holdout ?? 0);
  const want = need + hold * seqlen;
  const ids: number[] = [];
  let used = 0;
  for (const d of docs) {
    if (ids.length >= want) break;
    if (tok.bosTokenId !== null) ids.push(tok.bosTokenId);
    for (const t of tok.encode(d, { addSpecialTokens: false })) ids.push(t);
    used++;
  }
  if (ids.length < need) {
    throw new ShoalError('SHOAL_ERR_CALIB_TOO_SHORT',
      `the calibration text gives ${ids.length} tokens but ${samples} samples × ${seqlen} tokens = ${need} are needed; add --calib files or lower --samples/--seqlen`);
  }
  if (hold === 0) return { tokens: Int32Array.from(ids.slice(0, need)), samples, seqlen, documents: used, availableTokens: ids.length, heldOut: null, heldOutFromSamples: false };
  if (ids.length >= want) {
    return {
      tokens: Int32Array.from(ids.slice(0, need)), samples, seqlen, documents: used, availableTokens: ids.length,
      heldOut: Int32Array.from(ids.slice(need, want)), heldOutFromSamples: false,
    };
  }
  // too little text for both: the last blocks of the samples are held out (at least one block stays for the search)
  const h = Math.min(hold, samples - 1);
  if (h < 1) return { tokens: Int32Array.from(ids.slice(0, need)), samples, seqlen, documents: used, availableTokens: ids.length, heldOut: null, heldOutFromSamples: false };
  return {
    tokens: Int32Array.from(ids.slice(0, (samples - h) * seqlen)), samples: samples - h, seqlen, documents: used, availableTokens: ids.length,
    heldOut: Int32Array.from(ids.slice((samples - h) * seqlen, need)), heldOutFromSamples: true,
  };
}

export interface LoadCalibrationOptions {
  model: string;
  shape: ModelShape;
  calib?: readonly string[];
  calibDocs?: readonly string[];
  calibSep?: RegExp;
  samples: number;
  seqlen: number;
  holdout?: number;
  /** method name for the messages (awq, gptq) */
  method: string;
}

/**
 * Everything the calibrated quantizers check before any work: the model's
 * tokenizer, non-empty calibration files, seqlen within the context, enough
 * tokens for samples × seqlen, ids inside the vocabulary.
 */
export async function loadCalibration(o: LoadCalibrationOptions): Promise<Calibration> {
  if (o.seqlen > o.shape.maxPositionEmbeddings) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--seqlen ${o.seqlen} is longer than the model's context (${o.shape.maxPositionEmbeddings}); use --seqlen ${o.shape.maxPositionEmbeddings} or less`);
  }
  if (!existsSync(path.join(o.model, 'tokenizer.json'))) {
    throw new ShoalError('SHOAL_ERR_TOKENIZER', `${o.model} has no tokenizer.json; --method ${o.method} tokenizes the calibration text with the model's tokenizer (copy tokenizer.json and tokenizer_config.json into the model folder)`);
  }
  const files = o.calib ?? [];
  if (files.length === 0 && !(o.calibDocs?.length)) {
    throw new ShoalError('SHOAL_ERR_INVALID_ARG', `--method ${o.method} needs calibration text: pass --calib FILE (one or more UTF-8 text files)`);
  }
  const docs = [...(files.length ? readCalibDocuments(files, o.calibSep) : []), ...(o.calibDocs ?? [])];
  if (docs.length === 0) throw new ShoalError('SHOAL_ERR_CALIB_EMPTY', `the calibration text is empty; pass --calib files with text`);
  const tok = await HfModelTokenizer.load(o.model, { bos: o.shape.bosTokenId, eos: o.shape.eosTokenIds });
  if (!tok) throw new ShoalError('SHOAL_ERR_TOKENIZER', `${o.model} has no usable tokenizer.json; --method ${o.method} needs the model's tokenizer`);
  const calib = buildCalibration(docs, tok, { samples: o.samples, seqlen: o.seqlen, ...(o.holdout ? { holdout: o.holdout } : {}) });
  for (const t of [...calib.tokens, ...(calib.heldOut ?? [])]) {
    if (t < 0 || t >= o.shape.vocabSize) throw new ShoalError('SHOAL_ERR_TOKENIZER', `the tokenizer produced id ${t}, outside the model's vocabulary 0..${o.shape.vocabSize - 1}`);
  }
  return calib;
}
