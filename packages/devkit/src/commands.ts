// devkit's commands: `shoal sim` and `shoal up` (the local harness; production packages never import them).
import { Option, type Command } from 'commander';
import cliProgress from 'cli-progress';
import { onSignals, ShoalError } from '@shoal/common';
import { SimFleet } from './sim.js';
import { runUp } from './up.js';

const isTty = () => Boolean(process.stdout.isTTY);

export function registerDevkitCommands(program: Command): void {
  program.command('sim')
    .description('simulated devices for load tests (state, telemetry, command replies, desired-state convergence)')
    .option('--devices <n>', 'number of devices', (v) => Number(v), 10)
    .requiredOption('--broker <url>', 'broker URL, e.g. mqtt://127.0.0.1:1883')
    .option('--interval <s>', 'telemetry interval in seconds', (v) => Number(v), 1)
    .option('--prefix <p>', 'device id prefix', 'sim')
    .option('--groups <list>', 'groups assigned round robin, e.g. a,b')
    .option('--fail <refs>', 'NAME@VERSION list whose health check fails')
    .addOption(new Option('--mqtt <v>', 'MQTT protocol version').choices(['4', '5']).default('4'))
    .action(async (x: { devices: number; broker: string; interval: number; prefix: string; groups?: string; fail?: string; mqtt: string }) => {
      if (!Number.isInteger(x.devices) || x.devices < 1) throw new ShoalError('BAD_REQUEST', '--devices must be a positive integer');
      if (!(x.interval > 0)) throw new ShoalError('BAD_REQUEST', '--interval must be a positive number of seconds');
      const fleetSim = new SimFleet({
        devices: x.devices, brokerUrl: x.broker, intervalSec: x.interval, prefix: x.prefix, groups: x.groups?.split(','),
        failVersions: x.fail ? new Set(x.fail.split(',')) : undefined, protocolVersion: Number(x.mqtt) as 4 | 5,
      });
      const bar = isTty() ? new cliProgress.SingleBar({ format: ' connecting {bar} {value}/{total}' }, cliProgress.Presets.shades_classic) : null;
      bar?.start(x.devices, 0);
      await fleetSim.start((n) => bar?.update(n));
      bar?.stop();
      process.stderr.write(`sim: ${x.devices} device(s) ${x.prefix}-0001.. on ${x.broker}, telemetry every ${x.interval}s; Ctrl-C stops\n`);
      onSignals(async () => {
        await fleetSim.stop();
        const s = fleetSim.sent();
        process.stderr.write(`sim: sent ${s.telemetry} telemetry, ${s.state} state, ${s.events} events, ${s.replies} replies\n`);
      });
      await new Promise(() => undefined);
    });

  program.command('up')
    .description('quick start: broker, controller and device daemons on this machine; a signed model rolled out in waves')
    .option('--model <dir>', 'checkpoint directory (default: a generated tiny model)')
    .option('--devices <n>', 'device daemons to start', (v) => Number(v), 3)
    .option('--dir <dir>', 'working directory for keys, configs and stores', '.shoal-up')
    .option('--broker-port <port>', 'port of the embedded broker (default: a free one)', (v) => Number(v), 0)
    .option('--api-port <port>', 'port of the controller API (default: a free one)', (v) => Number(v), 0)
    .option('--sim', 'use simulated devices instead of device daemons')
    .option('--exit', 'stop everything after the demo instead of waiting for Ctrl-C')
    .action(async (x: { model?: string; devices: number; dir: string; brokerPort: number; apiPort: number; sim?: boolean; exit?: boolean }) => {
      await runUp(x);
    });
}
