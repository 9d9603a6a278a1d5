// controller.json: validated with zod; relative paths resolve against the file's directory.
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { formatIssues } from '@shoal/protocol';
import { ShoalError } from '@shoal/common';

export const ControllerConfigSchema = z.object({
  broker: z.object({
    url: z.string().regex(/^(mqtts?|tcp|ssl|wss?):\/\//, 'broker.url must start with mqtt://, mqtts://, ws:// or wss://'),
    username: z.string().optional(),
    password: z.string().optional(),
    clientId: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/).optional(),
    /** 4 = MQTT 3.1.1 (works with aedes), 5 = MQTT 5 (mosquitto, EMQX, HiveMQ). */
    protocolVersion: z.union([z.literal(4), z.literal(5)]).default(4),
    /** MQTT 5 shared-subscription group: replicas with the same group split device traffic. */
    sharedGroup: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/).optional(),
    ca: z.string().optional(),
    cert: z.string().optional(),
    key: z.string().optional(),
  }).strict(),
  http: z.object({
    host: z.string().default('127.0.0.1'),
    port: z.number().int().min(0).max(65535).default(8080),
    /** Base URL devices use to reach the artifact server; default http://host:port. */
    publicUrl: z.string().url().optional(),
  }).strict().default({ host: '127.0.0.1', port: 8080 }),
  /** Bearer token for the HTTP API (or tokenFile). */
  token: z.string().min(16, 'token: at least 16 characters').optional(),
  tokenFile: z.string().optional(),
  dataDir: z.string().default('./controller-data'),
  /** PEM ed25519 public key; when set, packages must carry a valid signature. */
  fleetPublicKey: z.string().optional(),
  telemetry: z.object({
    maxAgeSec: z.number().positive().default(7 * 24 * 3600),
    maxRowsPerDevice: z.number().int().positive().default(100_000),
    pruneIntervalSec: z.number().positive().default(60),
  }).strict().default({ maxAgeSec: 7 * 24 * 3600, maxRowsPerDevice: 100_000, pruneIntervalSec: 60 }),
  rollout: z.object({
    tickMs: z.number().int().min(20).default(500),
    defaultTimeoutSec: z.number().positive().default(600),
  }).strict().default({ tickMs: 500, defaultTimeoutSec: 600 }),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
}).strict().refine((c) => c.token !== undefined || c.tokenFile !== undefined, 'set token or tokenFile (the API needs a bearer token)');

export type ControllerConfig = z.infer<typeof ControllerConfigSchema>;
export type ControllerConfigInput = z.input<typeof ControllerConfigSchema>;

export interface ResolvedConfig extends ControllerConfig {
  resolvedToken: string;
  fleetPublicKeyPem: string | null;
  dbFile: string;
  artifactsDir: string;
}

/** Validates a config object; paths resolve against baseDir. */
export function resolveConfig(raw: unknown, baseDir: string): ResolvedConfig {
  const r = ControllerConfigSchema.safeParse(raw);
  if (!r.success) throw new ShoalError('CONFIG_INVALID', `controller config: ${formatIssues(r.error)}; fix the file (see docs/controller.md)`);
  const c = r.data;
  const abs = (p: string) => path.resolve(baseDir, p);
  let token = c.token;
  if (token === undefined) {
    try {
      token = fs.readFileSync(abs(c.tokenFile!), 'utf8').trim();
    } catch (e) {
      throw new ShoalError('CONFIG_INVALID', `cannot read tokenFile ${abs(c.tokenFile!)}: ${(e as Error).message}`);
    }
    if (token.length < 16) throw new ShoalError('CONFIG_INVALID', `tokenFile ${abs(c.tokenFile!)}: token must be at least 16 characters`);
  }
  let pub: string | null = null;
  if (c.fleetPublicKey) {
    try {
      pub = fs.readFileSync(abs(c.fleetPublicKey), 'utf8');
    } catch (e) {
      throw new ShoalError('CONFIG_INVALID', `cannot read fleetPublicKey ${abs(c.fleetPublicKey)}: ${(e as Error).message}; run \`shoal keygen --out DIR\``);
    }
  }
  const dataDir = abs(c.dataDir);
  const broker = { ...c.broker };
  for (const k of ['ca', 'cert', 'key'] as const) if (broker[k]) broker[k] = abs(broker[k]!);
  return {
    ...c, broker, dataDir, resolvedToken: token, fleetPublicKeyPem: pub,
    dbFile: path.join(dataDir, 'controller.db'), artifactsDir: path.join(dataDir, 'artifacts'),
  };
}

export function loadConfigFile(file: string): ResolvedConfig {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new ShoalError('CONFIG_NOT_FOUND', `cannot read ${file}: ${(e as Error).message}; pass --config with a controller.json (see docs/controller.md)`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ShoalError('CONFIG_INVALID', `${file} is not valid JSON: ${(e as Error).message}`);
  }
  return resolveConfig(raw, path.dirname(path.resolve(file)));
}
