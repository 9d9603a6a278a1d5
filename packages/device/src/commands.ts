import type { Command } from 'commander';
import { loadConfig } from './config/load.js';
import { ShoalError } from '@shoal/common';

/** `shoal device --config device.json` runs the device daemon; `shoal doctor` checks the machine. */
export function registerDeviceCommands(program: Command): void {
  program
    .command('device')
    .description('Run the device daemon (MQTT agent, model store + OTA, local OpenAI-compatible HTTP API)')
    .requiredOption('-c, --config <file>', 'device configuration (JSON, configVersion 1)')
    .option('--check', 'validate the configuration and exit')
    .action(async (opts: { config: string; check?: boolean }) => {
      const cfg = loadConfig(opts.config);
      if (opts.check) {
        process.stdout.write(`config ok: device ${cfg.deviceId}, broker ${cfg.broker.url}, store ${cfg.store.dir}\n`);
        return;
      }
      const { DeviceDaemon } = await import('./daemon.js');
      const daemon = new DeviceDaemon(cfg);
      process.on('unhandledRejection', (e) => daemon.log.error({ err: (e as Error)?.stack ?? String(e) }, 'unhandled rejection'));
      process.on('uncaughtException', (e) => daemon.log.error({ err: e.stack ?? String(e) }, 'uncaught exception'));
      let signals = 0;
      const onSignal = (sig: NodeJS.Signals) => {
        if (++signals > 1) { daemon.log.warn({ sig }, 'second signal: exiting now'); process.exit(1); }
        daemon.stop(sig).then(() => process.exit(0), (e) => { daemon.log.error({ err: (e as Error).message }, 'stop failed'); process.exit(1); });
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      await daemon.start();
      // keep running until a signal arrives (the interval keeps the event loop alive)
      setInterval(() => {}, 1 << 30);
      await new Promise<never>(() => {});
    });

  program
    .command('doctor')
    .description('check this machine for a device: CPU kernels, GPU/CUDA and JetPack, memory for a model, broker, clock sync, store; what to fix')
    .option('--model <dir>', 'checkpoint folder: check that it fits in free memory')
    .option('--ctx <n>', 'context length for the KV cache estimate (default min(max_position_embeddings, 4096))', (v) => Number(v))
    .option('--broker <url>', 'MQTT broker to connect to, e.g. mqtt://127.0.0.1:1883')
    .option('--store <dir>', 'model store folder to check for writing and free space')
    .option('-c, --config <file>', 'device configuration: its broker URL and store folder (the options above win)')
    .option('--json', 'print the checks as JSON')
    .action(async (opts: { model?: string; ctx?: number; broker?: string; store?: string; config?: string; json?: boolean }) => {
      if (opts.ctx !== undefined && !(Number.isInteger(opts.ctx) && opts.ctx > 0)) throw new ShoalError('INVALID_ARGS', '--ctx must be a positive integer (tokens of context for the KV cache estimate)');
      const { runDoctorCli } = await import('./doctor/command.js');
      process.exitCode = await runDoctorCli(opts);
    });
}
