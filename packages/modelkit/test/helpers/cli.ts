// cli.ts — runs `shoal <args>` in-process for the tool commands; returns stdout.
import { Command } from 'commander';
import { registerToolCommands } from '../../src/commands.js';

export async function runToolCli(args: string[]): Promise<string> {
  const program = new Command().name('shoal').exitOverride();
  registerToolCommands(program);
  let out = '';
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((chunk: string | Uint8Array) => { out += chunk.toString(); return true; }) as typeof process.stdout.write;
  try {
    await program.parseAsync(['node', 'shoal', ...args]);
  } finally {
    process.stdout.write = write;
  }
  return out;
}
