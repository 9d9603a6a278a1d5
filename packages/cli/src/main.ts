#!/usr/bin/env node
// The one `shoal` command. Each area registers its own subcommands.
import { Command } from 'commander';
import { registerEngineCommands } from '@shoal/engine/commands';
import { registerToolCommands } from '@shoal/modelkit/commands';
import { registerDeviceCommands } from '@shoal/device/commands';
import { registerControllerCommands } from '@shoal/controller/commands';
import { registerDevkitCommands } from '@shoal/devkit/commands';
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
registerDevkitCommands(program);

await runCli(program);
