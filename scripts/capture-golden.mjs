#!/usr/bin/env node
// capture-golden.mjs — writes behaviour that must not change under a refactor to
// one folder, so two runs (before, after) can be compared byte for byte:
//
//   greedy.json       stories260K greedy output (text and token ids) for fixed prompts
//   checkpoints.txt   sha256 of every file `shoal quantize` writes (RTN, AWQ, GPTQ) on stories260K
//   mqtt.jsonl        every message a device daemon publishes for a scripted session over
//                     the embedded aedes broker: OTA from desired state, ping, info, generate
//                     (streamed and not), cancel, activate/remove errors, malformed input
//
// Usage: node scripts/capture-golden.mjs --out DIR [--cli PATH/main.js] [--engine PATH/engine.js]
//   --cli defaults to the built `shoal` of this checkout (package.json bin.shoal); --engine to
//   the engine module it loads. Uses the shipped models/stories260K; needs ../shared (or $SHOAL_SHARED) for the
//   TinyStories sample. Then: diff -r BEFORE AFTER.
//
// MQTT normalisation (only what is inherently random or machine-dependent): request ids we
// send are fixed; timestamps (ts, created, deadline, since…), durations and rates (timings,
// rateBytesPerSec, uptime, ms), event ids (random UUIDs), free ports and temporary paths
// are replaced by placeholders;
// telemetry is reduced to its sorted key paths (its values are measurements); of the retained
// state only the last one of each step is kept (the daemon coalesces intermediate states by timing).
import { spawn, execFileSync } from 'node:child_process';
import { createHash, createPrivateKey, createPublicKey, sign } from 'node:crypto';
import { createServer } from 'node:net';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import mqtt from 'mqtt';
import { Aedes } from 'aedes';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values: opt } = parseArgs({ options: { out: { type: 'string' }, cli: { type: 'string' }, engine: { type: 'string' }, only: { type: 'string' } } });
if (!opt.out) { console.error('usage: capture-golden.mjs --out DIR [--cli main.js] [--engine engine.js] [--only greedy,quant,mqtt]'); process.exit(2); }
const pkg = JSON.parse(fs.readFileSync(path.join(repo, 'package.json'), 'utf8'));
const CLI = path.resolve(opt.cli ?? path.join(repo, pkg.bin.shoal));
const shared = process.env.SHOAL_SHARED ? path.resolve(process.env.SHOAL_SHARED) : path.resolve(repo, '../shared');
const STORIES = path.join(repo, 'models', 'stories260K');
const CALIB = path.join(shared, 'data', 'tinystories-valid-sample', 'tinystories_val.txt');
const out = path.resolve(opt.out);
fs.mkdirSync(out, { recursive: true });
const only = new Set((opt.only ?? 'greedy,quant,mqtt').split(','));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'shoal-golden-'));
process.on('exit', () => fs.rmSync(tmp, { recursive: true, force: true }));

const shoal = (...args) => execFileSync(process.execPath, [CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 1 << 26 }).toString();

// ---------------------------------------------------------------- greedy
async function greedy() {
  const enginePath = opt.engine ? path.resolve(opt.engine) : null;
  const prompts = ['Once upon a time', 'Lily and Ben', ''];
  const cases = [];
  if (enginePath) {
    const { loadModel } = await import(pathToFileURL(enginePath).href);
    const m = await loadModel(STORIES, { threads: 1 });
    for (const prompt of prompts) {
      const s = m.createSession({ contextSize: 256 });
      const ids = [];
      let text = '';
      const gen = s.generate(prompt, { temperature: 0, maxTokens: 64 });
      for (;;) {
        const r = await gen.next();
        if (r.done) { cases.push({ prompt, text, ids, stopReason: r.value.stopReason }); break; }
        ids.push(r.value.token);
        text += r.value.text;
      }
      s.dispose();
    }
    m.dispose();
  }
  // the CLI path as a user sees it (stdout only; the stats line on stderr has timings)
  const cliText = prompts.map((p) => ({ prompt: p, stdout: shoal('run', '--model', STORIES, '--prompt', p, '-n', '64', '--threads', '1') }));
  fs.writeFileSync(path.join(out, 'greedy.json'), JSON.stringify({ engine: cases, cli: cliText }, null, 1) + '\n');
}

// ---------------------------------------------------------------- quantized checkpoints
function hashTree(dir) {
  const lines = [];
  for (const f of fs.readdirSync(dir, { recursive: true }).sort()) {
    const p = path.join(dir, f);
    if (fs.statSync(p).isFile()) lines.push(`${createHash('sha256').update(fs.readFileSync(p)).digest('hex')}  ${f}`);
  }
  return lines;
}

async function quant() {
  const runs = {
    rtn: ['--method', 'rtn', '--bits', '4', '--group', '32'],
    awq: ['--method', 'awq', '--bits', '4', '--group', '32', '--calib', CALIB, '--calib-sep', '\\n\\s*\\n', '--samples', '16', '--seqlen', '64', '--backend', 'cpu'],
    'awq-token': ['--method', 'awq', '--bits', '4', '--group', '32', '--calib', CALIB, '--calib-sep', '\\n\\s*\\n', '--samples', '8', '--seqlen', '64', '--backend', 'cpu', '--v-clip-error', 'token'],
    gptq: ['--format', 'gptq', '--bits', '4', '--group', '32'],
    'gptq-3bit-v1': ['--format', 'gptq-v1', '--bits', '3', '--group', '32', '--sym'],
  };
  const lines = [];
  for (const [name, args] of Object.entries(runs)) {
    const dir = path.join(tmp, `q-${name}`);
    shoal('quantize', ...args, '--model', STORIES, '--out', dir);
    for (const l of hashTree(dir)) lines.push(`${name}: ${l}`);
  }
  fs.writeFileSync(path.join(out, 'checkpoints.txt'), lines.join('\n') + '\n');
}

// ---------------------------------------------------------------- MQTT session
const freePort = () => new Promise((resolve) => {
  const s = createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function waitFor(fn, ms, what) {
  const until = Date.now() + ms;
  for (;;) {
    const v = fn();
    if (v) return v;
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

// A fixed Ed25519 key (PKCS#8 DER of a constant seed), so manifest signatures are the same each run.
const seed = Buffer.alloc(32, 7);
const privateKey = createPrivateKey({ key: Buffer.concat([Buffer.from('302e020100300506032b657004220420', 'hex'), seed]), format: 'der', type: 'pkcs8' });
const publicPem = createPublicKey(privateKey).export({ type: 'spki', format: 'pem' }).toString();

function buildPackage(root, version) {
  const dir = path.join(root, 'stories', version);
  fs.mkdirSync(dir, { recursive: true });
  const files = [];
  for (const f of ['config.json', 'generation_config.json', 'tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json', 'model.safetensors']) {
    const data = fs.readFileSync(path.join(STORIES, f));
    fs.writeFileSync(path.join(dir, f), data);
    files.push({ path: f, size: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  }
  const unsigned = { schema: 1, name: 'stories', version, architecture: 'LlamaForCausalLM', quantization: 'none', files, created: '2026-01-01T00:00:00.000Z' };
  // protocol/manifest.ts: the signature covers the canonical JSON of the manifest without `signature`
  const canonical = (v) => Array.isArray(v) ? `[${v.map(canonical).join(',')}]`
    : v && typeof v === 'object' ? `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(',')}}` : JSON.stringify(v);
  const signature = sign(null, Buffer.from(canonical(unsigned)), privateKey).toString('base64');
  const text = JSON.stringify({ ...unsigned, signature }, null, 2);
  fs.writeFileSync(path.join(dir, 'manifest.json'), text);
  return { version, manifestSha256: createHash('sha256').update(text).digest('hex') };
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const TIME_KEYS = /^(ts|ms|at|time|created|updated|since|deadline|startedAt|finishedAt|lastSeen|uptimeSec|uptime|queueMs|ttftMs|totalMs|prefillTokPerSec|decodeTokPerSec|rateBytesPerSec|elapsedMs|durationMs|loadMs|loadSeconds|repackSeconds|activatedAt|installedAt)$/;
function normalise(v, ports, key = '') {
  if (Array.isArray(v)) return v.map((x) => normalise(x, ports));
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalise(x, ports, k)]));
  if (TIME_KEYS.test(key) && (typeof v === 'number' || typeof v === 'string')) return `<${key}>`;
  if (key === 'port' && typeof v === 'number') return `<${ports.find(([p]) => p === v)?.[1] ?? 'port'}>`;
  if (typeof v === 'string' && UUID.test(v)) return '<uuid>';
  if (typeof v === 'string') {
    let s = v.split(tmp).join('<tmp>');
    for (const [p, name] of ports) s = s.split(`:${p}`).join(`:<${name}>`);
    return s;
  }
  return v;
}
function keyPaths(v, prefix = '') {
  if (v && typeof v === 'object' && !Array.isArray(v)) return Object.keys(v).sort().flatMap((k) => keyPaths(v[k], prefix ? `${prefix}.${k}` : k));
  return [prefix];
}

async function mqttSession() {
  const broker = await Aedes.createBroker();
  const brokerPort = await freePort();
  const server = createServer((s) => broker.handle(s));
  await new Promise((r) => server.listen(brokerPort, '127.0.0.1', r));
  const pkgRoot = path.join(tmp, 'pkgs');
  const v1 = buildPackage(pkgRoot, '1.0.0');
  const v2 = buildPackage(pkgRoot, '1.1.0');
  const files = http.createServer((req, res) => {
    const f = path.join(pkgRoot, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!f.startsWith(pkgRoot) || !fs.existsSync(f) || !fs.statSync(f).isFile()) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'content-length': fs.statSync(f).size });
    fs.createReadStream(f).pipe(res);
  });
  await new Promise((r) => files.listen(0, '127.0.0.1', r));
  const filesPort = files.address().port;
  const httpPort = await freePort();
  const ports = [[brokerPort, 'broker-port'], [filesPort, 'files-port'], [httpPort, 'http-port']];
  const manifestUrl = (v) => `http://127.0.0.1:${filesPort}/stories/${v}/manifest.json`;

  const dev = 'golden-1';
  const cfg = {
    configVersion: 1, deviceId: dev, group: 'golden', labels: { site: 'lab' }, logLevel: 'warn',
    broker: { url: `mqtt://127.0.0.1:${brokerPort}`, protocolVersion: 'auto', reconnectMinMs: 100, reconnectMaxMs: 1000, keepaliveSec: 5 },
    store: { dir: path.join(tmp, 'store'), keepVersions: 3, reserveBytes: 0 },
    http: { host: '127.0.0.1', port: httpPort },
    telemetryIntervalSec: 3600, fleetPublicKey: publicPem, queue: { maxDepth: 4 },
    engine: { threads: 1, contextSize: 256, maxTokens: 32 }, health: { timeoutSec: 30, tokens: 4 },
    download: { retries: 2, idleTimeoutSec: 5, progressIntervalMs: 3_600_000 }, shutdown: { drainTimeoutSec: 10 },
  };
  const cfgFile = path.join(tmp, 'device.json');
  fs.writeFileSync(cfgFile, JSON.stringify(cfg, null, 2));

  const log = [];
  const client = mqtt.connect(`mqtt://127.0.0.1:${brokerPort}`, { clientId: 'golden-fleet', protocolVersion: 4, clean: true });
  const replyTo = 'shoal/v1/clients/golden-fleet/replies';
  const replies = new Map();
  let states = [];
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/cmd') || topic.endsWith('/desired')) return; // ours, not the daemon's
    if (payload.length === 0) { log.push({ topic, payload: '' }); return; }
    const msg = JSON.parse(payload.toString());
    if (topic.endsWith('/telemetry')) { log.push({ topic, keys: keyPaths(msg) }); return; }
    if (topic === replyTo) { const l = replies.get(msg.id) ?? []; l.push(msg); replies.set(msg.id, l); }
    if (topic.endsWith('/state')) states.push(msg);
    log.push({ topic, payload: normalise(msg, ports) });
  });
  await new Promise((r) => client.once('connect', r));
  await client.subscribeAsync([`shoal/v1/devices/${dev}/+`, replyTo], { qos: 1 });

  const daemon = spawn(process.execPath, [CLI, 'device', '--config', cfgFile], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  daemon.stderr.on('data', (d) => { stderr += d; });
  const exited = new Promise((r) => daemon.once('exit', r));
  try {
    await waitFor(() => states.find((s) => s.online), 30_000, 'online state');
    const step = async (label, fn) => { log.push({ step: label }); await fn(); await sleep(300); };
    const request = async (id, op, args, extra = {}) => {
      client.publish(`shoal/v1/devices/${dev}/cmd`, JSON.stringify({ v: 1, id, op, args, replyTo, ...extra }), { qos: 1 });
      return waitFor(() => replies.get(id)?.find((r) => r.done), 30_000, `reply ${id}`);
    };
    const desired = (v) => client.publishAsync(`shoal/v1/devices/${dev}/desired`,
      JSON.stringify({ v: 1, ts: 1, model: { name: 'stories', version: v.version, manifestUrl: manifestUrl(v.version), manifestSha256: v.manifestSha256 } }), { qos: 1, retain: true });

    await step('ota 1.0.0', async () => { await desired(v1); await waitFor(() => states.find((s) => s.phase === 'active' && s.model?.version === '1.0.0'), 60_000, 'active 1.0.0'); });
    await step('ping', () => request('r-ping', 'ping', {}));
    await step('info', () => request('r-info', 'info', {}));
    await step('generate stream', () => request('r-gen', 'generate', { prompt: 'Once upon a time', maxTokens: 24, temperature: 0 }));
    await step('generate whole', () => request('r-gen2', 'generate', { messages: [{ role: 'user', content: 'Lily' }], maxTokens: 12, stream: false }));
    await step('generate bad args', () => request('r-bad', 'generate', { prompt: 'x', maxTokens: 0 }));
    await step('unknown op', () => request('r-op', 'fly', {}));
    await step('cancel unknown', () => request('r-cancel', 'cancel', { requestId: 'nope' }));
    await step('activate missing', () => request('r-act', 'activate', { name: 'stories', version: '9.9.9' }));
    await step('remove active', () => request('r-rm', 'remove', { name: 'stories', version: '1.0.0' }));
    await step('telemetry interval', () => request('r-tel', 'set-telemetry-interval', { seconds: 3600 }));
    await step('malformed', async () => {
      client.publish(`shoal/v1/devices/${dev}/cmd`, 'not json', { qos: 1 });
      await waitFor(() => log.some((l) => l.payload?.type === 'request.rejected'), 10_000, 'request.rejected');
    });
    await step('ota 1.1.0', async () => { await desired(v2); await waitFor(() => states.find((s) => s.phase === 'active' && s.model?.version === '1.1.0'), 60_000, 'active 1.1.0'); });
    await step('rollback', () => request('r-rb', 'rollback', {}));
    await step('generate after rollback', () => request('r-gen3', 'generate', { prompt: 'The cat', maxTokens: 8, temperature: 0, stream: false }));
  } catch (e) {
    console.error(stderr.slice(-4000));
    throw e;
  } finally {
    daemon.kill('SIGTERM');
    await exited;
    await sleep(300);
    await client.endAsync(true);
    files.close();
    server.close();
    await new Promise((r) => broker.close(r));
  }
  // Messages on one topic keep their order; across topics only the step they fall in is fixed.
  const lines = [];
  let bucket = [];
  const flush = () => {
    // state is coalesced by the daemon (how many intermediate states go out depends on timing): keep the settled one
    const states = bucket.filter((l) => l.topic.endsWith('/state'));
    bucket = bucket.filter((l) => !l.topic.endsWith('/state') || l === states[states.length - 1]);
    lines.push(...bucket.sort((a, b) => (a.topic < b.topic ? -1 : a.topic > b.topic ? 1 : 0)));
    bucket = [];
  };
  for (const l of log) { if (l.step) { flush(); lines.push(l); } else bucket.push(l); }
  flush();
  fs.writeFileSync(path.join(out, 'mqtt.jsonl'), lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
}

if (only.has('greedy')) await greedy();
if (only.has('quant')) await quant();
if (only.has('mqtt')) await mqttSession();
console.log(`wrote ${[...only].join(', ')} to ${out}`);
