// kv-slots.ts — the prefix cache: a fixed set of KV slots (engine sessions),
// each remembering the token ids its KV cache holds. A request takes the free
// slot whose tokens share the longest prefix with its prompt, keeps that
// prefix and evaluates only the rest; when nothing useful is cached it takes
// an empty slot or evicts the least recently used one. A slot is held by one
// request at a time, so concurrent requests never share a KV cache.

export interface SlotSession {
  /** Positions filled in the KV cache. */
  readonly position: number;
  /** Drops positions >= keep. */
  truncate(keep: number): void;
  dispose(): void;
}

export interface KvSlot<S extends SlotSession> {
  readonly id: number;
  session: S | null;
  /** Token ids in the KV cache, position by position. */
  tokens: number[];
  lastUsed: number;
  busy: boolean;
}

export interface Lease<S extends SlotSession> {
  slot: KvSlot<S>;
  session: S;
  /** Prompt tokens already in the KV cache: evaluate prompt.slice(reused) only. */
  reused: number;
}

export interface KvSlotStats {
  slots: number;
  inUse: number;
  /** Slots holding a cache (created sessions). */
  allocated: number;
  requests: number;
  /** Requests that reused at least one token. */
  hits: number;
  reusedTokens: number;
  evaluatedTokens: number;
  evictions: number;
}

export function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

export class KvSlotPool<S extends SlotSession> {
  private readonly slots: Array<KvSlot<S>>;
  private clock = 0;
  private readonly counters = { requests: 0, hits: 0, reusedTokens: 0, evaluatedTokens: 0, evictions: 0 };

  /**
   * @param size number of slots (≥ 1)
   * @param create makes a fresh session (called lazily, once per slot)
   * @param enabled false: every request starts from an empty cache (for A/B tests)
   */
  constructor(size: number, private readonly create: () => S, private readonly enabled = true) {
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`KV slots must be an integer >= 1, got ${size}`);
    this.slots = Array.from({ length: size }, (_, id) => ({ id, session: null, tokens: [], lastUsed: 0, busy: false }));
  }

  get size(): number { return this.slots.length; }
  get free(): number { return this.slots.filter((s) => !s.busy).length; }

  /** Takes a slot for `prompt` (≥ 1 token). Throws when every slot is busy (the scheduler runs at most `size` requests). */
  acquire(prompt: readonly number[]): Lease<S> {
    if (prompt.length < 1) throw new RangeError('the prompt needs at least one token');
    const free = this.slots.filter((s) => !s.busy);
    if (free.length === 0) throw new Error('no free KV slot: run at most as many requests at once as there are slots');
    let best: KvSlot<S> | null = null;
    let bestLcp = 0;
    if (this.enabled) {
      for (const s of free) {
        const l = commonPrefix(s.tokens, prompt);
        if (l > bestLcp || (l === bestLcp && l > 0 && best && s.lastUsed > best.lastUsed)) { best = s; bestLcp = l; }
      }
    }
    // A short shared prefix (say a common system prompt) is not worth
    // overwriting a slot that caches much more: use an empty or the LRU slot.
    const empty = free.find((s) => s.tokens.length === 0);
    // (A prompt the slot caches entirely, e.g. a regenerated answer, always reuses it.)
    if (best && bestLcp * 2 < best.tokens.length && bestLcp < prompt.length && (empty || free.length > 1)) {
      const other = empty ?? lru(free.filter((s) => s !== best));
      const otherLcp = commonPrefix(other.tokens, prompt);
      if (!empty || otherLcp === 0) { best = other; bestLcp = this.enabled ? otherLcp : 0; }
    }
    if (!best) { best = empty ?? lru(free); bestLcp = 0; }
    // an eviction: most of what the slot cached is thrown away
    if (best.tokens.length > 0 && bestLcp * 2 < best.tokens.length && bestLcp < prompt.length) this.counters.evictions++;
    // at least one prompt token must be evaluated to get the next-token logits
    const reused = Math.min(bestLcp, prompt.length - 1);
    best.busy = true;
    best.lastUsed = ++this.clock;
    if (!best.session) best.session = this.create();
    best.session.truncate(reused);
    best.tokens = best.tokens.slice(0, reused);
    this.counters.requests++;
    if (reused > 0) this.counters.hits++;
    this.counters.reusedTokens += reused;
    this.counters.evaluatedTokens += prompt.length - reused;
    return { slot: best, session: best.session, reused };
  }

  /** Returns the slot; `tokens` are the ids now in its KV cache (prompt + generated ones that were evaluated). */
  release(lease: Lease<S>, tokens: readonly number[]): void {
    const s = lease.slot;
    const n = Math.min(tokens.length, lease.session.position);
    // Anything we cannot vouch for (an error mid-eval) is dropped.
    if (n !== lease.session.position) lease.session.truncate(n);
    s.tokens = tokens.slice(0, n);
    s.lastUsed = ++this.clock;
    s.busy = false;
  }

  /** Forgets a slot's contents (after an engine error). */
  discard(lease: Lease<S>): void {
    try { lease.session.truncate(0); } catch { /* the session may be gone */ }
    lease.slot.tokens = [];
    lease.slot.busy = false;
  }

  stats(): KvSlotStats {
    return {
      slots: this.slots.length,
      inUse: this.slots.filter((s) => s.busy).length,
      allocated: this.slots.filter((s) => s.session).length,
      ...this.counters,
    };
  }

  /** Frees every session (model swap); busy slots must be released first. */
  dispose(): void {
    for (const s of this.slots) {
      s.session?.dispose();
      s.session = null;
      s.tokens = [];
    }
  }
}

function lru<S extends SlotSession>(slots: Array<KvSlot<S>>): KvSlot<S> {
  return slots.reduce((a, b) => (b.lastUsed < a.lastUsed ? b : a));
}

/** Slots that fit in `budgetBytes` of KV memory, at most `wanted`, at least 1. */
export function slotsWithinBudget(wanted: number, bytesPerSlot: number, budgetBytes: number): number {
  if (bytesPerSlot <= 0) return wanted;
  return Math.max(1, Math.min(wanted, Math.floor(budgetBytes / bytesPerSlot)));
}
