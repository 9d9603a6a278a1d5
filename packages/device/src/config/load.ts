// Reads and validates the device configuration (JSON Schema, ajv), filling defaults.
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { createPublicKey } from 'node:crypto';
import { createRequire } from 'node:module';
import { Ajv, type ErrorObject } from 'ajv';
import { ShoalError } from '@shoal/common';

const require = createRequire(import.meta.url);
// schema.json lives next to this file in the source tree and is copied beside the
// build (tsconfig includes it); the source copy is the fallback.
function loadSchema(): object {
  const here = path.dirname(new URL(import.meta.url).pathname);
  const candidates = [path.join(here, 'schema.json'), path.resolve(here, '../../../src/config/schema.json')];
  for (const c of candidates) if (existsSync(c)) return require(c) as object;
  throw new Error(`device config schema.json not found (looked in ${candidates.join(', ')})`);
}

export interface DeviceConfig {
  configVersion: 1;
  deviceId: string;
  group?: string;
  labels: Record<string, string>;
  logLevel: 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';
  broker: {
    url: string; username?: string; password?: string; caFile?: string; certFile?: string; keyFile?: string;
    protocolVersion: 4 | 5 | 'auto'; keepaliveSec: number; reconnectMinMs: number; reconnectMaxMs: number;
  };
  store: { dir: string; keepVersions: number; reserveBytes: number };
  http: { enabled: boolean; host: string; port: number };
  telemetryIntervalSec: number;
  fleetPublicKey: string;
  queue: { maxDepth: number; maxConcurrent: 1; defaultDeadlineSec: number };
  engine: { threads: number; backend: 'auto' | 'cpu' | 'cuda'; kvCache: 'f16' | 'f32' | 'q8'; lmHead: 'auto' | 'native' | 'q8'; expertCache: boolean; contextSize: number; maxTokens: number; kvSlots: number; kvMemoryMB: number; prefixCache: boolean };
  health: { timeoutSec: number; tokens: number; prompt: string };
  download: { retries: number; idleTimeoutSec: number; progressIntervalMs: number; retryWindowSec: number; retryMaxDelaySec: number };
  outbox: { maxEvents: number; holdAfterAckMs: number };
  shutdown: { drainTimeoutSec: number };
  jetson: { sysfsRoot: string };
}

let validator: ReturnType<Ajv['compile']> | null = null;
function getValidator() {
  if (!validator) {
    const ajv = new Ajv({ allErrors: true, useDefaults: true, strict: true });
    validator = ajv.compile(loadSchema());
  }
  return validator;
}

function describe(e: ErrorObject): string {
  const where = e.instancePath ? e.instancePath.slice(1).replace(/\//g, '.') : '(root)';
  if (e.keyword === 'additionalProperties') return `${where}: unknown property '${(e.params as { additionalProperty: string }).additionalProperty}'`;
  if (e.keyword === 'enum') return `${where}: must be one of ${JSON.stringify((e.params as { allowedValues: unknown[] }).allowedValues)}`;
  if (e.keyword === 'const') return `${where}: must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
  return `${where}: ${e.message ?? e.keyword}`;
}

/** Validates a parsed config object; relative paths resolve against baseDir. */
export function validateConfig(raw: unknown, baseDir = process.cwd()): DeviceConfig {
  if (raw && typeof raw === 'object' && 'configVersion' in raw && (raw as { configVersion: unknown }).configVersion !== 1) {
    throw new ShoalError('CONFIG_UNSUPPORTED_VERSION', `configVersion ${JSON.stringify((raw as { configVersion: unknown }).configVersion)} is not supported (this daemon reads configVersion 1)`);
  }
  const cfg = structuredClone(raw) as DeviceConfig;
  const validate = getValidator();
  if (!validate(cfg)) {
    const lines = (validate.errors ?? []).map(describe);
    throw new ShoalError('CONFIG_INVALID', `invalid device config:\n  - ${lines.join('\n  - ')}`);
  }
  const abs = (p: string) => (path.isAbsolute(p) ? p : path.resolve(baseDir, p));
  cfg.store.dir = abs(cfg.store.dir);
  for (const k of ['caFile', 'certFile', 'keyFile'] as const) if (cfg.broker[k]) cfg.broker[k] = abs(cfg.broker[k]!);
  if (cfg.jetson.sysfsRoot) cfg.jetson.sysfsRoot = abs(cfg.jetson.sysfsRoot);
  if (cfg.broker.reconnectMaxMs < cfg.broker.reconnectMinMs) cfg.broker.reconnectMaxMs = cfg.broker.reconnectMinMs;
  // fleetPublicKey: inline PEM or a file path
  let pem = cfg.fleetPublicKey;
  if (!pem.includes('-----BEGIN')) {
    const file = abs(pem);
    if (!existsSync(file)) throw new ShoalError('FLEET_KEY_INVALID', `fleetPublicKey: '${pem}' is neither PEM text nor an existing file`);
    pem = readFileSync(file, 'utf8');
  }
  try {
    const key = createPublicKey(pem);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error(`key type is ${key.asymmetricKeyType}`);
  } catch (e) {
    throw new ShoalError('FLEET_KEY_INVALID', `fleetPublicKey is not an Ed25519 public key: ${(e as Error).message}`);
  }
  cfg.fleetPublicKey = pem;
  return cfg;
}

export function loadConfig(file: string): DeviceConfig {
  const abs = path.resolve(file);
  if (!existsSync(abs)) throw new ShoalError('CONFIG_NOT_FOUND', `config file ${abs} does not exist`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(abs, 'utf8'));
  } catch (e) {
    throw new ShoalError('CONFIG_INVALID_JSON', `config file ${abs} is not valid JSON: ${(e as Error).message}`);
  }
  return validateConfig(raw, path.dirname(abs));
}
