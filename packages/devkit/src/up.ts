// `shoal up`: a whole fleet on this machine. Embedded aedes broker, the controller,
// N device daemons (child processes, each with its own config and store), a fleet
// key pair, a signed model package rolled out in waves, one prompt over MQTT.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startAedes, type RunningBroker } from './brokers.js';
import { ControllerClient, upConnectionFile, resolveConfig, startController, type Controller, renderDevices, renderRollout, waitRollout, buildPackage, generateFleetKeys, WEB_DIR } from '@shoal/controller';
import { createLogger, sharedDir as defaultSharedDir, writeFileAtomicSync, ShoalError } from '@shoal/common';
import { writeDemoTokenizer } from './demo-tokenizer.js';
import { SimDevice } from './sim.js';

export interface UpOptions {
  model?: string;
  devices: number;
  dir: string;
  brokerPort: number;
  apiPort: number;
  sim?: boolean;
  exit?: boolean;
  /** Resolves when the demo is up (tests); default waits for SIGINT/SIGTERM. */
  until?: Promise<void>;
  log?: (s: string) => void;
}

const CLI_MAIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/src/main.js');

interface DeviceChild { id: string; proc: ChildProcess; logFile: string; exited: Promise<number | null> }

function startDaemon(id: string, configFile: string, logFile: string): DeviceChild {
  const log = fs.openSync(logFile, 'a');
  const proc = spawn(process.execPath, [CLI_MAIN, 'device', '--config', configFile], { stdio: ['ignore', log, log] });
  fs.closeSync(log);
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  proc.once('error', () => undefined);
  return { id, proc, logFile, exited };
}

async function stopChild(c: DeviceChild): Promise<void> {
  if (c.proc.exitCode !== null || c.proc.signalCode !== null) return;
  c.proc.kill('SIGTERM');
  const t = setTimeout(() => c.proc.kill('SIGKILL'), 15_000);
  await c.exited;
  clearTimeout(t);
}

async function defaultModel(dir: string, log: (s: string) => void): Promise<string> {
  const out = path.join(dir, 'model-tiny');
  if (fs.existsSync(path.join(out, 'config.json'))) return out;
  let gen: typeof import('@shoal/modelkit');
  try {
    gen = await import('@shoal/modelkit');
  } catch (e) {
    throw new ShoalError('MODEL_DIR_INVALID', `cannot load the model generator (${(e as Error).message}); run \`make\` first, or pass --model DIR`);
  }
  // a real Llama-2 tokenizer when the shared data sits beside the checkout ($SHOAL_SHARED or ../shared)
  const sharedDir = defaultSharedDir;
  const sharedTokenizer = path.join(sharedDir, 'models', 'llama2-tokenizer-32k');
  const tokCandidates = [process.env.SHOAL_TOKENIZER_DIR, process.env.SHOAL_UP_DEMO_TOKENIZER ? undefined : sharedTokenizer].filter((x): x is string => Boolean(x));
  let tokenizerDir = tokCandidates.find((d) => fs.existsSync(path.join(d, 'tokenizer.json')));
  if (!tokenizerDir) {
    // a fresh checkout: write a small byte-level tokenizer so text prompts work
    tokenizerDir = path.join(dir, 'demo-tokenizer');
    writeDemoTokenizer(tokenizerDir);
  }
  log(`generating a tiny INT4 model in ${out} (tokenizer from ${tokenizerDir}) ...`);
  gen.generateModel({ out, shape: 'tiny', quant: 'awq-w4g128', seed: 1, tokenizerDir, force: true });
  return out;
}

export async function runUp(o: UpOptions): Promise<void> {
  const log = o.log ?? ((s: string) => process.stdout.write(s + '\n'));
  if (!Number.isInteger(o.devices) || o.devices < 1 || o.devices > 64) throw new ShoalError('BAD_REQUEST', '--devices must be an integer from 1 to 64');
  const dir = path.resolve(o.dir);
  fs.mkdirSync(dir, { recursive: true });
  const keysDir = path.join(dir, 'keys');
  const keys = fs.existsSync(path.join(keysDir, 'fleet.key'))
    ? { privateKey: path.join(keysDir, 'fleet.key'), publicKey: path.join(keysDir, 'fleet.pub') }
    : generateFleetKeys(keysDir);

  let broker: RunningBroker | null = null;
  let ctl: Controller | null = null;
  const children: DeviceChild[] = [];
  const sims: SimDevice[] = [];
  const connFile = upConnectionFile();
  const stopAll = async () => {
    log('stopping ...');
    await Promise.all(children.map(stopChild));
    await Promise.all(sims.map((s) => s.stop()));
    await ctl?.close().catch(() => undefined);
    await broker?.close().catch(() => undefined);
    try {
      const j = JSON.parse(fs.readFileSync(connFile, 'utf8')) as { dir?: string };
      if (j.dir === dir) fs.rmSync(connFile, { force: true });
    } catch { /* not ours or gone */ }
    log('stopped: broker, controller and all devices');
  };

  // Ctrl-C at any point stops everything this command started
  let requestStop!: () => void;
  const stopRequested = new Promise<void>((resolve) => { requestStop = resolve; });
  const onSignal = () => requestStop();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const step = <T>(p: Promise<T>): Promise<T> => Promise.race([
    p, stopRequested.then((): never => { throw new ShoalError('INTERRUPTED', 'interrupted; everything started was stopped'); }),
  ]);

  try {
    broker = await startAedes(o.brokerPort);
    log(`broker    aedes (MQTT 3.1.1) on ${broker.url}`);
    const token = randomBytes(24).toString('hex');
    const ctlCfgRaw = {
      broker: { url: broker.url, protocolVersion: 4 },
      http: { host: '127.0.0.1', port: o.apiPort },
      token, dataDir: './controller-data', fleetPublicKey: path.relative(dir, keys.publicKey),
      rollout: { tickMs: 200, defaultTimeoutSec: 300 }, logLevel: 'warn',
    };
    writeFileAtomicSync(path.join(dir, 'controller.json'), JSON.stringify(ctlCfgRaw, null, 2) + '\n', { mode: 0o600 });
    ctl = await step(startController(resolveConfig(ctlCfgRaw, dir), { logger: createLogger('warn', undefined, path.join(dir, 'controller.log'), { sync: false }) }));
    const apiUrl = `http://127.0.0.1:${ctl.api.address.port}`;
    log(`controller ${apiUrl}/api (log ${path.join(dir, 'controller.log')})`);
    writeFileAtomicSync(connFile, JSON.stringify({ api: apiUrl, token, dir }, null, 2) + '\n', { mode: 0o600 });
    // the token rides in the fragment: browsers never send it to the server or in a Referer
    const dashboardUrl = `${apiUrl}/#token=${token}`;
    const webBuilt = fs.existsSync(path.join(WEB_DIR, 'index.html'));
    log(`dashboard ${webBuilt ? dashboardUrl : `not built (run \`make web\`); it would be at ${apiUrl}/`}`);
    const client = new ControllerClient({ api: apiUrl, token });

    // devices
    for (let i = 1; i <= o.devices; i++) {
      const id = `robot-${i}`;
      if (o.sim) {
        const s = new SimDevice({ id, brokerUrl: broker.url, group: 'demo', labels: { site: 'local' }, intervalSec: 2 });
        await step(s.connect());
        sims.push(s);
        continue;
      }
      const ddir = path.join(dir, 'devices', id);
      fs.mkdirSync(ddir, { recursive: true });
      const dcfg = {
        configVersion: 1, deviceId: id, group: 'demo', labels: { site: 'local', index: String(i) }, logLevel: 'info',
        broker: { url: broker.url, protocolVersion: 4 }, store: { dir: path.join(ddir, 'store'), reserveBytes: 0 },
        http: { enabled: true, host: '127.0.0.1', port: 0 }, telemetryIntervalSec: 2, fleetPublicKey: keys.publicKey,
        engine: { threads: 1 },
      };
      const cfgFile = path.join(ddir, 'device.json');
      writeFileAtomicSync(cfgFile, JSON.stringify(dcfg, null, 2) + '\n');
      children.push(startDaemon(id, cfgFile, path.join(ddir, 'daemon.log')));
    }
    log(`devices   ${o.devices} ${o.sim ? 'simulated' : 'device daemons'}: robot-1 .. robot-${o.devices}${o.sim ? '' : ` (logs in ${path.join(dir, 'devices')}/*/daemon.log)`}`);
    const deadline = Date.now() + 60_000;
    while (ctl.storage.listDevices().filter((d) => d.online).length < o.devices) {
      const dead = children.find((c) => c.proc.exitCode !== null);
      if (dead) throw new ShoalError('CHILD_FAILED', `device daemon ${dead.id} exited with ${dead.proc.exitCode}; see ${dead.logFile}`);
      if (Date.now() > deadline) throw new ShoalError('TIMEOUT', `devices did not come online within 60 s; see ${path.join(dir, 'devices')}/*/daemon.log`);
      await step(new Promise((r) => setTimeout(r, 200)));
    }
    log(`           all ${o.devices} online`);

    // model package
    const modelDir = o.model ? path.resolve(o.model) : await step(defaultModel(dir, log));
    const name = (o.model ? path.basename(modelDir) : 'tiny').replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '') || 'model';
    let version = '1.0.0';
    for (let n = 1; ctl.registry.get(name, version); n++) version = `1.0.${n}`;
    const pkgDir = path.join(dir, 'packages', `${name}-${version}`);
    const built = await step(buildPackage({ modelDir, name, version, keyFile: keys.privateKey, outDir: pkgDir, force: true }));
    log(`package   ${name}@${version}: ${built.manifest.files.length} files, signed with ${keys.privateKey}`);
    await step(client.uploadPackage(pkgDir));

    // rollout in waves
    const waves = o.devices >= 3 ? '1,50%,100%' : '1,100%';
    const { rollout } = await client.json<{ rollout: { id: string } }>('POST', '/api/rollouts', { model: `${name}@${version}`, to: 'all', waves, maxFailures: '0', timeoutSec: 300 });
    log(`rollout   ${rollout.id}: ${name}@${version} to all, waves ${waves}`);
    const r = await step(waitRollout(client, rollout.id, false));
    log(renderRollout(r));
    if (r.status !== 'succeeded') throw new ShoalError('DEVICE_ERROR', `the rollout did not succeed (${r.message}); see the device logs in ${path.join(dir, 'devices')}`);

    // one prompt through MQTT
    const target = 'robot-1';
    const prompt = 'Once upon a time';
    log(`\nprompt on ${target} (controller -> MQTT -> device): "${prompt}"`);
    process.stdout.write('  ');
    let final: Record<string, any> | null = null;
    for await (const line of client.stream(`/api/devices/${target}/infer`, { prompt, maxTokens: 32, temperature: 0 })) {
      if (line.chunk) process.stdout.write(String((line.chunk as { text: string }).text));
      if (line.done) final = line;
    }
    process.stdout.write('\n');
    if (!final?.ok) log(`  generation failed: ${final?.error?.code}: ${final?.error?.message}`);
    else log(`  [${final.result?.usage?.completionTokens ?? '?'} tokens, ${final.result?.timings?.decodeTokPerSec?.toFixed?.(1) ?? '-'} tok/s]`);

    await step(new Promise((res) => setTimeout(res, 2500))); // one telemetry round for the table
    const { devices } = await client.json<{ devices: Record<string, any>[] }>('GET', '/api/devices');
    log('\n' + renderDevices(devices));
    const cli = `node ${path.relative(process.cwd(), CLI_MAIN) || CLI_MAIN}`;
    log(`
${webBuilt ? `open the dashboard: ${dashboardUrl}\n` : ''}
try next (connection settings are in ${connFile}; or export SHOAL_API=${apiUrl} SHOAL_TOKEN=${token}):
  ${cli} fleet ls
  ${cli} fleet infer robot-${Math.min(2, o.devices)} "The robot said"
  ${cli} fleet telemetry robot-1 --watch
  ${cli} fleet events
  ${cli} fleet exec robot-${o.devices} info
  ${cli} fleet rollout status
  ${cli} package --model ${modelDir} --name ${name} --version 2.0.0 --key ${keys.privateKey} --out ${path.join(dir, 'packages', `${name}-2.0.0`)}
  ${cli} fleet package add ${path.join(dir, 'packages', `${name}-2.0.0`)}
  ${cli} fleet deploy ${name}@2.0.0 --to all --waves 1,50%,100% --max-failures 0
${o.exit ? '' : 'Ctrl-C stops the broker, the controller and every device.'}`);
    if (o.exit) return;
    await (o.until ?? stopRequested);
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
    await stopAll();
  }
}
