import { pino } from 'pino';
export type Logger = pino.Logger;
export function createLogger(level: string, deviceId: string): Logger {
  return pino({ level, base: { deviceId } }, pino.destination({ fd: 2, sync: true }));
}
