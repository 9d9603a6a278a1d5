// log.ts — the one logging setup: pino, JSON lines to stderr or a file. The
// daemon writes synchronously (a crash or kill loses no line); the controller
// and the local harness buffer (ingest of a large fleet must not wait on stderr).
import { pino } from 'pino';

export type Logger = pino.Logger;

/** A logger at `level` whose lines carry `base` (pino's pid/hostname when omitted), to fd 2 or a file. */
export function createLogger(level: string, base?: Record<string, unknown>, destination: number | string = 2, opts: { sync?: boolean } = {}): Logger {
  const sync = opts.sync ?? true;
  const dest = pino.destination({ dest: destination, sync, minLength: 0 });
  return pino(base === undefined ? { level } : { level, base }, dest);
}
