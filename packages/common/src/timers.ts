// Timers for far deadlines. setTimeout holds at most 2^31-1 ms (about 24.8 days); a longer
// delay overflows and fires at once (Node prints TimeoutOverflowWarning and uses 1 ms), which
// turned a far-future request deadline into an immediate DEADLINE_EXCEEDED.

/** Longest delay setTimeout honours. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Clamps a delay to what setTimeout can hold (and to >= 0). */
export function clampDelay(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) return 0;
  return Math.min(ms, MAX_TIMER_MS);
}

export interface DeadlineTimer { clear(): void }

/**
 * Calls fn at epoch-ms `deadline`, however far away: a delay beyond MAX_TIMER_MS is split
 * into steps. Returns a handle whose clear() cancels it.
 */
export function atDeadline(deadline: number, fn: () => void, now: () => number = Date.now): DeadlineTimer {
  let t: NodeJS.Timeout | null = null;
  let cleared = false;
  const arm = () => {
    if (cleared) return;
    const left = deadline - now();
    if (left > MAX_TIMER_MS) { t = setTimeout(arm, MAX_TIMER_MS); return; }
    t = setTimeout(() => { t = null; if (!cleared) fn(); }, clampDelay(left));
  };
  arm();
  return { clear: () => { cleared = true; if (t) clearTimeout(t); t = null; } };
}

export type DeadlineCheck = { ok: true } | { ok: false; reason: 'past' | 'too-far'; message: string };

/** Checks an epoch-ms deadline: not in the past, not more than maxAheadMs away. */
export function checkDeadline(deadline: number, maxAheadMs: number, now = Date.now()): DeadlineCheck {
  if (!Number.isFinite(deadline) || deadline <= now) {
    return { ok: false, reason: 'past', message: `deadline ${fmt(deadline)} is in the past (now ${fmt(now)}); send an epoch-ms time in the future` };
  }
  if (deadline - now > maxAheadMs) {
    return { ok: false, reason: 'too-far', message: `deadline ${fmt(deadline)} is ${Math.round((deadline - now) / 1000)} s away; the limit is ${Math.round(maxAheadMs / 1000)} s (deadlines are epoch milliseconds, not seconds or microseconds)` };
  }
  return { ok: true };
}

function fmt(ms: number): string {
  const d = new Date(ms);
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString();
}
