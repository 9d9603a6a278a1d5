// quant/phases.ts — per-phase wall and CPU seconds of one quantized layer, for
// the reports (--json): the quantizers call start() at each stage they already
// announce; CPU is the whole process's user + system time (the native workers'
// threads included), so cpu / wall is how many cores the phase kept busy.

export interface PhaseTime {
  /** wall-clock seconds */
  wall: number;
  /** CPU seconds (user + system) of the process */
  cpu: number;
}

/** Phase name → its time; a phase entered more than once accumulates. */
export type PhaseTimes = Record<string, PhaseTime>;

export class PhaseTimer {
  private readonly times: PhaseTimes = {};
  private name: string | null = null;
  private wall0 = 0;
  private cpu0 = 0;

  /** Ends the current phase (if any) and starts `name`. */
  start(name: string): void {
    this.stop();
    this.name = name;
    this.wall0 = performance.now();
    this.cpu0 = cpuSeconds();
  }

  /** Ends the current phase. */
  stop(): void {
    if (this.name === null) return;
    const t = (this.times[this.name] ??= { wall: 0, cpu: 0 });
    t.wall += (performance.now() - this.wall0) / 1000;
    t.cpu += cpuSeconds() - this.cpu0;
    this.name = null;
  }

  /** Ends the current phase and returns the times, rounded to milliseconds. */
  finish(): PhaseTimes {
    this.stop();
    const out: PhaseTimes = {};
    for (const [k, v] of Object.entries(this.times)) out[k] = { wall: Math.round(v.wall * 1000) / 1000, cpu: Math.round(v.cpu * 1000) / 1000 };
    return out;
  }
}

function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}
