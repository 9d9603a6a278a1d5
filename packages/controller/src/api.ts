// JSON HTTP API (bearer token) and the artifact server. Reference: docs/controller.md.
import { createHash, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { GenerateArgs, formatIssues } from '@shoal/protocol';
import type { ControllerContext } from './context.js';
import { toControllerError } from './errors.js';
import { FleetLink } from './link.js';
import { LiveHub } from './live.js';
import { serveArtifact } from './packages.js';
import { isWebPath, serveWeb } from './web.js';
import { ShoalError } from '@shoal/common';

export interface ApiServer {
  server: http.Server;
  address: { host: string; port: number };
  close(): Promise<void>;
}

const MAX_JSON_BODY = 1024 * 1024;

async function readBody(req: http.IncomingMessage, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length;
    if (n > limit) throw new ShoalError('PAYLOAD_TOO_LARGE', `request body is over ${limit} bytes`);
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

async function readJson<T extends z.ZodType>(req: http.IncomingMessage, schema: T): Promise<z.infer<T>> {
  const body = await readBody(req, MAX_JSON_BODY);
  let raw: unknown = {};
  if (body.length > 0) {
    try { raw = JSON.parse(body.toString('utf8')); } catch (e) {
      throw new ShoalError('INVALID_JSON', `request body is not JSON: ${(e as Error).message}`);
    }
  }
  const r = schema.safeParse(raw);
  if (!r.success) throw new ShoalError('BAD_REQUEST', `request body: ${formatIssues(r.error)}`);
  return r.data;
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), 'Cache-Control': 'no-store' });
  res.end(text);
}

function sendError(res: http.ServerResponse, e: unknown): void {
  const err = toControllerError(e);
  if (res.headersSent) {
    res.end(JSON.stringify({ done: true, ok: false, error: err.toJSON() }) + '\n');
    return;
  }
  const headers: Record<string, string> = {};
  if (err.code === 'UNAUTHORIZED') headers['WWW-Authenticate'] = 'Bearer realm="shoal"';
  const text = JSON.stringify({ error: err.toJSON() });
  res.writeHead(err.status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

function tokenOk(header: string | undefined, token: string): boolean {
  if (!header) return false;
  const m = /^Bearer\s+(.+)$/i.exec(header.trim());
  if (!m) return false;
  const a = createHash('sha256').update(m[1]!).digest();
  const b = createHash('sha256').update(token).digest();
  return timingSafeEqual(a, b);
}

function intParam(u: URL, name: string, def: number | undefined, max = 100_000): number | undefined {
  const v = u.searchParams.get(name);
  if (v === null || v === '') return def;
  if (!/^\d+$/.test(v)) throw new ShoalError('BAD_REQUEST', `query parameter ${name} must be a non-negative integer, got '${v}'`);
  return Math.min(Number(v), max);
}

const ExecBody = z.object({ op: z.string(), args: z.record(z.string(), z.unknown()).optional(), timeoutMs: z.number().int().min(100).max(600_000).optional() }).strict();
const InferBody = z.object({
  prompt: z.string().optional(),
  messages: z.array(z.object({ role: z.enum(['system', 'user', 'assistant']), content: z.string() })).optional(),
  maxTokens: z.number().int().optional(),
  temperature: z.number().optional(),
  topK: z.number().int().optional(),
  topP: z.number().optional(),
  seed: z.number().int().optional(),
  timeoutMs: z.number().int().min(100).max(600_000).optional(),
}).strict();
const DeployBody = z.object({
  model: z.string().regex(/^[^@\s]+@[^@\s]+$/, 'model must be NAME@VERSION'),
  to: z.string().min(1),
  waves: z.union([z.string(), z.array(z.string())]).optional(),
  maxFailures: z.string().optional(),
  timeoutSec: z.number().positive().optional(),
}).strict();
const RegisterBody = z.object({ dir: z.string().min(1) }).strict();

/** Board power in watts: the total input rail when the board reports one, else the sum of the rails. */
function powerWatts(rails: { name: string; powerMw?: number }[] | undefined): number | null {
  const withPower = (rails ?? []).filter((r) => typeof r.powerMw === 'number' && Number.isFinite(r.powerMw));
  if (withPower.length === 0) return null;
  const total = withPower.find((r) => /^(VDD_IN|VIN|POM_5V_IN|VDD_IN_SYS)$/i.test(r.name) || /total/i.test(r.name));
  return (total ? total.powerMw! : withPower.reduce((s, r) => s + r.powerMw!, 0)) / 1000;
}

export function deviceSummary(d: ReturnType<ControllerContext['storage']['getDevice']> & object) {
  const t = d.telemetry as Record<string, unknown> | null;
  const inf = t?.inference as Record<string, unknown> | undefined;
  const jetson = t?.jetson as { gpuLoadPct?: number; power?: { name: string; powerMw?: number }[] } | undefined;
  const mem = t?.memory as { totalBytes: number; usedBytes: number } | undefined;
  const temps = (t?.temperatures ?? {}) as Record<string, number>;
  const thermal = ((t?.jetson as { thermal?: { tempC: number }[] } | undefined)?.thermal ?? []).map((z) => z.tempC);
  const tempValues = [...Object.values(temps), ...thermal].filter((x) => typeof x === 'number' && Number.isFinite(x));
  return {
    id: d.id, online: d.online, group: d.group, labels: d.labels, model: d.model, phase: d.phase,
    lastError: (d.state?.lastError as unknown) ?? null,
    desired: d.desired?.model ? { name: d.desired.model.name, version: d.desired.model.version, rolloutId: d.desired.rolloutId ?? null } : null,
    tokPerSec: (inf?.decodeTokPerSec as number | null | undefined) ?? null,
    maxTempC: tempValues.length ? Math.max(...tempValues) : null,
    temperatures: temps,
    cpuLoadPct: ((t?.cpu as Record<string, unknown> | undefined)?.loadPct as number | undefined) ?? null,
    queueDepth: (inf?.queueDepth as number | undefined) ?? null,
    ttftMs: (inf?.ttftMs as number | null | undefined) ?? null,
    gpuLoadPct: jetson?.gpuLoadPct ?? null,
    powerW: powerWatts(jetson?.power),
    memUsedPct: mem && mem.totalBytes > 0 ? (100 * mem.usedBytes) / mem.totalBytes : null,
    telemetryTs: (t?.ts as number | undefined) ?? null,
    lastSeen: d.lastSeen, firstSeen: d.firstSeen,
  };
}

export async function startApi(ctl: ControllerContext): Promise<ApiServer> {
  const token = ctl.config.resolvedToken;
  const live = new LiveHub(ctl, deviceSummary);
  const server = http.createServer((req, res) => {
    handle(req, res).catch((e) => sendError(res, e));
  });

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const u = new URL(req.url ?? '/', 'http://localhost');
    const parts = u.pathname.split('/').filter(Boolean);
    const method = req.method ?? 'GET';
    if (parts[0] === 'artifacts') return serveArtifact(ctl.registry, req, res, parts.slice(1));
    if (isWebPath(parts)) return serveWeb(req, res, parts);
    if (parts[0] !== 'api') throw new ShoalError('NOT_FOUND', `no route ${u.pathname}; the API lives under /api (see docs/controller.md)`);
    const route = parts.slice(1);
    if (route[0] === 'health' && route.length === 1) {
      return sendJson(res, 200, { ok: true, broker: ctl.link?.connected ?? false, storage: ctl.storage.kind });
    }
    if (!tokenOk(req.headers.authorization, token)) {
      throw new ShoalError('UNAUTHORIZED', req.headers.authorization
        ? 'the bearer token is wrong; use the token from controller.json (or SHOAL_TOKEN)'
        : 'missing Authorization: Bearer <token>; pass --token or set SHOAL_TOKEN');
    }
    const allow = (...m: string[]) => {
      if (!m.includes(method)) throw new ShoalError('METHOD_NOT_ALLOWED', `${method} is not allowed on ${u.pathname}; use ${m.join(' or ')}`);
    };
    const now = Date.now();
    const [a, b, c, ...restParts] = route;

    if (a === 'stream' && !b) {
      allow('GET');
      const device = u.searchParams.get('device');
      if (device !== null && !ctl.storage.getDevice(device)) throw new ShoalError('DEVICE_NOT_FOUND', `device '${device}' is unknown; list devices with \`shoal fleet ls\``);
      return live.attach(req, res, device);
    }
    if (a === 'stats' && !b) {
      allow('GET');
      return sendJson(res, 200, { ...ctl.stats, telemetryRows: ctl.storage.countTelemetry(), devices: ctl.storage.listDevices().length });
    }
    if (a === 'devices') {
      if (!b) {
        allow('GET');
        return sendJson(res, 200, { devices: ctl.storage.listDevices().map(deviceSummary) });
      }
      const dev = ctl.storage.getDevice(b);
      if (!dev) throw new ShoalError('DEVICE_NOT_FOUND', `device '${b}' is unknown; list devices with \`shoal fleet ls\``);
      if (!c) {
        allow('GET');
        return sendJson(res, 200, { device: { ...deviceSummary(dev), state: dev.state, telemetry: dev.telemetry } });
      }
      if (c === 'exec' && restParts.length === 0) {
        allow('POST');
        const body = await readJson(req, ExecBody);
        const checked = FleetLink.checkRequest(body.op, body.args ?? {});
        ctl.storage.audit({ actor: 'api', action: `exec.${checked.op}`, target: b, details: { args: checked.args } }, now);
        const chunks: unknown[] = [];
        const reply = await ctl.link.request(b, checked.op, checked.args, { timeoutMs: body.timeoutMs, onChunk: (r) => chunks.push(r.chunk) });
        return sendJson(res, 200, { reply, chunks: chunks.length });
      }
      if (c === 'infer' && restParts.length === 0) {
        allow('POST');
        const body = await readJson(req, InferBody);
        const { timeoutMs, ...gen } = body;
        const ga = GenerateArgs.safeParse({ ...gen, stream: true });
        if (!ga.success) throw new ShoalError('BAD_REQUEST', `generate args: ${formatIssues(ga.error)}`);
        ctl.storage.audit({ actor: 'api', action: 'exec.generate', target: b, details: { promptChars: (gen.prompt ?? '').length, maxTokens: gen.maxTokens ?? null } }, now);
        const abort = new AbortController();
        res.on('close', () => { if (!res.writableFinished) abort.abort(); });
        res.writeHead(200, { 'Content-Type': 'application/x-ndjson; charset=utf-8', 'Cache-Control': 'no-store', 'X-Accel-Buffering': 'no' });
        try {
          const reply = await ctl.link.request(b, 'generate', ga.data, {
            timeoutMs: timeoutMs ?? 300_000, signal: abort.signal,
            onChunk: (r) => { if (r.chunk) res.write(JSON.stringify({ chunk: r.chunk }) + '\n'); },
          });
          res.end(JSON.stringify({ done: true, ok: reply.ok, result: reply.result ?? null, error: reply.error ?? null }) + '\n');
        } catch (e) {
          res.end(JSON.stringify({ done: true, ok: false, error: toControllerError(e).toJSON() }) + '\n');
        }
        return;
      }
      throw new ShoalError('NOT_FOUND', `no route ${u.pathname}`);
    }
    if (a === 'telemetry' && !b) {
      allow('GET');
      const device = u.searchParams.get('device') ?? undefined;
      return sendJson(res, 200, { telemetry: ctl.storage.listTelemetry({ deviceId: device, sinceSeq: intParam(u, 'since', undefined, Number.MAX_SAFE_INTEGER), limit: intParam(u, 'limit', 100, 10_000)! }) });
    }
    if (a === 'events' && !b) {
      allow('GET');
      return sendJson(res, 200, {
        events: ctl.storage.listEvents({
          deviceId: u.searchParams.get('device') ?? undefined, type: u.searchParams.get('type') ?? undefined,
          sinceSeq: intParam(u, 'since', undefined, Number.MAX_SAFE_INTEGER), limit: intParam(u, 'limit', 100, 10_000)!,
        }),
      });
    }
    if (a === 'audit' && !b) {
      allow('GET');
      return sendJson(res, 200, { audit: ctl.storage.listAudit({ limit: intParam(u, 'limit', 100, 10_000)!, sinceSeq: intParam(u, 'since', undefined, Number.MAX_SAFE_INTEGER) }) });
    }
    if (a === 'packages') {
      if (!b) {
        allow('GET');
        return sendJson(res, 200, { packages: ctl.registry.list().map((p) => ({ ...p, manifestUrl: `${ctl.publicUrl}/artifacts/${p.name}/${p.version}/manifest.json` })) });
      }
      if (b === 'register' && !c) {
        allow('POST');
        const body = await readJson(req, RegisterBody);
        const rec = await ctl.registry.addFromDir(body.dir, now);
        ctl.storage.audit({ actor: 'api', action: 'package.add', target: `${rec.name}@${rec.version}`, details: { dir: body.dir } }, now);
        return sendJson(res, 201, { package: rec });
      }
      if (b === 'uploads') {
        if (!c) {
          allow('POST');
          const bytes = await readBody(req, 1024 * 1024);
          const { uploadId, manifest } = ctl.registry.beginUpload(bytes);
          return sendJson(res, 201, { uploadId, name: manifest.name, version: manifest.version, files: manifest.files.length });
        }
        if (restParts[0] === 'files' && restParts.length > 1) {
          allow('PUT');
          const rel = restParts.slice(1).map((s) => decodeURIComponent(s)).join('/');
          await ctl.registry.receiveFile(c, rel, req);
          return sendJson(res, 200, { ok: true, path: rel });
        }
        if (restParts[0] === 'commit' && restParts.length === 1) {
          allow('POST');
          const rec = ctl.registry.commitUpload(c, now);
          ctl.storage.audit({ actor: 'api', action: 'package.add', target: `${rec.name}@${rec.version}`, details: { upload: c } }, now);
          return sendJson(res, 201, { package: rec });
        }
      }
      throw new ShoalError('NOT_FOUND', `no route ${u.pathname}`);
    }
    if (a === 'rollouts') {
      if (!b) {
        allow('GET', 'POST');
        if (method === 'GET') return sendJson(res, 200, { rollouts: ctl.rollouts.list(intParam(u, 'limit', 50, 1000)) });
        const body = await readJson(req, DeployBody);
        const at = body.model.lastIndexOf('@');
        const r = ctl.rollouts.create({
          name: body.model.slice(0, at), version: body.model.slice(at + 1), to: body.to, waves: body.waves,
          maxFailures: body.maxFailures, timeoutSec: body.timeoutSec, actor: 'api',
        });
        return sendJson(res, 201, { rollout: r });
      }
      if (!c) {
        allow('GET');
        return sendJson(res, 200, { rollout: ctl.rollouts.get(b === 'latest' ? undefined : b) });
      }
      if ((c === 'pause' || c === 'resume' || c === 'abort') && restParts.length === 0) {
        allow('POST');
        return sendJson(res, 200, { rollout: await ctl.rollouts.control(b === 'latest' ? undefined : b, c) });
      }
    }
    throw new ShoalError('NOT_FOUND', `no route ${method} ${u.pathname}; see docs/controller.md for the API`);
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(new ShoalError('IO_ERROR', `cannot listen on ${ctl.config.http.host}:${ctl.config.http.port}: ${e.message}; pick another http.port`)));
    server.listen(ctl.config.http.port, ctl.config.http.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  return {
    server,
    address: { host: ctl.config.http.host, port: addr.port },
    close: () => new Promise<void>((resolve) => {
      live.close();
      server.close(() => resolve());
      server.closeAllConnections();
    }),
  };
}
