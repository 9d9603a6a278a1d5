// log.ts — the one logging setup: pino, JSON lines, written synchronously (a
// crash or kill loses no line) to stderr or a file.
import { pino } from 'pino';

export type Logger = pino.Logger;

/** A logger at `level` whose lines carry `base` (pino's pid/hostname when omitted), to fd 2 or a file. */
export function createLogger(level: string, base?: Record<string, unknown>, destination: number | string = 2): Logger {
  const dest = pino.destination(typeof destination === 'number' ? { fd: destination, sync: true } : { dest: destination, sync: true });
  return pino(base === undefined ? { level } : { level, base }, dest);
}
