#!/usr/bin/env node
// The one `shoal` command. Each area registers its own subcommands.
import { Command } from 'commander';
import { registerEngineCommands } from '../native/ts/cli.js';
import { registerToolCommands } from '../native/ts/cli-tools.js';
import { registerDeviceCommands } from '../device/src/cli.js';
import { registerControllerCommands } from '../controller/src/cli.js';
import { runCli } from './run-cli.js';

const program = new Command();
program
  .name('shoal')
  .description('Shoal: INT4 LLM inference on the edge, and the fleet that runs it')
  .version('0.1.0');

registerEngineCommands(program);
registerToolCommands(program);
registerDeviceCommands(program);
registerControllerCommands(program);

await runCli(program);
