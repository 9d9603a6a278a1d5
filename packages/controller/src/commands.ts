// `shoal controller`, `shoal keygen`, `shoal package`, `shoal fleet ...`.
import fs from 'node:fs';
import path from 'node:path';
import { Command } from 'commander';
import cliProgress from 'cli-progress';
import Table from 'cli-table3';
import { ControllerClient, resolveConnection } from './client.js';
import { loadConfigFile } from './config.js';
import { startController } from './controller.js';
import { buildPackage, generateFleetKeys } from './packages.js';
import { ago, renderDevices, renderRollout, tableStyle, waitRollout } from './format.js';
import type { RolloutRecord } from './storage/types.js';
import { onSignals, ShoalError } from '@shoal/common';

interface FleetOpts { api?: string; token?: string; json?: boolean }

const isTty = () => Boolean(process.stdout.isTTY);
const out = (s: string): void => { process.stdout.write(s + "\n"); };

function client(cmd: Command): { c: ControllerClient; o: FleetOpts } {
  const o = cmd.optsWithGlobals() as FleetOpts;
  return { c: new ControllerClient(resolveConnection(o)), o };
}

function parseModelRef(s: string): { name: string; version: string } {
  const at = s.lastIndexOf('@');
  if (at <= 0 || at === s.length - 1) throw new ShoalError('INVALID_MODEL_REF', `'${s}' is not NAME@VERSION (e.g. stories@1.0)`);
  return { name: s.slice(0, at), version: s.slice(at + 1) };
}


export function registerControllerCommands(program: Command): void {
  // `shoal package --version V` must reach the subcommand, not the root's -V/--version
  program.enablePositionalOptions();
  program.command('controller')
    .description('run the fleet controller (MQTT ingest, rollouts, HTTP API, artifact server)')
    .requiredOption('--config <file>', 'controller.json (see docs/controller.md)')
    .action(async (o: { config: string }) => {
      const cfg = loadConfigFile(o.config);
      const ctl = await startController(cfg);
      process.stderr.write(`controller: API http://${ctl.api.address.host}:${ctl.api.address.port}/api, artifacts at ${ctl.publicUrl}/artifacts, broker ${cfg.broker.url}\n`);
      onSignals(() => ctl.close());
      await new Promise(() => undefined);
    });

  program.command('keygen')
    .description('create the fleet signing key pair (ed25519, PEM): fleet.key (0600) and fleet.pub')
    .requiredOption('--out <dir>', 'directory for fleet.key and fleet.pub')
    .option('--force', 'replace existing keys')
    .option('--json', 'machine-readable output')
    .action((o: { out: string; force?: boolean; json?: boolean }) => {
      const k = generateFleetKeys(o.out, { force: o.force });
      if (o.json) out(JSON.stringify(k));
      else out(`wrote ${k.privateKey} (private, mode 0600) and ${k.publicKey}\nput the public key in each device's fleetPublicKey and in controller.json`);
    });

  program.command('package')
    .description('build a signed model package: the files plus manifest.json (sizes, sha256, ed25519 signature)')
    .requiredOption('--model <dir>', 'checkpoint directory')
    .requiredOption('--name <name>', 'package name')
    .requiredOption('--version <version>', 'package version')
    .requiredOption('--key <file>', 'fleet private key (shoal keygen)')
    .requiredOption('--out <dir>', 'output package directory')
    .option('--arch <arch>', 'architecture (default: from config.json)')
    .option('--quant <quant>', 'quantization (default: from config.json)')
    .option('--force', 'replace --out if it exists')
    .option('--json', 'machine-readable output')
    .action(async (o: { model: string; name: string; version: string; key: string; out: string; arch?: string; quant?: string; force?: boolean; json?: boolean }) => {
      const bar = !o.json && isTty() ? new cliProgress.SingleBar({ format: ' hashing {bar} {value}/{total} files | {file}' }, cliProgress.Presets.shades_classic) : null;
      const r = await buildPackage({
        modelDir: o.model, name: o.name, version: o.version, keyFile: o.key, outDir: o.out, architecture: o.arch, quantization: o.quant, force: o.force,
        onFile: (file, i, total) => { if (bar) { if (i === 0) bar.start(total, 0, { file }); bar.update(i + 1, { file }); } },
      });
      bar?.stop();
      if (o.json) out(JSON.stringify({ dir: r.dir, manifestSha256: r.manifestSha256, manifest: r.manifest }));
      else out(`package ${r.manifest.name}@${r.manifest.version}: ${r.manifest.files.length} file(s), ${r.manifest.files.reduce((s, f) => s + f.size, 0)} bytes, signed\n  ${r.dir}/manifest.json sha256 ${r.manifestSha256}\nnext: shoal fleet package add ${r.dir}`);
    });

  const fleet = program.command('fleet')
    .description('operate the fleet through the controller API')
    .option('--api <url>', 'controller API URL (or SHOAL_API)')
    .option('--token <token>', 'API bearer token (or SHOAL_TOKEN)')
    .option('--json', 'machine-readable output')
    // these options also work after the subcommand: `shoal fleet ls --json`
    .enablePositionalOptions(false);

  fleet.command('ls').description('devices: online, model, tok/s, temperatures, last seen')
    .action(async (_o, cmd: Command) => {
      const { c, o } = client(cmd);
      const { devices } = await c.json<{ devices: Record<string, any>[] }>('GET', '/api/devices');
      if (o.json) return out(JSON.stringify(devices, null, 2));
      if (devices.length === 0) return out('no devices have reported yet');
      out(renderDevices(devices));
      out(`${devices.filter((d) => d.online).length}/${devices.length} online`);
    });

  fleet.command('show <device>').description('one device: reported state and last telemetry')
    .action(async (id: string, _o, cmd: Command) => {
      const { c } = client(cmd);
      out(JSON.stringify((await c.json<{ device: unknown }>('GET', `/api/devices/${encodeURIComponent(id)}`)).device, null, 2));
    });

  fleet.command('infer <device> <prompt>').description('run a prompt on a device; the answer streams back over MQTT via the controller')
    .option('--max-tokens <n>', 'tokens to generate', (v) => Number(v), 64)
    .option('--temperature <t>', 'sampling temperature (0 = greedy)', (v) => Number(v))
    .option('--seed <n>', 'sampling seed', (v) => Number(v))
    .option('--timeout <s>', 'seconds to wait', (v) => Number(v), 300)
    .action(async (id: string, prompt: string, x: { maxTokens: number; temperature?: number; seed?: number; timeout: number }, cmd: Command) => {
      const { c, o } = client(cmd);
      const body = { prompt, maxTokens: x.maxTokens, temperature: x.temperature, seed: x.seed, timeoutMs: Math.round(x.timeout * 1000) };
      let final: Record<string, any> | null = null;
      for await (const line of c.stream(`/api/devices/${encodeURIComponent(id)}/infer`, body)) {
        if (line.chunk && !o.json) process.stdout.write(String((line.chunk as { text: string }).text));
        if (line.done) final = line;
      }
      if (o.json) return out(JSON.stringify(final));
      process.stdout.write('\n');
      if (!final?.ok) throw Object.assign(new ShoalError('DEVICE_ERROR', `${final?.error?.message ?? 'no answer'}`), { code: final?.error?.code ?? 'DEVICE_ERROR' });
      const r = final.result as { usage?: { completionTokens: number }; timings?: { decodeTokPerSec: number | null; ttftMs: number | null } } | null;
      if (r?.timings) process.stderr.write(`[${id}: ${r.usage?.completionTokens ?? '?'} tokens, ${r.timings.decodeTokPerSec?.toFixed(1) ?? '-'} tok/s, first token ${r.timings.ttftMs?.toFixed(0) ?? '-'} ms]\n`);
    });

  fleet.command('exec <device> <op> [args]').description('send a command (ping, info, generate, cancel, activate, rollback, remove, set-telemetry-interval); ARGS is JSON')
    .option('--timeout <s>', 'seconds to wait', (v) => Number(v), 30)
    .action(async (id: string, op: string, args: string | undefined, x: { timeout: number }, cmd: Command) => {
      const { c } = client(cmd);
      let parsed: unknown = {};
      if (args) {
        try { parsed = JSON.parse(args); } catch (e) { throw new ShoalError('INVALID_JSON', `ARGS is not JSON (${(e as Error).message}); e.g. '{"seconds":5}'`); }
      }
      const r = await c.json<{ reply: Record<string, any> }>('POST', `/api/devices/${encodeURIComponent(id)}/exec`, { op, args: parsed, timeoutMs: Math.round(x.timeout * 1000) });
      out(JSON.stringify(r.reply, null, 2));
      if (!r.reply.ok) process.exitCode = 1;
    });

  fleet.command('telemetry [device]').description('telemetry history; --watch follows new samples')
    .option('--watch', 'keep printing new samples')
    .option('--limit <n>', 'samples', (v) => Number(v), 20)
    .action(async (device: string | undefined, x: { watch?: boolean; limit: number }, cmd: Command) => {
      const { c, o } = client(cmd);
      let since: number | undefined;
      const q = (s?: number) => `/api/telemetry?limit=${x.limit}${device ? `&device=${encodeURIComponent(device)}` : ''}${s !== undefined ? `&since=${s}` : ''}`;
      const print = (rows: { seq: number; deviceId: string; ts: number; data: Record<string, any> }[]) => {
        for (const r of rows) {
          since = r.seq;
          if (o.json) { out(JSON.stringify(r)); continue; }
          const d = r.data;
          const temps = Object.entries(d.temperatures ?? {}).map(([k, v]) => `${k}=${Number(v).toFixed(1)}`).join(' ');
          out(`${new Date(r.ts).toISOString()} ${r.deviceId.padEnd(14)} cpu ${d.cpu ? Number(d.cpu.loadPct).toFixed(0) + '%' : '-'} mem ${d.memory ? (d.memory.usedBytes / 2 ** 30).toFixed(1) + 'G' : '-'} tok/s ${d.inference?.decodeTokPerSec ?? '-'} ${temps}`);
        }
      };
      print((await c.json<{ telemetry: any[] }>('GET', q())).telemetry);
      if (!x.watch) return;
      for (;;) {
        await new Promise((r) => setTimeout(r, 1000));
        print((await c.json<{ telemetry: any[] }>('GET', q(since ?? 0))).telemetry);
      }
    });

  fleet.command('events').description('device events (OTA progress, activations, failures)')
    .option('--device <id>', 'one device')
    .option('--type <type>', 'one event type, e.g. ota.failed')
    .option('--limit <n>', 'events', (v) => Number(v), 50)
    .option('--watch', 'keep printing new events')
    .action(async (x: { device?: string; type?: string; limit: number; watch?: boolean }, cmd: Command) => {
      const { c, o } = client(cmd);
      let since: number | undefined;
      const q = (s?: number) => `/api/events?limit=${x.limit}${x.device ? `&device=${encodeURIComponent(x.device)}` : ''}${x.type ? `&type=${encodeURIComponent(x.type)}` : ''}${s !== undefined ? `&since=${s}` : ''}`;
      const print = (rows: { seq: number; deviceId: string; ts: number; type: string; data: Record<string, unknown> }[]) => {
        for (const e of rows) {
          since = e.seq;
          out(o.json ? JSON.stringify(e) : `${new Date(e.ts).toISOString()} ${e.deviceId.padEnd(14)} ${e.type.padEnd(16)} ${JSON.stringify(e.data)}`);
        }
      };
      print((await c.json<{ events: any[] }>('GET', q())).events);
      while (x.watch) {
        await new Promise((r) => setTimeout(r, 1000));
        print((await c.json<{ events: any[] }>('GET', q(since ?? 0))).events);
      }
    });

  fleet.command('audit').description('audit log: every command and rollout action')
    .option('--limit <n>', 'entries', (v) => Number(v), 50)
    .action(async (x: { limit: number }, cmd: Command) => {
      const { c, o } = client(cmd);
      const { audit } = await c.json<{ audit: { ts: number; actor: string; action: string; target: string; details: unknown }[] }>('GET', `/api/audit?limit=${x.limit}`);
      for (const a of audit) out(o.json ? JSON.stringify(a) : `${new Date(a.ts).toISOString()} ${a.actor.padEnd(10)} ${a.action.padEnd(18)} ${a.target} ${JSON.stringify(a.details)}`);
    });

  fleet.command('deploy <model>').description('roll NAME@VERSION out wave by wave')
    .requiredOption('--to <target>', 'all | group:G | label=value | id,id,...')
    .option('--waves <spec>', 'cumulative wave sizes: counts or percentages', '1,10%,50%,100%')
    .option('--max-failures <n>', 'failures a wave tolerates: count or percentage', '0')
    .option('--timeout <s>', 'seconds a device may take per wave', (v) => Number(v))
    .option('--no-wait', 'return once the rollout is created')
    .action(async (model: string, x: { to: string; waves: string; maxFailures: string; timeout?: number; wait: boolean }, cmd: Command) => {
      const { c, o } = client(cmd);
      parseModelRef(model);
      const { rollout } = await c.json<{ rollout: RolloutRecord }>('POST', '/api/rollouts', { model, to: x.to, waves: x.waves, maxFailures: x.maxFailures, timeoutSec: x.timeout });
      if (!o.json) out(`rollout ${rollout.id}: ${model} to ${rollout.devices.length} device(s) in ${new Set(rollout.devices.map((d) => d.wave)).size} wave(s)`);
      if (!x.wait) return out(o.json ? JSON.stringify(rollout) : `follow it with: shoal fleet rollout status ${rollout.id}`);
      const r = await waitRollout(c, rollout.id, Boolean(o.json));
      out(o.json ? JSON.stringify(r) : renderRollout(r));
      if (r.status !== 'succeeded') process.exitCode = 2;
    });

  const rollout = fleet.command('rollout').description('rollout status and control');
  rollout.command('status [id]').description('one rollout (default: the latest), or --all')
    .option('--all', 'list recent rollouts')
    .action(async (id: string | undefined, x: { all?: boolean }, cmd: Command) => {
      const { c, o } = client(cmd);
      if (x.all) {
        const { rollouts } = await c.json<{ rollouts: RolloutRecord[] }>('GET', '/api/rollouts');
        if (o.json) return out(JSON.stringify(rollouts, null, 2));
        const t = new Table({ head: ['id', 'model', 'target', 'status', 'wave', 'active', 'created'], style: tableStyle() });
        for (const r of rollouts) t.push([r.id, `${r.name}@${r.version}`, r.target, r.status, String(r.currentWave + 1), `${r.devices.filter((d) => d.status === 'active').length}/${r.devices.length}`, ago(r.createdAt)]);
        return out(t.toString());
      }
      const { rollout: r } = await c.json<{ rollout: RolloutRecord }>('GET', `/api/rollouts/${encodeURIComponent(id ?? 'latest')}`);
      out(o.json ? JSON.stringify(r, null, 2) : renderRollout(r));
    });
  for (const action of ['pause', 'resume', 'abort'] as const) {
    rollout.command(`${action} [id]`).description(`${action} a rollout (default: the latest)${action === 'abort' ? '; puts its current wave back on the previous version' : ''}`)
      .action(async (id: string | undefined, _x, cmd: Command) => {
        const { c, o } = client(cmd);
        const { rollout: r } = await c.json<{ rollout: RolloutRecord }>('POST', `/api/rollouts/${encodeURIComponent(id ?? 'latest')}/${action}`);
        out(o.json ? JSON.stringify(r) : `rollout ${r.id} is ${r.status}${r.message ? `: ${r.message}` : ''}`);
      });
  }

  const pkg = fleet.command('package').description('packages the controller serves');
  pkg.command('add <dir>').description('upload a package directory (built by `shoal package`)')
    .option('--register', 'the controller runs on this machine: register the directory by path instead of uploading')
    .action(async (dir: string, x: { register?: boolean }, cmd: Command) => {
      const { c, o } = client(cmd);
      if (!fs.existsSync(path.join(dir, 'manifest.json'))) throw new ShoalError('PACKAGE_INVALID', `${dir} has no manifest.json; build a package with \`shoal package\``);
      let res: Record<string, any>;
      if (x.register) {
        res = await c.json('POST', '/api/packages/register', { dir: path.resolve(dir) });
      } else {
        const bar = !o.json && isTty() ? new cliProgress.SingleBar({ format: ' upload {bar} {percentage}% | {value}/{total} bytes | {file}' }, cliProgress.Presets.shades_classic) : null;
        let started = false;
        res = await c.uploadPackage(dir, (sent, total, file) => {
          if (!bar) return;
          if (!started) { bar.start(total, 0, { file }); started = true; }
          bar.update(sent, { file });
        });
        bar?.stop();
      }
      const p = res.package as { name: string; version: string; files: number; totalBytes: number; manifestSha256: string };
      out(o.json ? JSON.stringify(p) : `added ${p.name}@${p.version} (${p.files} files, ${p.totalBytes} bytes)\nnext: shoal fleet deploy ${p.name}@${p.version} --to all --waves 1,50%,100%`);
    });
  pkg.command('ls').description('registered packages')
    .action(async (_x, cmd: Command) => {
      const { c, o } = client(cmd);
      const { packages } = await c.json<{ packages: { name: string; version: string; files: number; totalBytes: number; manifestUrl: string; createdAt: number }[] }>('GET', '/api/packages');
      if (o.json) return out(JSON.stringify(packages, null, 2));
      const t = new Table({ head: ['package', 'files', 'bytes', 'manifest', 'added'], style: tableStyle() });
      for (const p of packages) t.push([`${p.name}@${p.version}`, String(p.files), String(p.totalBytes), p.manifestUrl, ago(p.createdAt)]);
      out(t.toString());
    });
}
