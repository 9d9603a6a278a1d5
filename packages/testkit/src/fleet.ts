// fleet.ts — shared setup for controller and devkit tests: real brokers, a real controller on a temp
// dir (SQLite, HTTP on 127.0.0.1 port 0), signed packages, simulated devices.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger } from '@shoal/common';
import { startAedes, startMosquitto, type RunningBroker } from '@shoal/devkit';
import { buildPackage, generateFleetKeys, resolveConfig, startController, type Controller, type ControllerConfigInput } from '@shoal/controller';

export type BrokerKind = 'aedes' | 'mosquitto';

export function tmpDir(prefix = 'shoal-ctl-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export async function startBroker(kind: BrokerKind): Promise<RunningBroker> {
  return kind === 'aedes' ? startAedes(0) : startMosquitto();
}

export const TOKEN = 'test-token-0123456789abcdef';

export async function startTestController(brokerUrl: string, dir: string, extra: Partial<ControllerConfigInput> = {}, protocolVersion: 4 | 5 = 4): Promise<Controller> {
  const keys = fs.existsSync(path.join(dir, 'keys', 'fleet.pub')) ? { publicKey: path.join(dir, 'keys', 'fleet.pub') } : generateFleetKeys(path.join(dir, 'keys'));
  const cfg = resolveConfig({
    broker: { url: brokerUrl, protocolVersion },
    http: { host: '127.0.0.1', port: 0 },
    token: TOKEN,
    dataDir: path.join(dir, 'data'),
    fleetPublicKey: keys.publicKey,
    rollout: { tickMs: 50, defaultTimeoutSec: 20 },
    logLevel: 'silent',
    ...extra,
  }, dir);
  return startController(cfg, { logger: createLogger('silent') });
}

/** A fake checkpoint directory with a few files. */
export function makeModelDir(dir: string, sizes = [1000, 70_000]): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ architectures: ['LlamaForCausalLM'], quantization_config: { quant_method: 'awq', bits: 4, group_size: 128 } }));
  sizes.forEach((n, i) => fs.writeFileSync(path.join(dir, `part-${i}.bin`), randomBytes(n)));
  return dir;
}

/** Builds and registers a signed package name@version with the controller. */
export async function addPackage(ctl: Controller, dir: string, name: string, version: string): Promise<string> {
  const model = makeModelDir(path.join(dir, `model-${name}-${version}`));
  const out = path.join(dir, `pkg-${name}-${version}`);
  await buildPackage({ modelDir: model, name, version, keyFile: path.join(dir, 'keys', 'fleet.key'), outDir: out });
  await ctl.registry.addFromDir(out, Date.now());
  return out;
}

export async function waitFor<T>(what: string, fn: () => T | undefined | null | false, timeoutMs = 20_000, everyMs = 50): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function api(ctl: Controller, method: string, p: string, body?: unknown, token: string | null = TOKEN): Promise<{ status: number; json: any; headers: Headers }> {
  const res = await fetch(`http://127.0.0.1:${ctl.api.address.port}${p}`, {
    method,
    headers: { ...(token ? { Authorization: `Bearer ${token}` } : {}), ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}) },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json: any = null;
  try { json = JSON.parse(text); } catch { json = text; }
  return { status: res.status, json, headers: res.headers };
}
