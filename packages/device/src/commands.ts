import type { Command } from 'commander';
import { loadConfig } from './config/load.js';

/** `shoal device --config device.json` runs the device daemon. */
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
}
