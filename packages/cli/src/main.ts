#!/usr/bin/env node
// The one `shoal` command. Each package declares its own subcommands; this file
// only knows their names and one-line summaries, and imports a package's
// command module when one of its commands runs, so `shoal --help` loads neither
// the addon nor SQLite nor MQTT.
import { Command, Help } from 'commander';
import { COMMAND_GROUPS, groupOf } from './commands.js';
import { runCli } from './run-cli.js';

const program = new Command();
program
  .name('shoal')
  .description('Shoal: INT4 LLM inference on the edge, and the fleet that runs it')
  .version('0.1.0')
  // `shoal package --version V` must reach the subcommand, not the root's -V/--version
  .enablePositionalOptions();

// The command named on the command line (`shoal help NAME` too); its group registers for real.
const args = process.argv.slice(2);
const first = args.findIndex((a) => !a.startsWith('-'));
const named = first < 0 ? undefined : args[first] === 'help' ? args[first + 1] : args[first];
const group = named === undefined ? undefined : groupOf(named);

const summaryTerms = new Map<Command, string>();
for (const g of COMMAND_GROUPS) {
  if (g === group) (await g.load())(program);
  else for (const c of g.commands) summaryTerms.set(program.command(c.name).description(c.summary), c.term);
}
// Summary-only commands list as their real ones do ("run [options]").
const help = new Help();
program.configureHelp({ subcommandTerm: (cmd) => summaryTerms.get(cmd) ?? help.subcommandTerm(cmd) });

await runCli(program);
