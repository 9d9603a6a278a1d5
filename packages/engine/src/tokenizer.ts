// tokenizer.ts — tokenizer.json through @huggingface/tokenizers, the chat
// template of tokenizer_config.json through @huggingface/jinja, and a stream
// decoder that never emits half a UTF-8 sequence.
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import type { ChatMessage, Tokenizer } from './types.js';
import { ShoalError } from '@shoal/common';

interface TokenizerConfig {
  chat_template?: string | Array<{ name: string; template: string }>;
  bos_token?: string | { content: string };
  eos_token?: string | { content: string };
  [key: string]: unknown;
}

const tokenText = (t: TokenizerConfig['bos_token']): string =>
  typeof t === 'string' ? t : t && typeof t === 'object' ? t.content : '';

/** The replacement character the byte-fallback decoder emits for an incomplete sequence. */
const REPLACEMENT = '\uFFFD';

export class HfModelTokenizer implements Tokenizer {
  readonly bosTokenId: number | null;
  readonly eosTokenIds: number[];
  private readonly template: Template | null;

  private constructor(
    private readonly hf: HfTokenizer,
    private readonly config: TokenizerConfig,
    bosTokenId: number | null,
    eosTokenIds: number[],
  ) {
    this.bosTokenId = bosTokenId;
    this.eosTokenIds = eosTokenIds;
    const tpl = Array.isArray(config.chat_template)
      ? config.chat_template.find((t) => t.name === 'default')?.template
      : config.chat_template;
    this.template = tpl ? new Template(tpl) : null;
  }

  /** Loads dir/tokenizer.json (+ tokenizer_config.json); null when there is no tokenizer.json. */
  static async load(dir: string, ids: { bos: number | null; eos: number[] }): Promise<HfModelTokenizer | null> {
    const file = path.join(dir, 'tokenizer.json');
    let json: unknown;
    try {
      json = JSON.parse(await readFile(file, 'utf8'));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new ShoalError('SHOAL_ERR_TOKENIZER', `cannot read ${file}: ${(err as Error).message}`, undefined, { cause: err });
    }
    let config: TokenizerConfig = {};
    try {
      config = JSON.parse(await readFile(path.join(dir, 'tokenizer_config.json'), 'utf8')) as TokenizerConfig;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT')
        throw new ShoalError('SHOAL_ERR_TOKENIZER', `cannot read ${path.join(dir, 'tokenizer_config.json')}: ${(err as Error).message}`);
    }
    try {
      const hf = new HfTokenizer(json as object, config);
      return new HfModelTokenizer(hf, config, ids.bos, ids.eos);
    } catch (err) {
      throw new ShoalError('SHOAL_ERR_TOKENIZER', `${file} is not a supported tokenizer: ${(err as Error).message}`, undefined, { cause: err });
    }
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.hf.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  decode(ids: number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    if (ids.length === 0) return ''; // the library rejects empty input
    return this.hf.decode(ids, { skip_special_tokens: opts.skipSpecialTokens ?? true });
  }

  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    const addGenerationPrompt = opts.addGenerationPrompt ?? true;
    if (!this.template) {
      // No template (base models such as stories260K): the turns as plain text,
      // BOS first, so a completion model simply continues the conversation.
      const bos = this.bosTokenId !== null ? tokenText(this.config.bos_token) || '<s>' : '';
      return bos + messages.map((m) => m.content.trim()).join('\n') + (addGenerationPrompt ? '\n' : '');
    }
    return this.template.render({
      messages,
      add_generation_prompt: addGenerationPrompt,
      bos_token: tokenText(this.config.bos_token),
      eos_token: tokenText(this.config.eos_token),
    });
  }

  encodeChat(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): number[] {
    return this.encode(this.applyChatTemplate(messages, opts), { addSpecialTokens: false });
  }

  createStreamDecoder(context: number[] = []): { push(token: number): string; flush(): string } {
    // Decode the pending tokens together (so SentencePiece spaces and byte
    // fallback resolve as in a full decode) and emit only the new suffix; hold
    // back while the tail is an incomplete UTF-8 sequence. Start afresh after a
    // newline to keep each decode short.
    // Context tokens (the end of the prompt) are decoded but never emitted, so
    // a continuation keeps its leading space ("time" + " there").
    let pending: number[] = context.slice(-1);
    let emitted = 0;
    let prefix = pending.length; // leading tokens decoded for context only
    const decodeTail = (): string => {
      const all = this.decode(pending);
      if (prefix === 0) return all;
      return all.slice(this.decode(pending.slice(0, prefix)).length);
    };
    return {
      push: (token: number): string => {
        pending.push(token);
        const text = decodeTail();
        if (text.endsWith(REPLACEMENT)) return '';
        const out = text.slice(emitted);
        emitted = text.length;
        if (out.includes('\n')) {
          // keep the last token as context so a following space survives Strip
          pending = pending.slice(-1);
          prefix = 1;
          emitted = 0;
        }
        return out;
      },
      flush: (): string => {
        const text = decodeTail();
        const out = text.slice(emitted);
        pending = [];
        emitted = 0;
        prefix = 0;
        return out;
      },
    };
  }
}
