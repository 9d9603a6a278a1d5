// stop-matcher.ts — OpenAI `stop` strings over streamed text. Text arrives in
// token-sized pieces, so a stop string can span tokens; the matcher holds back
// the longest tail that could still start a stop string and releases it only
// once it cannot, so no part of a stop string is ever emitted.

export interface StopResult {
  /** Text that is safe to emit now. */
  text: string;
  /** True when a stop string was found: `text` ends just before it; generation should end. */
  stopped: boolean;
  /** The stop string that matched. */
  match?: string;
}

export class StopMatcher {
  private held = '';
  private done = false;
  private readonly maxLen: number;

  constructor(private readonly stops: readonly string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.maxLen = Math.max(0, ...this.stops.map((s) => s.length));
  }

  get active(): boolean { return this.stops.length > 0; }

  push(piece: string): StopResult {
    if (this.done) return { text: '', stopped: true };
    if (!this.active) return { text: piece, stopped: false };
    const buf = this.held + piece;
    // earliest complete match wins (what a whole-text search would find first)
    let at = -1;
    let match: string | undefined;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (at < 0 || i < at)) { at = i; match = s; }
    }
    if (at >= 0) {
      this.done = true;
      this.held = '';
      return { text: buf.slice(0, at), stopped: true, match: match! };
    }
    // hold back the longest suffix that is a proper prefix of some stop string
    let keep = 0;
    for (let k = Math.min(this.maxLen - 1, buf.length); k > 0; k--) {
      const tail = buf.slice(buf.length - k);
      if (this.stops.some((s) => s.startsWith(tail))) { keep = k; break; }
    }
    this.held = buf.slice(buf.length - keep);
    return { text: buf.slice(0, buf.length - keep), stopped: false };
  }

  /** At the end of generation: the held-back text (it never completed a stop string). */
  flush(): string {
    const out = this.done ? '' : this.held;
    this.held = '';
    return out;
  }
}
