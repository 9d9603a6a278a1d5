// token-trie.ts — constrained decoding over a real vocabulary without testing
// every token at every step: the vocabulary's texts are put in a character
// trie once per model; a step walks the trie depth-first with the JSON
// recognizer's immutable state, pruning a whole subtree at the first rejected
// character (inside a string almost everything passes, at a ':' only a few
// branches are entered). Masks are cached by recognizer state key, so the
// walk runs once per distinct state, not once per token.
import type { JsonConstraint, State } from './json-constraint.js';

interface TokenizerJson {
  model?: { type?: string; vocab?: Record<string, number> | Array<[string, number]> };
  added_tokens?: Array<{ id: number; content: string; special?: boolean }>;
  decoder?: unknown;
  pre_tokenizer?: unknown;
}

/** GPT-2's printable-character alphabet for bytes (ByteLevel): the character of each byte 0..255. */
export function byteLevelAlphabet(): string[] {
  const bs: number[] = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const out: string[] = new Array(256);
  bs.forEach((b, i) => { out[b] = String.fromCodePoint(cs[i]!); });
  return out;
}

/** The alphabet inverted: char → byte. */
function byteLevelDecoder(): Map<string, number> {
  return new Map(byteLevelAlphabet().map((c, b) => [c, b]));
}

/**
 * The text each token id adds when generated (null: special or not valid text
 * on its own, e.g. half a UTF-8 sequence). SentencePiece pieces: '▁' is a
 * space and <0xHH> a byte; byte-level BPE pieces map back through GPT-2's
 * alphabet.
 */
export function vocabTexts(tok: TokenizerJson, vocabSize: number): Array<string | null> {
  const out: Array<string | null> = new Array(vocabSize).fill(null);
  const v = tok.model?.vocab;
  const entries: Array<[string, number]> = Array.isArray(v) ? v.map(([p], i) => [p, i]) : Object.entries(v ?? {});
  const byteLevel = JSON.stringify(tok.decoder ?? '').includes('ByteLevel') || JSON.stringify(tok.pre_tokenizer ?? '').includes('ByteLevel');
  const inv = byteLevel ? byteLevelDecoder() : null;
  const utf8 = new TextDecoder('utf-8', { fatal: true });
  for (const [piece, id] of entries) {
    if (id < 0 || id >= vocabSize) continue;
    if (inv) {
      const bytes: number[] = [];
      for (const ch of piece) {
        const b = inv.get(ch);
        if (b === undefined) { bytes.length = 0; break; }
        bytes.push(b);
      }
      try { out[id] = bytes.length ? utf8.decode(Uint8Array.from(bytes)) : null; } catch { out[id] = null; }
    } else {
      const m = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
      if (m) { const b = parseInt(m[1]!, 16); out[id] = b < 0x80 ? String.fromCharCode(b) : null; }
      else out[id] = piece.replaceAll('\u2581', ' ');
    }
  }
  for (const a of tok.added_tokens ?? []) if (a.id >= 0 && a.id < vocabSize && (a.special ?? true)) out[a.id] = null;
  for (let i = 0; i < vocabSize; i++) if (out[i] === '') out[i] = null;
  return out;
}

/** A character trie of token texts, in flat arrays. */
export class TokenTrie {
  /** per node: child edges (character → node index) */
  readonly edges: Array<Map<string, number>> = [new Map()];
  /** per node: token ids whose text ends here */
  readonly ends: number[][] = [[]];

  constructor(texts: ReadonlyArray<string | null>) {
    texts.forEach((text, id) => {
      if (text === null) return;
      let node = 0;
      for (const ch of text) {
        let next = this.edges[node]!.get(ch);
        if (next === undefined) {
          next = this.edges.length;
          this.edges.push(new Map());
          this.ends.push([]);
          this.edges[node]!.set(ch, next);
        }
        node = next;
      }
      this.ends[node]!.push(id);
    });
  }

  get nodes(): number { return this.edges.length; }
}

export interface MaskStats { computed: number; cached: number; nodesVisited: number }

/** Text that can sit inside a JSON string as is. */
const PLAIN = /^[^"\\\u0000-\u001f]+$/;

/** Allowed-token masks (bit per token, as shoal_sample_controls.allowed) for a recognizer state. */
export class ConstraintMasker {
  private readonly cache = new Map<string, Uint32Array>();
  readonly stats: MaskStats = { computed: 0, cached: 0, nodesVisited: 0 };
  /** Tokens that are not plain string text (quotes, backslashes, control characters): walked inside strings. */
  private readonly specialTrie: TokenTrie;
  /** plainUpTo[L]: plain tokens of at most L characters (L = the longest plain token: all of them). */
  private readonly plainUpTo: Uint32Array[];

  constructor(
    readonly constraint: JsonConstraint,
    private readonly trie: TokenTrie,
    private readonly texts: ReadonlyArray<string | null>,
    readonly vocabSize: number,
    private readonly eosIds: readonly number[],
    /** Special tokens the grammar names by a stand-in character (TOOL_MARKER → Mistral's [TOOL_CALLS] id). */
    private readonly specials: ReadonlyArray<readonly [string, number]> = [],
    private readonly maxCached = 2048,
  ) {
    // Inside a string nearly every token is plain text; walking all of them
    // per state would cost tens of ms on a 32k vocabulary. They are accepted
    // or not by length alone, so their masks are precomputed by length.
    const words = Math.ceil(vocabSize / 32);
    const lens: number[] = [];
    let longest = 0;
    texts.forEach((t, id) => {
      if (t !== null && PLAIN.test(t)) { const n = [...t].length; lens[id] = n; longest = Math.max(longest, n); }
    });
    this.plainUpTo = Array.from({ length: longest + 1 }, () => new Uint32Array(words));
    lens.forEach((n, id) => { if (n !== undefined) for (let L = n; L <= longest; L++) this.plainUpTo[L]![id >>> 5]! |= 1 << (id & 31); });
    this.specialTrie = new TokenTrie(texts.map((t) => (t !== null && !PLAIN.test(t) ? t : null)));
  }

  mask(state: State): Uint32Array {
    const key = this.constraint.key(state);
    const hit = this.cache.get(key);
    if (hit) {
      this.stats.cached++;
      // refresh LRU position
      this.cache.delete(key);
      this.cache.set(key, hit);
      return hit;
    }
    const c = this.constraint;
    const room = c.freeStringRoom(state);
    const trie = room === null ? this.trie : this.specialTrie;
    const m = room === null ? new Uint32Array(Math.ceil(this.vocabSize / 32)) : this.plainUpTo[Math.min(room, this.plainUpTo.length - 1)]!.slice();
    const set = (id: number) => { m[id >>> 5]! |= 1 << (id & 31); };
    // depth-first over the trie; each stack entry is a node and the state before its edges
    const nodes: number[] = [0];
    const states: State[] = [state];
    let visited = 0;
    while (nodes.length) {
      const node = nodes.pop()!;
      const st = states.pop()!;
      for (const [ch, child] of trie.edges[node]!) {
        const next = c.feed(st, ch);
        visited++;
        if (!next) continue;
        for (const id of trie.ends[child]!) set(id);
        if (trie.edges[child]!.size) { nodes.push(child); states.push(next); }
      }
    }
    if (c.isComplete(state)) for (const e of this.eosIds) if (e >= 0 && e < this.vocabSize) set(e);
    for (const [ch, id] of this.specials) if (id >= 0 && id < this.vocabSize && c.feed(state, ch)) set(id);
    this.stats.computed++;
    this.stats.nodesVisited += visited;
    this.cache.set(key, m);
    if (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value!);
    return m;
  }

  /** The state after a sampled token (null if the token was not allowed: a bug upstream). */
  advance(state: State, token: number): State | null {
    const special = this.specials.find(([, id]) => id === token);
    const text = special ? special[0] : this.texts[token];
    if (text === null || text === undefined) return null;
    return this.constraint.feedText(state, text);
  }

  isEos(token: number): boolean { return this.eosIds.includes(token); }
}
