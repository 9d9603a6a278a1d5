// Revisions of the retained state document. Strictly increasing per device, also across
// restarts: numbers are reserved in blocks in the outbox database (one fsync per block, not
// per state), and never below the wall clock in ms, so a device whose database was wiped
// still publishes revisions above the ones it published before (unless its clock went back).
import type { Outbox } from './outbox.js';

export class StateRevisions {
  private next = 0;
  private last = -1;
  constructor(private readonly outbox: Outbox, private readonly block = 1000) {}

  take(): number {
    if (this.next > this.last) {
      try {
        this.next = this.outbox.reserveRevisions(this.block, Date.now());
      } catch {
        // database unwritable (disk full): keep going from memory; the clock floor keeps
        // revisions above earlier ones after a restart
        this.next = Math.max(this.next, Date.now());
      }
      this.last = this.next + this.block - 1;
    }
    return this.next++;
  }
}
