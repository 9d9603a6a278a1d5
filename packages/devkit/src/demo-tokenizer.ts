// A byte-level BPE tokenizer.json written from scratch for `shoal up` when no
// tokenizer is at hand (a fresh checkout without SHOAL_TOKENIZER_DIR): 3 special
// tokens and the 256 byte symbols, plus merges of the most common English letter
// pairs. Random demo weights produce random text either way; this only makes
// text prompts (the device's health check, `fleet infer`) work end to end.
import fs from 'node:fs';
import path from 'node:path';
import { writeFileAtomicSync } from '@shoal/common';

/** GPT-2's reversible byte -> printable unicode mapping. */
function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) { bs.push(b); cs.push(256 + n); n++; }
  }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => { out[b] = String.fromCodePoint(cs[i]!); });
  return out;
}

const COMMON_PAIRS = ['th', 'he', 'in', 'er', 'an', 're', 'on', 'at', 'en', 'nd', 'ti', 'es', 'or', 'te', 'of', 'ed', 'is', 'it', 'al', 'ar', 'st', 'to', 'nt', 'ng', 'se', 'ha', 'as', 'ou', 'io', 'le', 've', 'co', 'me', 'de', 'hi', 'ri', 'ro', 'ic', 'ne', 'ea', 'ra', 'ce'];

export function writeDemoTokenizer(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  const b2u = bytesToUnicode();
  const vocab: Record<string, number> = { '<unk>': 0, '<s>': 1, '</s>': 2 };
  for (let b = 0; b < 256; b++) vocab[b2u[b]!] = 3 + b;
  const space = b2u[32]!;
  const merges: string[] = [];
  let next = 259;
  for (const p of COMMON_PAIRS) {
    merges.push(`${p[0]} ${p[1]}`);
    vocab[p] = next++;
  }
  for (const p of COMMON_PAIRS.slice(0, 20)) {
    merges.push(`${space} ${p}`);
    vocab[space + p] = next++;
  }
  const special = (id: number, content: string) => ({ id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
  const tokenizer = {
    version: '1.0', truncation: null, padding: null,
    added_tokens: [special(0, '<unk>'), special(1, '<s>'), special(2, '</s>')],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: {
      type: 'TemplateProcessing',
      single: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }],
      pair: [{ SpecialToken: { id: '<s>', type_id: 0 } }, { Sequence: { id: 'A', type_id: 0 } }, { Sequence: { id: 'B', type_id: 1 } }],
      special_tokens: { '<s>': { id: '<s>', ids: [1], tokens: ['<s>'] } },
    },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: 'BPE', dropout: null, unk_token: '<unk>', continuing_subword_prefix: null, end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false, vocab, merges },
  };
  writeFileAtomicSync(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
  writeFileAtomicSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({
    add_bos_token: true, add_eos_token: false, bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>',
    model_max_length: 1024, tokenizer_class: 'PreTrainedTokenizerFast', clean_up_tokenization_spaces: false,
  }, null, 2));
  writeFileAtomicSync(path.join(dir, 'special_tokens_map.json'), JSON.stringify({ bos_token: '<s>', eos_token: '</s>', unk_token: '<unk>' }, null, 2));
}
