import t from 'tap';
import { KvSlotPool, commonPrefix, slotsWithinBudget, type SlotSession } from '../src/kv-slots.js';

class FakeSession implements SlotSession {
  position = 0;
  disposed = false;
  truncate(keep: number): void { this.position = Math.min(this.position, keep); }
  dispose(): void { this.disposed = true; }
}

/** Runs one request: acquire, "evaluate" the rest of the prompt and `gen` tokens, release. */
function serve(pool: KvSlotPool<FakeSession>, prompt: number[], gen: number[] = []) {
  const lease = pool.acquire(prompt);
  lease.session.position += prompt.length - lease.reused + gen.length;
  pool.release(lease, [...prompt, ...gen]);
  return lease;
}

t.test('commonPrefix', async (t) => {
  t.equal(commonPrefix([1, 2, 3], [1, 2, 4]), 2);
  t.equal(commonPrefix([], [1]), 0);
  t.equal(commonPrefix([1, 2], [1, 2, 3]), 2);
});

t.test('a conversation reuses its own slot, evaluating only the new turn', async (t) => {
  const pool = new KvSlotPool(2, () => new FakeSession());
  const a = serve(pool, [1, 10, 11, 12], [20, 21]);
  t.equal(a.reused, 0);
  const b = serve(pool, [1, 10, 11, 12, 20, 21, 30, 31]);
  t.equal(b.slot.id, a.slot.id);
  t.equal(b.reused, 6);
  t.same(pool.stats(), { slots: 2, inUse: 0, allocated: 1, requests: 2, hits: 1, reusedTokens: 6, evaluatedTokens: 4 + 2, evictions: 0 });
});

t.test('an identical prompt still evaluates its last token', async (t) => {
  const pool = new KvSlotPool(1, () => new FakeSession());
  serve(pool, [1, 2, 3]);
  const l = pool.acquire([1, 2, 3]);
  t.equal(l.reused, 2);
  t.equal(l.session.position, 2);
});

t.test('a diverging prompt truncates to the common prefix', async (t) => {
  const pool = new KvSlotPool(1, () => new FakeSession());
  serve(pool, [1, 2, 3, 4, 5, 6]);
  const l = pool.acquire([1, 2, 3, 9, 9, 9]);
  t.equal(l.reused, 3);
  t.equal(l.session.position, 3);
  t.same(l.slot.tokens, [1, 2, 3]);
});

t.test('two concurrent conversations get different slots and keep them', async (t) => {
  const pool = new KvSlotPool(2, () => new FakeSession());
  const sys = [1, 5, 5, 5];
  const a1 = pool.acquire([...sys, 100, 101, 102, 103, 104, 105]);
  const b1 = pool.acquire([...sys, 200, 201, 202, 203, 204, 205]);
  t.not(a1.slot.id, b1.slot.id, 'no two running requests share a slot');
  t.throws(() => pool.acquire([1]), /no free KV slot/);
  for (const [l, p] of [[a1, 100], [b1, 200]] as const) { l.session.position = 10; pool.release(l, [...sys, p, p + 1, p + 2, p + 3, p + 4, p + 5]); }
  const a2 = pool.acquire([...sys, 100, 101, 102, 103, 104, 105, 106]);
  t.equal(a2.slot.id, a1.slot.id);
  t.equal(a2.reused, 10);
  const b2 = pool.acquire([...sys, 200, 201, 202, 203, 204, 205, 206]);
  t.equal(b2.slot.id, b1.slot.id);
  t.equal(b2.reused, 10);
});

t.test('a new conversation takes an empty slot rather than overwrite a long cache for a shared system prompt', async (t) => {
  const pool = new KvSlotPool(2, () => new FakeSession());
  serve(pool, [1, 5, 5, 100, 101, 102, 103, 104, 105, 106]);
  const b = pool.acquire([1, 5, 5, 200]);
  t.equal(b.slot.id, 1);
  t.equal(b.reused, 0);
});

t.test('LRU eviction when every slot holds something else', async (t) => {
  const pool = new KvSlotPool(2, () => new FakeSession());
  const a = serve(pool, [10, 11, 12]);
  const b = serve(pool, [20, 21, 22]);
  serve(pool, [10, 11, 12, 13]); // touches a
  const c = serve(pool, [30, 31, 32]);
  t.equal(c.slot.id, b.slot.id, 'the least recently used slot (b) is evicted');
  t.equal(pool.stats().evictions, 1);
  t.equal(serve(pool, [10, 11, 12, 13, 14]).slot.id, a.slot.id, 'a survived');
});

t.test('disabled cache: same slots, nothing reused', async (t) => {
  const pool = new KvSlotPool(1, () => new FakeSession(), false);
  serve(pool, [1, 2, 3]);
  const l = pool.acquire([1, 2, 3, 4]);
  t.equal(l.reused, 0);
  t.equal(l.session.position, 0);
});

t.test('release keeps only what the session really holds; discard forgets', async (t) => {
  const pool = new KvSlotPool(1, () => new FakeSession());
  const l = pool.acquire([1, 2, 3]);
  l.session.position = 2; // e.g. the eval failed part-way
  pool.release(l, [1, 2, 3, 4]);
  t.same(l.slot.tokens, [1, 2]);
  const m = pool.acquire([1, 2, 7]);
  t.equal(m.reused, 2);
  pool.discard(m);
  t.same(m.slot.tokens, []);
  t.equal(m.session.position, 0);
});

t.test('slotsWithinBudget', async (t) => {
  t.equal(slotsWithinBudget(8, 100, 350), 3);
  t.equal(slotsWithinBudget(2, 100, 1000), 2);
  t.equal(slotsWithinBudget(4, 100, 10), 1, 'always at least one slot');
  t.throws(() => new KvSlotPool(0, () => new FakeSession()));
});
