// Model package manifest: what a device downloads, verifies and activates.
// The signature is base64 Ed25519 over canonicalize(manifest without `signature`):
// JSON with object keys sorted recursively (by UTF-16 code unit order), no whitespace.
import { createHash, createPrivateKey, createPublicKey, sign, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';

export const MANIFEST_FILE = 'manifest.json';
export const MAX_MANIFEST_BYTES = 1024 * 1024;

/** A relative POSIX path inside the package: no absolute paths, no '..', '.', empty segments, backslashes or NUL. */
export function isSafeRelativePath(p: string): boolean {
  if (typeof p !== 'string' || p.length === 0 || p.length > 512) return false;
  if (p.startsWith('/') || p.includes('\\') || p.includes('\0') || /^[A-Za-z]:/.test(p)) return false;
  return p.split('/').every((seg) => seg !== '' && seg !== '.' && seg !== '..');
}

export const ManifestFile = z.object({
  path: z.string().refine(isSafeRelativePath, 'unsafe path (absolute, contains .., or empty segment)'),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type ManifestFile = z.infer<typeof ManifestFile>;

export const Manifest = z.object({
  schema: z.literal(1),
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/),
  version: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$/),
  architecture: z.string().min(1),
  quantization: z.string().min(1),
  files: z.array(ManifestFile).min(1).max(10000)
    .refine((fs) => new Set(fs.map((f) => f.path)).size === fs.length, 'duplicate file paths'),
  created: z.string().min(1),
  signature: z.string().optional(),
});
export type Manifest = z.infer<typeof Manifest>;
export type UnsignedManifest = Omit<Manifest, 'signature'>;

/** Canonical JSON: keys sorted recursively, no whitespace. Rejects non-finite numbers and non-JSON values. */
export function canonicalize(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean': return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new Error('canonicalize: non-finite number');
      return JSON.stringify(value);
    case 'string': return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((x) => canonicalize(x)).join(',')}]`;
      const obj = value as Record<string, unknown>;
      const keys = Object.keys(obj).filter((k) => obj[k] !== undefined).sort();
      return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalize(obj[k])}`).join(',')}}`;
    }
    default:
      throw new Error(`canonicalize: unsupported type ${typeof value}`);
  }
}

/** Bytes that get signed: the canonical manifest without its signature field. */
export function signingBytes(manifest: UnsignedManifest | Manifest): Buffer {
  const { signature: _sig, ...rest } = manifest as Manifest;
  return Buffer.from(canonicalize(rest), 'utf8');
}

function privateKey(pem: string | KeyObject): KeyObject {
  return typeof pem === 'string' ? createPrivateKey(pem) : pem;
}
function publicKey(pem: string | KeyObject): KeyObject {
  return typeof pem === 'string' ? createPublicKey(pem) : pem;
}

/** Returns a copy of the manifest with `signature` set (Ed25519, base64). */
export function signManifest(manifest: UnsignedManifest | Manifest, privateKeyPem: string | KeyObject): Manifest {
  const key = privateKey(privateKeyPem);
  if (key.asymmetricKeyType !== 'ed25519') throw new Error(`signManifest: expected an ed25519 key, got ${key.asymmetricKeyType}`);
  const { signature: _old, ...rest } = manifest as Manifest;
  const signature = sign(null, signingBytes(rest), key).toString('base64');
  return { ...rest, signature };
}

export type VerifyResult = { ok: true } | { ok: false; reason: string };

/** Verifies the Ed25519 signature of a manifest against the fleet public key. Never throws. */
export function verifyManifest(manifest: Manifest, publicKeyPem: string | KeyObject): VerifyResult {
  if (!manifest.signature) return { ok: false, reason: 'manifest is not signed' };
  let key: KeyObject;
  try {
    key = publicKey(publicKeyPem);
  } catch (e) {
    return { ok: false, reason: `fleet public key unreadable: ${(e as Error).message}` };
  }
  if (key.asymmetricKeyType !== 'ed25519') return { ok: false, reason: `fleet public key is ${key.asymmetricKeyType}, expected ed25519` };
  const sig = Buffer.from(manifest.signature, 'base64');
  if (sig.length !== 64) return { ok: false, reason: `signature is ${sig.length} bytes, expected 64` };
  try {
    return verify(null, signingBytes(manifest), key, sig) ? { ok: true } : { ok: false, reason: 'signature does not match the manifest' };
  } catch (e) {
    return { ok: false, reason: `signature check failed: ${(e as Error).message}` };
  }
}

export function sha256Hex(data: Uint8Array | string): string {
  return createHash('sha256').update(data).digest('hex');
}

/** Total bytes of the package's files. */
export function manifestBytes(m: Pick<Manifest, 'files'>): number {
  return m.files.reduce((s, f) => s + f.size, 0);
}
