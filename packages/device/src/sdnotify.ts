// sd_notify(3) for Type=notify units. Node cannot send unix datagrams, so the
// message is handed to `systemd-notify` (part of systemd, so present wherever a
// NOTIFY_SOCKET exists), falling back to `socat` when systemd-notify is absent.
// systemd-notify sends from its own pid, so the unit needs NotifyAccess=all
// (see docs/device.md). Without NOTIFY_SOCKET every call is a no-op.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

function findBinary(name: string): string | null {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    if (!dir) continue;
    const p = path.join(dir, name);
    if (existsSync(p)) return p;
  }
  return null;
}

function run(cmd: string, args: string[], socket: string, input?: string): Promise<boolean> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: [input !== undefined ? 'pipe' : 'ignore', 'ignore', 'ignore'], env: { ...process.env, NOTIFY_SOCKET: socket } });
    child.on('error', () => resolve(false));
    child.on('exit', (code) => resolve(code === 0));
    if (input !== undefined) child.stdin!.end(input);
  });
}

export class SdNotify {
  readonly socket: string | undefined;
  private watchdogTimer: NodeJS.Timeout | null = null;
  constructor(env: NodeJS.ProcessEnv = process.env) {
    this.socket = env.NOTIFY_SOCKET || undefined;
  }
  get enabled(): boolean { return !!this.socket; }

  /** Sends newline-separated KEY=VALUE assignments; resolves true when delivered. */
  async notify(state: string): Promise<boolean> {
    if (!this.socket) return false;
    const sd = findBinary('systemd-notify');
    if (sd) {
      const lines = state.split('\n').filter(Boolean);
      // systemd-notify --ready / plain assignments
      if (await run(sd, lines, this.socket)) return true;
    }
    const socat = findBinary('socat');
    if (socat) {
      const addr = this.socket.startsWith('@') ? `ABSTRACT-SENDTO:${this.socket.slice(1)}` : `UNIX-SENDTO:${this.socket}`;
      return run(socat, ['-u', 'STDIN', addr], this.socket, state);
    }
    return false;
  }

  ready(status?: string): Promise<boolean> { return this.notify(`READY=1${status ? `\nSTATUS=${status}` : ''}`); }
  stopping(): Promise<boolean> { return this.notify('STOPPING=1'); }

  /** Starts WATCHDOG=1 pings at half of WATCHDOG_USEC (when the unit sets WatchdogSec). */
  startWatchdog(env: NodeJS.ProcessEnv = process.env, healthy: () => boolean = () => true): number | null {
    const usec = Number(env.WATCHDOG_USEC);
    if (!this.socket || !Number.isFinite(usec) || usec <= 0) return null;
    if (env.WATCHDOG_PID && Number(env.WATCHDOG_PID) !== process.pid) return null;
    const everyMs = Math.max(100, Math.floor(usec / 2000));
    this.watchdogTimer = setInterval(() => { if (healthy()) void this.notify('WATCHDOG=1'); }, everyMs);
    this.watchdogTimer.unref();
    return everyMs;
  }
  stopWatchdog(): void { if (this.watchdogTimer) { clearInterval(this.watchdogTimer); this.watchdogTimer = null; } }
}
