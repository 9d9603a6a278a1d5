import t from 'tap';
import { MAX_TIMER_MS, atDeadline, checkDeadline, clampDelay } from '../src/timers.js';

t.test('clampDelay keeps delays within what setTimeout holds', async (t) => {
  t.equal(clampDelay(-5), 0);
  t.equal(clampDelay(Number.NaN), 0);
  t.equal(clampDelay(Infinity), 0, 'not finite → fire now, never a 1 ms overflow surprise');
  t.equal(clampDelay(1000), 1000);
  t.equal(clampDelay(MAX_TIMER_MS * 10), MAX_TIMER_MS);
});

t.test('checkDeadline: past, too far (with the hint about units), fine', async (t) => {
  const now = Date.UTC(2026, 0, 1);
  t.same(checkDeadline(now + 1000, 60_000, now), { ok: true });
  const past = checkDeadline(now, 60_000, now);
  t.equal(past.ok, false);
  t.equal(!past.ok && past.reason, 'past');
  const far = checkDeadline(now * 1000, 60_000, now);
  t.equal(!far.ok && far.reason, 'too-far');
  t.match(!far.ok && far.message, /epoch milliseconds, not seconds or microseconds/);
});

t.test('atDeadline fires once at the deadline; clear() cancels', async (t) => {
  let fired = 0;
  const start = Date.now();
  await new Promise<void>((resolve) => atDeadline(start + 30, () => { fired++; resolve(); }));
  t.equal(fired, 1);
  t.ok(Date.now() - start >= 25, 'not early');
  let cancelled = 0;
  const h = atDeadline(Date.now() + 20, () => cancelled++);
  h.clear();
  await new Promise((r) => setTimeout(r, 50));
  t.equal(cancelled, 0);
});

t.test('a deadline beyond setTimeout range is armed in steps, not fired at once', async (t) => {
  let fired = 0;
  const h = atDeadline(Date.now() + MAX_TIMER_MS * 3, () => fired++);
  await new Promise((r) => setTimeout(r, 30));
  t.equal(fired, 0);
  h.clear();
});
