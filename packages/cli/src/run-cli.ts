// Runs a commander program and turns errors into one readable line and an exit
// code, with the stable error code when there is one.
import type { Command } from 'commander';

export async function runCli(program: Command): Promise<void> {
  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    const e = err as Error & { code?: string };
    const code = e.code && !e.code.startsWith('commander.') ? ` [${e.code}]` : '';
    process.stderr.write(`shoal: ${e.message}${code}\n`);
    process.exitCode = process.exitCode && process.exitCode !== 0 ? process.exitCode : 1;
  }
}
