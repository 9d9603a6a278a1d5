// Keys, package building, the package registry and the artifact file server.
import { createHash, generateKeyPairSync, createPrivateKey } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type http from 'node:http';
import { pipeline } from 'node:stream/promises';
import {
  MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, formatIssues, isSafeRelativePath, manifestBytes, sha256Hex,
  signManifest, verifyManifest, type UnsignedManifest,
} from '@shoal/protocol';
import { writeFileAtomicSync, ShoalError } from '@shoal/common';
import type { PackageRecord, Storage } from './storage/types.js';

// ---------------------------------------------------------------- keys

export interface KeyPairPaths { privateKey: string; publicKey: string }

/** Writes an ed25519 key pair as PEM: fleet.key (0600) and fleet.pub. */
export function generateFleetKeys(outDir: string, opts: { force?: boolean } = {}): KeyPairPaths {
  const privPath = path.join(outDir, 'fleet.key');
  const pubPath = path.join(outDir, 'fleet.pub');
  if (!opts.force && (fs.existsSync(privPath) || fs.existsSync(pubPath))) {
    throw new ShoalError('KEY_EXISTS', `${privPath} or ${pubPath} already exists; pass --force to replace it, or choose another --out`);
  }
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  writeFileAtomicSync(privPath, privateKey.export({ type: 'pkcs8', format: 'pem' }) as string, { mode: 0o600 });
  writeFileAtomicSync(pubPath, publicKey.export({ type: 'spki', format: 'pem' }) as string, { mode: 0o644 });
  return { privateKey: privPath, publicKey: pubPath };
}

// ---------------------------------------------------------------- building

export async function hashFile(file: string): Promise<{ sha256: string; size: number }> {
  const h = createHash('sha256');
  let size = 0;
  await pipeline(fs.createReadStream(file), async function* (src: AsyncIterable<Buffer>) {
    for await (const chunk of src) { h.update(chunk); size += chunk.length; }
  });
  return { sha256: h.digest('hex'), size };
}

function listFiles(root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const ent of fs.readdirSync(path.join(root, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${ent.name}` : ent.name;
      if (ent.name.startsWith('.')) continue;
      if (ent.isDirectory()) walk(r);
      else if (ent.isFile() || ent.isSymbolicLink()) {
        if (fs.statSync(path.join(root, r)).isFile()) out.push(r);
      }
    }
  };
  walk('');
  return out.sort();
}

/** Reads architecture and quantization from a Hugging Face style config.json. */
export function describeModelDir(dir: string): { architecture: string; quantization: string } {
  let cfg: Record<string, unknown> = {};
  try { cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>; } catch { /* optional */ }
  const archs = cfg.architectures;
  const architecture = Array.isArray(archs) && typeof archs[0] === 'string' ? archs[0] : (typeof cfg.model_type === 'string' ? cfg.model_type : 'unknown');
  const q = cfg.quantization_config as Record<string, unknown> | undefined;
  let quantization = 'none';
  if (q && typeof q === 'object') {
    const method = String(q.quant_method ?? 'quant');
    quantization = `${method}-w${q.bits ?? q.w_bit ?? 4}g${q.group_size ?? q.q_group_size ?? 128}`;
  }
  return { architecture, quantization };
}

export interface BuildPackageOptions {
  modelDir: string;
  name: string;
  version: string;
  keyFile: string;
  outDir: string;
  architecture?: string;
  quantization?: string;
  force?: boolean;
  onFile?: (file: string, index: number, total: number) => void;
}

/** Builds a signed package: the model's files (hardlinked, or copied across filesystems) and manifest.json. */
export async function buildPackage(o: BuildPackageOptions): Promise<{ dir: string; manifest: Manifest; manifestSha256: string }> {
  let st: fs.Stats;
  try { st = fs.statSync(o.modelDir); } catch {
    throw new ShoalError('MODEL_DIR_INVALID', `model directory ${o.modelDir} does not exist; pass --model with a checkpoint directory`);
  }
  if (!st.isDirectory()) throw new ShoalError('MODEL_DIR_INVALID', `${o.modelDir} is not a directory`);
  let keyPem: string;
  try { keyPem = fs.readFileSync(o.keyFile, 'utf8'); } catch (e) {
    throw new ShoalError('KEY_INVALID', `cannot read key ${o.keyFile}: ${(e as Error).message}; create one with \`shoal keygen --out DIR\``);
  }
  try {
    const k = createPrivateKey(keyPem);
    if (k.asymmetricKeyType !== 'ed25519') throw new Error(`it is a ${k.asymmetricKeyType} key`);
  } catch (e) {
    throw new ShoalError('KEY_INVALID', `${o.keyFile} is not an ed25519 private key (${(e as Error).message}); use the fleet.key written by \`shoal keygen\``);
  }
  const files = listFiles(o.modelDir).filter((f) => f !== MANIFEST_FILE);
  if (files.length === 0) throw new ShoalError('MODEL_DIR_INVALID', `${o.modelDir} holds no files`);
  if (fs.existsSync(o.outDir)) {
    if (!o.force) throw new ShoalError('PACKAGE_EXISTS', `${o.outDir} already exists; pass --force to replace it or choose another --out`);
    fs.rmSync(o.outDir, { recursive: true, force: true });
  }
  const staging = `${o.outDir.replace(/\/+$/, '')}.tmp-${process.pid}`;
  fs.rmSync(staging, { recursive: true, force: true });
  fs.mkdirSync(staging, { recursive: true });
  const entries: Manifest['files'] = [];
  for (const [i, rel] of files.entries()) {
    o.onFile?.(rel, i, files.length);
    const src = path.join(o.modelDir, rel);
    const dst = path.join(staging, rel);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    try { fs.linkSync(fs.realpathSync(src), dst); } catch { fs.copyFileSync(src, dst); }
    const { sha256, size } = await hashFile(dst);
    entries.push({ path: rel, size, sha256 });
  }
  const desc = describeModelDir(o.modelDir);
  const unsigned: UnsignedManifest = {
    schema: 1, name: o.name, version: o.version,
    architecture: o.architecture ?? desc.architecture,
    quantization: o.quantization ?? desc.quantization,
    files: entries, created: new Date().toISOString(),
  };
  const checked = Manifest.safeParse(unsigned);
  if (!checked.success) throw new ShoalError('INVALID_MODEL_REF', `package manifest: ${formatIssues(checked.error)}`);
  const manifest = signManifest(checked.data, keyPem);
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  writeFileAtomicSync(path.join(staging, MANIFEST_FILE), bytes);
  fs.renameSync(staging, o.outDir);
  return { dir: o.outDir, manifest, manifestSha256: sha256Hex(bytes) };
}

// ---------------------------------------------------------------- registry

export function readManifestFile(file: string): { manifest: Manifest; bytes: Buffer } {
  let bytes: Buffer;
  try { bytes = fs.readFileSync(file); } catch (e) {
    throw new ShoalError('PACKAGE_INVALID', `cannot read ${file}: ${(e as Error).message}; a package directory holds manifest.json (build one with \`shoal package\`)`);
  }
  return { manifest: parseManifestBytes(bytes, file), bytes };
}

export function parseManifestBytes(bytes: Buffer, where: string): Manifest {
  if (bytes.length > MAX_MANIFEST_BYTES) throw new ShoalError('PACKAGE_INVALID', `${where}: manifest is ${bytes.length} bytes, over the ${MAX_MANIFEST_BYTES} limit`);
  let raw: unknown;
  try { raw = JSON.parse(bytes.toString('utf8')); } catch (e) {
    throw new ShoalError('PACKAGE_INVALID', `${where}: manifest is not JSON (${(e as Error).message})`);
  }
  const r = Manifest.safeParse(raw);
  if (!r.success) throw new ShoalError('PACKAGE_INVALID', `${where}: ${formatIssues(r.error)}`);
  return r.data;
}

export class PackageRegistry {
  constructor(private readonly storage: Storage, readonly root: string, private readonly publicKeyPem: string | null) {
    fs.mkdirSync(path.join(root, '.staging'), { recursive: true });
  }

  checkSignature(m: Manifest): void {
    if (!this.publicKeyPem) return;
    const v = verifyManifest(m, this.publicKeyPem);
    if (!v.ok) throw new ShoalError('SIGNATURE_INVALID', `package ${m.name}@${m.version}: ${v.reason}; sign it with the fleet key (shoal package --key fleet.key)`);
  }

  get(name: string, version: string): PackageRecord | null {
    return this.storage.getPackage(name, version);
  }

  require(name: string, version: string): PackageRecord {
    const p = this.get(name, version);
    if (!p) throw new ShoalError('PACKAGE_NOT_FOUND', `package ${name}@${version} is not registered; add it with \`shoal fleet package add PKG\``);
    return p;
  }

  list(): PackageRecord[] {
    return this.storage.listPackages();
  }

  /** Starts an upload: validates the manifest, returns a staging id. */
  beginUpload(manifestBytesIn: Buffer): { uploadId: string; manifest: Manifest } {
    const manifest = parseManifestBytes(manifestBytesIn, 'uploaded manifest');
    this.checkSignature(manifest);
    if (this.get(manifest.name, manifest.version)) {
      throw new ShoalError('PACKAGE_EXISTS', `package ${manifest.name}@${manifest.version} is already registered; bump the version`);
    }
    const uploadId = `${manifest.name}-${manifest.version}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
    const dir = path.join(this.root, '.staging', uploadId);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, MANIFEST_FILE), manifestBytesIn);
    return { uploadId, manifest };
  }

  private stagingDir(uploadId: string): string {
    if (!/^[A-Za-z0-9_.+-]+$/.test(uploadId) || uploadId.startsWith('.')) throw new ShoalError('NOT_FOUND', `upload ${uploadId} not found`);
    const dir = path.join(this.root, '.staging', uploadId);
    if (!fs.existsSync(path.join(dir, MANIFEST_FILE))) throw new ShoalError('NOT_FOUND', `upload ${uploadId} not found; start again with POST /api/packages/uploads`);
    return dir;
  }

  /** Streams one file of an upload to staging, checking size and sha256 against the manifest. */
  async receiveFile(uploadId: string, rel: string, body: AsyncIterable<Buffer>): Promise<void> {
    const dir = this.stagingDir(uploadId);
    const { manifest } = readManifestFile(path.join(dir, MANIFEST_FILE));
    const entry = manifest.files.find((f) => f.path === rel);
    if (!entry || !isSafeRelativePath(rel)) throw new ShoalError('BAD_REQUEST', `file '${rel}' is not listed in the manifest of upload ${uploadId}`);
    const dst = path.join(dir, 'files', rel);
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const tmp = `${dst}.part`;
    const h = createHash('sha256');
    let size = 0;
    const out = fs.createWriteStream(tmp);
    try {
      await pipeline(async function* () {
        for await (const chunk of body) {
          size += chunk.length;
          if (size > entry.size) throw new ShoalError('PAYLOAD_TOO_LARGE', `file '${rel}' is larger than the ${entry.size} bytes in the manifest`);
          h.update(chunk);
          yield chunk;
        }
      }, out);
    } catch (e) {
      fs.rmSync(tmp, { force: true });
      throw e;
    }
    const sha = h.digest('hex');
    if (size !== entry.size || sha !== entry.sha256) {
      fs.rmSync(tmp, { force: true });
      throw new ShoalError('PACKAGE_INVALID', `file '${rel}': got ${size} bytes sha256 ${sha.slice(0, 12)}…, manifest says ${entry.size} bytes ${entry.sha256.slice(0, 12)}…; re-upload it`);
    }
    fs.renameSync(tmp, dst);
  }

  /** Finishes an upload: every file must be present; moves the package into place. */
  commitUpload(uploadId: string, now: number): PackageRecord {
    const dir = this.stagingDir(uploadId);
    const { manifest, bytes } = readManifestFile(path.join(dir, MANIFEST_FILE));
    const missing = manifest.files.filter((f) => !fs.existsSync(path.join(dir, 'files', f.path))).map((f) => f.path);
    if (missing.length) throw new ShoalError('PACKAGE_INVALID', `upload ${uploadId} is missing ${missing.length} file(s): ${missing.slice(0, 5).join(', ')}; upload them before committing`);
    fs.writeFileSync(path.join(dir, 'files', MANIFEST_FILE), bytes);
    const rec = this.install(manifest, bytes, path.join(dir, 'files'), now, 'move');
    fs.rmSync(dir, { recursive: true, force: true });
    return rec;
  }

  /** Registers a package directory on this machine (copied or hardlinked into the artifact store). */
  async addFromDir(srcDir: string, now: number): Promise<PackageRecord> {
    const { manifest, bytes } = readManifestFile(path.join(srcDir, MANIFEST_FILE));
    this.checkSignature(manifest);
    if (this.get(manifest.name, manifest.version)) {
      throw new ShoalError('PACKAGE_EXISTS', `package ${manifest.name}@${manifest.version} is already registered; bump the version`);
    }
    for (const f of manifest.files) {
      const p = path.join(srcDir, f.path);
      let got: { sha256: string; size: number };
      try { got = await hashFile(p); } catch {
        throw new ShoalError('PACKAGE_INVALID', `${p} is listed in the manifest but missing; rebuild the package`);
      }
      if (got.size !== f.size || got.sha256 !== f.sha256) {
        throw new ShoalError('PACKAGE_INVALID', `${p}: size/sha256 differ from the manifest; rebuild the package with \`shoal package\``);
      }
    }
    return this.install(manifest, bytes, srcDir, now, 'link');
  }

  private install(manifest: Manifest, bytes: Buffer, srcDir: string, now: number, mode: 'move' | 'link'): PackageRecord {
    const finalDir = path.join(this.root, manifest.name, manifest.version);
    if (mode === 'move') {
      fs.mkdirSync(path.dirname(finalDir), { recursive: true });
      fs.rmSync(finalDir, { recursive: true, force: true });
      fs.renameSync(srcDir, finalDir);
    } else {
      const staging = path.join(this.root, '.staging', `dir-${manifest.name}-${manifest.version}-${process.pid}`);
      fs.rmSync(staging, { recursive: true, force: true });
      for (const f of manifest.files) {
        const dst = path.join(staging, f.path);
        fs.mkdirSync(path.dirname(dst), { recursive: true });
        try { fs.linkSync(fs.realpathSync(path.join(srcDir, f.path)), dst); } catch { fs.copyFileSync(path.join(srcDir, f.path), dst); }
      }
      fs.writeFileSync(path.join(staging, MANIFEST_FILE), bytes);
      fs.mkdirSync(path.dirname(finalDir), { recursive: true });
      fs.rmSync(finalDir, { recursive: true, force: true });
      fs.renameSync(staging, finalDir);
    }
    const rec: PackageRecord = {
      name: manifest.name, version: manifest.version, dir: finalDir, manifestSha256: sha256Hex(bytes),
      totalBytes: manifestBytes(manifest), files: manifest.files.length, createdAt: now,
    };
    this.storage.putPackage(rec);
    return rec;
  }
}

// ---------------------------------------------------------------- artifact server

type ByteRange = { start: number; end: number };

/** Parses a single-range Range header. null = ignore (serve 200), 'unsatisfiable' = 416. */
export function parseRange(header: string, size: number): ByteRange | null | 'unsatisfiable' {
  const m = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header.trim());
  if (!m) return null; // multi-range or other units: serve the whole file
  const [, a, b] = m;
  if (a === '' && b === '') return null;
  if (a === '') {
    const n = Number(b);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(a);
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
  if (b !== '' && Number(b) < start) return null; // syntactically invalid: ignore per RFC 9110
  if (start >= size) return 'unsatisfiable';
  return { start, end };
}

function etagMatches(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  if (header.trim() === '*') return true;
  return header.split(',').map((s) => s.trim().replace(/^W\//, '')).includes(etag);
}

/** Serves GET/HEAD /artifacts/<name>/<version>/<file> with Range, ETag, If-None-Match and If-Range. */
export function serveArtifact(registry: PackageRegistry, req: http.IncomingMessage, res: http.ServerResponse, rest: string[]): void {
  const sendErr = (status: number, code: string, message: string, extra: Record<string, string> = {}) => {
    const body = JSON.stringify({ error: { code, message } });
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), ...extra });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
  if (req.method !== 'GET' && req.method !== 'HEAD') return sendErr(405, 'METHOD_NOT_ALLOWED', 'artifacts support GET and HEAD only', { Allow: 'GET, HEAD' });
  if (rest.length < 3) return sendErr(404, 'NOT_FOUND', 'use /artifacts/<name>/<version>/<file>');
  const [name, version, ...fileParts] = rest.map((s) => { try { return decodeURIComponent(s); } catch { return '\0'; } });
  const rel = fileParts.join('/');
  const pkg = registry.get(name!, version!);
  if (!pkg) return sendErr(404, 'PACKAGE_NOT_FOUND', `package ${name}@${version} is not registered`);
  let etag: string;
  let file: string;
  let manifest: Manifest;
  try {
    manifest = readManifestFile(path.join(pkg.dir, MANIFEST_FILE)).manifest;
  } catch (e) {
    return sendErr(500, 'IO_ERROR', (e as Error).message);
  }
  if (rel === MANIFEST_FILE) {
    etag = `"${pkg.manifestSha256}"`;
    file = path.join(pkg.dir, MANIFEST_FILE);
  } else {
    const entry = isSafeRelativePath(rel) ? manifest.files.find((f) => f.path === rel) : undefined;
    if (!entry) return sendErr(404, 'NOT_FOUND', `${rel} is not a file of ${name}@${version}`);
    etag = `"${entry.sha256}"`;
    file = path.join(pkg.dir, entry.path);
  }
  let size: number;
  try { size = fs.statSync(file).size; } catch { return sendErr(500, 'IO_ERROR', `${rel} is missing from the artifact store; re-add the package`); }
  const base: Record<string, string | number> = {
    ETag: etag, 'Accept-Ranges': 'bytes', 'Cache-Control': 'public, max-age=31536000, immutable',
    'Content-Type': rel.endsWith('.json') ? 'application/json' : 'application/octet-stream',
  };
  if (etagMatches(req.headers['if-none-match'], etag)) {
    res.writeHead(304, base);
    return void res.end();
  }
  let range: ByteRange | null | 'unsatisfiable' = null;
  const rh = req.headers.range;
  if (rh) {
    const ifRange = req.headers['if-range'];
    if (ifRange === undefined || String(ifRange).trim() === etag) range = parseRange(rh, size);
  }
  if (range === 'unsatisfiable') return sendErr(416, 'RANGE_NOT_SATISFIABLE', `range ${rh} is outside the ${size}-byte file`, { 'Content-Range': `bytes */${size}` });
  const start = range ? range.start : 0;
  const end = range ? range.end : size - 1;
  const len = size === 0 ? 0 : end - start + 1;
  const headers = { ...base, 'Content-Length': len } as Record<string, string | number>;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === 'HEAD' || len === 0) return void res.end();
  const stream = fs.createReadStream(file, { start, end });
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}
