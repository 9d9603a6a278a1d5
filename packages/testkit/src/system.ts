// system.ts — system packages some suites need (mosquitto, Chromium). scripts/setup.sh
// installs them when it can (root or passwordless sudo); where it cannot, a suite
// that needs one skips with one line naming the Debian package and the command that
// installs it, and records the skip for the summary `make test` prints at the end
// (scripts/test-summary.sh reads $SHOAL_SKIP_LOG).
//
// SHOAL_WITHOUT="mosquitto chromium" makes the setup and the tests treat those
// packages as absent, to check this path on a machine that has them.
import { appendFileSync, existsSync } from 'node:fs';
import path from 'node:path';

export type SystemPackage = 'mosquitto' | 'chromium';

const BINARIES: Record<SystemPackage, string> = { mosquitto: 'mosquitto', chromium: 'chromium' };
// mosquitto lives in /usr/sbin, which a non-root PATH often lacks
const EXTRA_DIRS = ['/usr/sbin', '/usr/local/sbin', '/usr/bin', '/usr/local/bin'];

/** Packages named in $SHOAL_WITHOUT (space or comma separated). */
export function withoutPackages(env: NodeJS.ProcessEnv = process.env): Set<string> {
  return new Set((env.SHOAL_WITHOUT ?? '').split(/[\s,]+/).filter(Boolean));
}

/** Absolute path of the package's binary on PATH (or the sbin folders), else null; null when $SHOAL_WITHOUT names it. */
export function findSystemBinary(pkg: SystemPackage, env: NodeJS.ProcessEnv = process.env): string | null {
  if (withoutPackages(env).has(pkg)) return null;
  const dirs = [...(env.PATH ?? '').split(path.delimiter).filter(Boolean), ...EXTRA_DIRS];
  for (const d of dirs) {
    const f = path.join(d, BINARIES[pkg]);
    if (existsSync(f)) return f;
  }
  return null;
}

/** The one line a suite prints when it skips for a missing package. */
export function missingPackageMessage(pkg: SystemPackage, what: string): string {
  return `${pkg} is not installed, so ${what} is skipped: install it with \`sudo apt-get install -y ${pkg}\` (or run \`make test\` as root, which installs it)`;
}

/**
 * tap `skip` value for a suite that needs `pkg`: false when it is installed, else the
 * message (also appended to $SHOAL_SKIP_LOG as "pkg<TAB>what" for the end-of-run summary).
 */
export function skipUnlessInstalled(pkg: SystemPackage, what: string): string | false {
  if (findSystemBinary(pkg)) return false;
  const log = process.env.SHOAL_SKIP_LOG;
  if (log) {
    try {
      appendFileSync(log, `${pkg}\t${what}\n`);
    } catch { /* the summary is a convenience; the skip line still prints */ }
  }
  return missingPackageMessage(pkg, what);
}
