// safetensors.ts — reading and writing safetensors files in TypeScript, plus
// f16/bf16 conversions and atomic output helpers shared by the model tools.
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data block; offsets are relative to the start of the data block.
// Writers pad the header with spaces so the data block starts 8-byte aligned.
//
// Reading never maps or loads the whole file: the header is parsed once and
// each tensor is read on demand into its own (aligned) buffer, so multi-GB
// checkpoints can be processed tensor by tensor.
import {
  closeSync, existsSync, fstatSync, fsyncSync, mkdirSync, openSync, readdirSync, readFileSync,
  readSync, renameSync, rmSync, writeSync,
} from 'node:fs';
import path from 'node:path';

// ---------------------------------------------------------------------------
// errors
// ---------------------------------------------------------------------------

/** Error with a stable code (same names as the engine's shoal_status where one fits). */
export class ToolError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'ToolError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------
// dtypes
// ---------------------------------------------------------------------------

export type StDType = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

const DTYPE_BYTES: Record<StDType, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** Bytes per element of a safetensors dtype. */
export function dtypeBytes(dtype: StDType): number {
  return DTYPE_BYTES[dtype];
}

export function isStDType(s: unknown): s is StDType {
  return typeof s === 'string' && Object.prototype.hasOwnProperty.call(DTYPE_BYTES, s);
}

/** Number of elements of a shape ([] is a scalar: 1). */
export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---------------------------------------------------------------------------
// f16 / bf16 conversions
// ---------------------------------------------------------------------------

const scratchF32 = new Float32Array(1);
const scratchU32 = new Uint32Array(scratchF32.buffer);

/** f32 bit pattern -> f16 bit pattern, round to nearest even; NaN stays NaN, overflow -> inf. */
export function f32BitsToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 112; // half exponent field
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    // half subnormal: units of 2^-24
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 126 - exp; // 14..24
    let q = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (q & 1) !== 0)) q++;
    return sign | q; // q == 0x400 is the smallest normal: correct encoding
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++; // carry into the exponent is correct
  return sign | h;
}

/** A JS number (rounded to f32 first) -> f16 bits. */
export function f32ToF16(v: number): number {
  scratchF32[0] = v;
  return f32BitsToF16Bits(scratchU32[0]!);
}

function roundHalfEvenPositive(a: number): number {
  const f = Math.floor(a);
  const d = a - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** A float64 -> f16 bits with a single rounding (no double rounding through f32). */
export function f64ToF16(v: number): number {
  if (Number.isNaN(v)) return 0x7e00;
  const sign = v < 0 || Object.is(v, -0) ? 0x8000 : 0;
  const a = Math.abs(v);
  if (a >= 65520) return sign | 0x7c00; // 65520 is the tie between 65504 and 2^16: even -> inf
  if (a < 2 ** -14) return sign | roundHalfEvenPositive(a * 2 ** 24); // 1024 -> smallest normal
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  const m = roundHalfEvenPositive(a * 2 ** (10 - e)); // 1024..2048, exact power-of-two scaling
  return sign | (((e + 15) << 10) + (m - 1024)); // m == 2048 carries into the exponent
}

const F16_TO_F32 = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    let v: number;
    if (e === 0) v = m * 2 ** -24;
    else if (e === 31) v = m === 0 ? Infinity : NaN;
    else v = (1024 + m) * 2 ** (e - 25);
    t[h] = s * v;
  }
  return t;
})();

/** f16 bits -> number (exact). */
export function f16ToF32(h: number): number {
  return F16_TO_F32[h & 0xffff]!;
}

/** f32 bit pattern -> bf16 bits, round to nearest even; NaN stays NaN. */
export function f32BitsToBf16Bits(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x40) & 0xffff;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

export function f32ToBf16(v: number): number {
  scratchF32[0] = v;
  return f32BitsToBf16Bits(scratchU32[0]!);
}

export function bf16ToF32(h: number): number {
  scratchU32[0] = (h & 0xffff) << 16;
  return scratchF32[0]!;
}

/** Float array -> f16 bits (values are rounded to f32 first, then to f16). */
export function toF16Array(src: ArrayLike<number>): Uint16Array {
  const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
  const u = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < u.length; i++) out[i] = f32BitsToF16Bits(u[i]!);
  return out;
}

export function toBf16Array(src: ArrayLike<number>): Uint16Array {
  const f32 = src instanceof Float32Array ? src : Float32Array.from(src);
  const u = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < u.length; i++) out[i] = f32BitsToBf16Bits(u[i]!);
  return out;
}

export function f16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = F16_TO_F32[src[i]!]!;
  return out;
}

export function bf16ArrayToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length);
  const u = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) u[i] = src[i]! << 16;
  return out;
}

/** Encodes float values as the bytes of a float dtype (F32, F16, BF16, F64). */
export function encodeFloats(src: ArrayLike<number>, dtype: StDType): Uint8Array {
  switch (dtype) {
    case 'F32': {
      const a = src instanceof Float32Array ? src : Float32Array.from(src);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case 'F64': {
      const a = src instanceof Float64Array ? src : Float64Array.from(src);
      return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
    }
    case 'F16': {
      const a = toF16Array(src);
      return new Uint8Array(a.buffer);
    }
    case 'BF16': {
      const a = toBf16Array(src);
      return new Uint8Array(a.buffer);
    }
    default:
      throw new ToolError('SHOAL_ERR_ST_DTYPE', `cannot encode floats as ${dtype}; use F32, F16, BF16 or F64`);
  }
}

// ---------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------

export interface TensorEntry {
  name: string;
  dtype: StDType;
  shape: number[];
  /** Byte offsets relative to the data block. */
  begin: number;
  end: number;
}

/** Largest header accepted (the format's reference implementation uses 100 MB). */
export const MAX_HEADER_BYTES = 100_000_000;

export type TensorArray = Float64Array | Float32Array | Uint16Array | Int32Array | Int16Array | Int8Array | Uint8Array | BigInt64Array;

/** One safetensors file: the parsed header and on-demand tensor reads. */
export class SafetensorsReader {
  readonly path: string;
  readonly entries: Map<string, TensorEntry>;
  readonly metadata: Record<string, string> | null;
  /** Absolute file offset of the data block. */
  readonly dataStart: number;
  readonly fileSize: number;
  private fd: number | null;

  private constructor(file: string, fd: number, fileSize: number, dataStart: number,
    entries: Map<string, TensorEntry>, metadata: Record<string, string> | null) {
    this.path = file;
    this.fd = fd;
    this.fileSize = fileSize;
    this.dataStart = dataStart;
    this.entries = entries;
    this.metadata = metadata;
  }

  /** Opens a file and validates its header (offsets, dtypes, sizes). */
  static open(file: string): SafetensorsReader {
    let fd: number;
    try {
      fd = openSync(file, 'r');
    } catch (err) {
      throw new ToolError('SHOAL_ERR_IO', `cannot open ${file}: ${(err as Error).message}; check the path`);
    }
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw new ToolError('SHOAL_ERR_ST_TRUNCATED', `${file}: ${size} bytes, shorter than the 8-byte header length; the file is truncated or not safetensors`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES) || 8n + n > BigInt(size)) {
        throw new ToolError('SHOAL_ERR_ST_HEADER_LEN', `${file}: header length ${n} does not fit the file (${size} bytes); the file is truncated or not safetensors`);
      }
      const hlen = Number(n);
      const hbuf = Buffer.alloc(hlen);
      if (hlen > 0) readSync(fd, hbuf, 0, hlen, 8);
      const { entries, metadata } = parseHeader(hbuf.toString('utf8'), size - 8 - hlen, file);
      return new SafetensorsReader(file, fd, size, 8 + hlen, entries, metadata);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  names(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): TensorEntry {
    const e = this.entries.get(name);
    if (!e) throw new ToolError('SHOAL_ERR_MISSING_TENSOR', `${this.path}: no tensor named ${name}`);
    return e;
  }

  /** The raw bytes of a tensor in a fresh, 8-byte aligned buffer. */
  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    if (this.fd === null) throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path} is closed`);
    const n = e.end - e.begin;
    const out = new Uint8Array(new ArrayBuffer(n));
    let done = 0;
    while (done < n) {
      const chunk = Math.min(n - done, 1 << 30);
      const got = readSync(this.fd, out, done, chunk, this.dataStart + e.begin + done);
      if (got <= 0) throw new ToolError('SHOAL_ERR_ST_TRUNCATED', `${this.path}: unexpected end of file in tensor ${name}`);
      done += got;
    }
    return out;
  }

  /** A typed view of a tensor in its storage dtype (F16/BF16 as raw Uint16Array bits). */
  read(name: string): TensorArray {
    const e = this.entry(name);
    const b = this.readBytes(name);
    const buf = b.buffer as ArrayBuffer;
    switch (e.dtype) {
      case 'F64': return new Float64Array(buf);
      case 'F32': return new Float32Array(buf);
      case 'F16': case 'BF16': return new Uint16Array(buf);
      case 'I64': return new BigInt64Array(buf);
      case 'I32': return new Int32Array(buf);
      case 'I16': return new Int16Array(buf);
      case 'I8': return new Int8Array(buf);
      case 'U8': case 'BOOL': return new Uint8Array(buf);
    }
  }

  /** An I32 tensor. */
  readInt32(name: string): Int32Array {
    const e = this.entry(name);
    if (e.dtype !== 'I32') throw new ToolError('SHOAL_ERR_ST_DTYPE', `${this.path}: tensor ${name} is ${e.dtype}, expected I32`);
    return this.read(name) as Int32Array;
  }

  /** A float tensor (F32, F16, BF16 or F64) converted to f32. */
  readFloat32(name: string): Float32Array {
    const e = this.entry(name);
    const a = this.read(name);
    switch (e.dtype) {
      case 'F32': return a as Float32Array;
      case 'F16': return f16ArrayToF32(a as Uint16Array);
      case 'BF16': return bf16ArrayToF32(a as Uint16Array);
      case 'F64': return Float32Array.from(a as Float64Array);
      default:
        throw new ToolError('SHOAL_ERR_ST_DTYPE', `${this.path}: tensor ${name} is ${e.dtype}, expected a float dtype (F32, F16, BF16)`);
    }
  }

  /** A float tensor converted to f64 (exact for F32/F16/BF16). */
  readFloat64(name: string): Float64Array {
    const e = this.entry(name);
    if (e.dtype === 'F64') return this.read(name) as Float64Array;
    return Float64Array.from(this.readFloat32(name));
  }

  close(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}

function isUint(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

/** Parses and validates a header JSON text against a data block of dataBytes. */
export function parseHeader(text: string, dataBytes: number, where: string): {
  entries: Map<string, TensorEntry>; metadata: Record<string, string> | null;
} {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: header is not valid JSON (${(err as Error).message}); the file is corrupt or not safetensors`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: header is not a JSON object`);
  }
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> | null = null;
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)
        || !Object.values(raw as object).every((v) => typeof v === 'string')) {
        throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: __metadata__ must map strings to strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== 'object' || raw === null) {
      throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: entry ${name} is not an object`);
    }
    const r = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isStDType(r.dtype)) {
      throw new ToolError('SHOAL_ERR_ST_DTYPE', `${where}: tensor ${name} has unsupported dtype ${JSON.stringify(r.dtype)}`);
    }
    if (!Array.isArray(r.shape) || !r.shape.every(isUint)) {
      throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: tensor ${name} has an invalid shape ${JSON.stringify(r.shape)}`);
    }
    const off = r.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isUint(off[0]) || !isUint(off[1])) {
      throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${where}: tensor ${name} has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    const shape = r.shape as number[];
    if (begin > end || end > dataBytes) {
      throw new ToolError('SHOAL_ERR_ST_OFFSETS', `${where}: tensor ${name} data_offsets [${begin}, ${end}] outside the ${dataBytes}-byte data block`);
    }
    if (end - begin !== numel(shape) * DTYPE_BYTES[r.dtype]) {
      throw new ToolError('SHOAL_ERR_ST_OFFSETS', `${where}: tensor ${name} spans ${end - begin} bytes but shape [${shape}] ${r.dtype} needs ${numel(shape) * DTYPE_BYTES[r.dtype]}`);
    }
    entries.set(name, { name, dtype: r.dtype, shape, begin, end });
  }
  const sorted = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.begin < sorted[i - 1]!.end) {
      throw new ToolError('SHOAL_ERR_ST_OFFSETS', `${where}: tensors ${sorted[i - 1]!.name} and ${sorted[i]!.name} overlap`);
    }
  }
  return { entries, metadata };
}

// ---------------------------------------------------------------------------
// checkpoints (model.safetensors or a sharded index)
// ---------------------------------------------------------------------------

/** All tensors of a model directory, single file or sharded. */
export class Checkpoint {
  readonly dir: string;
  readonly files: SafetensorsReader[];
  private readonly byName = new Map<string, SafetensorsReader>();

  private constructor(dir: string, files: SafetensorsReader[]) {
    this.dir = dir;
    this.files = files;
    for (const f of files) {
      for (const n of f.names()) {
        if (this.byName.has(n)) {
          throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `tensor ${n} appears in both ${this.byName.get(n)!.path} and ${f.path}`);
        }
        this.byName.set(n, f);
      }
    }
  }

  static open(dir: string): Checkpoint {
    const single = path.join(dir, 'model.safetensors');
    const index = path.join(dir, 'model.safetensors.index.json');
    if (existsSync(single)) return new Checkpoint(dir, [SafetensorsReader.open(single)]);
    if (existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
        if (typeof weightMap !== 'object' || weightMap === null) throw new Error('no weight_map object');
      } catch (err) {
        throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${index}: ${(err as Error).message}; regenerate the index`);
      }
      const shardNames = [...new Set(Object.values(weightMap))].sort();
      const files: SafetensorsReader[] = [];
      try {
        for (const s of shardNames) {
          if (s.includes('/') || s.includes('\\')) throw new ToolError('SHOAL_ERR_ST_HEADER_JSON', `${index}: shard name ${s} must be a plain file name`);
          files.push(SafetensorsReader.open(path.join(dir, s)));
        }
      } catch (err) {
        for (const f of files) f.close();
        throw err;
      }
      const ck = new Checkpoint(dir, files);
      for (const [name, shard] of Object.entries(weightMap)) {
        const f = ck.byName.get(name);
        if (!f || path.basename(f.path) !== shard) {
          ck.close();
          throw new ToolError('SHOAL_ERR_MISSING_TENSOR', `${index} maps ${name} to ${shard} but that shard does not hold it`);
        }
      }
      return ck;
    }
    throw new ToolError('SHOAL_ERR_IO', `${dir}: no model.safetensors or model.safetensors.index.json; point --model at a Hugging Face model folder`);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  private file(name: string): SafetensorsReader {
    const f = this.byName.get(name);
    if (!f) throw new ToolError('SHOAL_ERR_MISSING_TENSOR', `${this.dir}: checkpoint has no tensor ${name}`);
    return f;
  }

  entry(name: string): TensorEntry { return this.file(name).entry(name); }
  read(name: string): TensorArray { return this.file(name).read(name); }
  readInt32(name: string): Int32Array { return this.file(name).readInt32(name); }
  readFloat32(name: string): Float32Array { return this.file(name).readFloat32(name); }
  readFloat64(name: string): Float64Array { return this.file(name).readFloat64(name); }

  close(): void {
    for (const f of this.files) f.close();
  }
}

// ---------------------------------------------------------------------------
// writing
// ---------------------------------------------------------------------------

export interface TensorSpec {
  name: string;
  dtype: StDType;
  shape: number[];
}

/** Header bytes (JSON padded with spaces to a multiple of 8) for tensors stored in order. */
export function buildHeader(specs: readonly TensorSpec[], metadata?: Record<string, string>): { header: Buffer; dataBytes: number } {
  const obj: Record<string, unknown> = {};
  if (metadata) obj.__metadata__ = metadata;
  let off = 0;
  const seen = new Set<string>();
  for (const s of specs) {
    if (s.name === '__metadata__' || seen.has(s.name)) {
      throw new ToolError('SHOAL_ERR_INVALID_ARG', `tensor name ${s.name} is reserved or repeated`);
    }
    seen.add(s.name);
    if (!isStDType(s.dtype)) throw new ToolError('SHOAL_ERR_ST_DTYPE', `tensor ${s.name}: unsupported dtype ${String(s.dtype)}`);
    if (!s.shape.every(isUint)) throw new ToolError('SHOAL_ERR_INVALID_ARG', `tensor ${s.name}: invalid shape [${s.shape}]`);
    const n = numel(s.shape) * DTYPE_BYTES[s.dtype];
    obj[s.name] = { dtype: s.dtype, shape: s.shape, data_offsets: [off, off + n] };
    off += n;
  }
  const json = Buffer.from(JSON.stringify(obj), 'utf8');
  const padded = Math.ceil(json.length / 8) * 8;
  const header = Buffer.alloc(8 + padded, 0x20);
  header.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(header, 8);
  return { header, dataBytes: off };
}

/** Unique temporary sibling path for atomic writes. */
export function tempSibling(target: string): string {
  return path.join(path.dirname(target), `.${path.basename(target)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
}

function fsyncDir(dir: string): void {
  try {
    const fd = openSync(dir, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  } catch {
    // some filesystems do not allow fsync on directories; the rename is still atomic
  }
}

/**
 * Streams tensors into a safetensors file in header order. Data goes to a
 * temporary sibling; close() fsyncs and renames it into place.
 */
export class SafetensorsWriter {
  readonly path: string;
  readonly tmpPath: string;
  readonly specs: readonly TensorSpec[];
  readonly totalBytes: number;
  private fd: number | null;
  private index = 0;
  private written = 0; // bytes of the current tensor
  private pos: number; // file position
  private readonly sizes: number[];

  constructor(file: string, specs: readonly TensorSpec[], metadata: Record<string, string> = { format: 'pt' }) {
    this.path = file;
    this.specs = specs;
    this.sizes = specs.map((s) => numel(s.shape) * DTYPE_BYTES[s.dtype]);
    const { header, dataBytes } = buildHeader(specs, metadata);
    this.tmpPath = tempSibling(file);
    try {
      this.fd = openSync(this.tmpPath, 'wx');
    } catch (err) {
      throw new ToolError('SHOAL_ERR_IO', `cannot create ${this.tmpPath}: ${(err as Error).message}; check that the folder exists and is writable`);
    }
    this.totalBytes = header.length + dataBytes;
    this.pos = 0;
    this.writeRaw(header);
    this.skipEmpty();
  }

  private writeRaw(b: Uint8Array): void {
    let done = 0;
    while (done < b.length) {
      done += writeSync(this.fd!, b, done, b.length - done, this.pos + done);
    }
    this.pos += b.length;
  }

  private skipEmpty(): void {
    while (this.index < this.specs.length && this.sizes[this.index] === 0) this.index++;
  }

  /** Name of the tensor the next bytes belong to (null when all are written). */
  get current(): string | null {
    return this.index < this.specs.length ? this.specs[this.index]!.name : null;
  }

  /** Appends bytes of tensor `name`; a tensor may arrive in several chunks. */
  append(name: string, data: ArrayBufferView): void {
    if (this.fd === null) throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path}: writer is closed`);
    const cur = this.current;
    if (data.byteLength === 0 && cur !== name) {
      const i = this.specs.findIndex((s) => s.name === name);
      if (i >= 0 && this.sizes[i] === 0) return; // empty tensors need no data
    }
    if (cur !== name) {
      throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path}: got data for ${name} but the next tensor is ${cur ?? '(none)'}; write tensors in header order`);
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const need = this.sizes[this.index]! - this.written;
    if (bytes.length > need) {
      throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${name} gets ${this.written + bytes.length} bytes, expected ${this.sizes[this.index]}`);
    }
    this.writeRaw(bytes);
    this.written += bytes.length;
    if (this.written === this.sizes[this.index]) {
      this.index++;
      this.written = 0;
      this.skipEmpty();
    }
  }

  /** Writes a whole tensor. */
  write(name: string, data: ArrayBufferView): void {
    const i = this.index;
    this.append(name, data);
    if (this.index === i && this.written !== 0) {
      throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${name} is incomplete (${this.written} of ${this.sizes[i]} bytes)`);
    }
  }

  /** Checks every tensor was written, fsyncs and renames into place. */
  close(): void {
    if (this.fd === null) return;
    if (this.current !== null) {
      const missing = this.current;
      this.abort();
      throw new ToolError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${missing} was not written`);
    }
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
    renameSync(this.tmpPath, this.path);
    fsyncDir(path.dirname(this.path));
  }

  /** Drops the temporary file. */
  abort(): void {
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
    rmSync(this.tmpPath, { force: true });
  }
}

export interface TensorData extends TensorSpec {
  data: ArrayBufferView;
}

/** Writes a whole safetensors file atomically. */
export function writeSafetensors(file: string, tensors: readonly TensorData[], metadata?: Record<string, string>): void {
  const w = new SafetensorsWriter(file, tensors, metadata);
  try {
    for (const t of tensors) w.write(t.name, t.data);
    w.close();
  } catch (err) {
    w.abort();
    throw err;
  }
}

/** Writes a small file atomically (temp sibling, fsync, rename). */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  const tmp = tempSibling(file);
  const fd = openSync(tmp, 'wx');
  try {
    const b = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    let done = 0;
    while (done < b.length) done += writeSync(fd, b, done, b.length - done);
    fsyncSync(fd);
  } catch (err) {
    closeSync(fd);
    rmSync(tmp, { force: true });
    throw err;
  }
  closeSync(fd);
  renameSync(tmp, file);
}

// ---------------------------------------------------------------------------
// atomic output folders
// ---------------------------------------------------------------------------

/**
 * Creates a temporary folder next to `out` to build a model in. Refuses a
 * non-empty `out` unless force. Commit with commitOutputDir.
 */
export function beginOutputDir(out: string, force = false): string {
  const abs = path.resolve(out);
  if (existsSync(abs)) {
    let entries: string[];
    try {
      entries = readdirSync(abs);
    } catch {
      throw new ToolError('SHOAL_ERR_IO', `${out} exists and is not a folder; choose another --out`);
    }
    if (entries.length > 0 && !force) {
      throw new ToolError('SHOAL_ERR_OUTPUT_EXISTS', `${out} exists and is not empty; choose another --out or pass --force to replace it`);
    }
  }
  mkdirSync(path.dirname(abs), { recursive: true });
  const tmp = tempSibling(abs);
  mkdirSync(tmp);
  trackOutputDir(tmp);
  return tmp;
}

// Unfinished output folders of this process, removed if it is interrupted, so
// Ctrl-C never leaves a partial output behind. The signal handlers are only
// installed while such a folder exists (a long-running process keeps its own).
const pendingOutputs = new Set<string>();
const SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
function onInterrupt(sig: NodeJS.Signals): void {
  for (const d of pendingOutputs) rmSync(d, { recursive: true, force: true });
  process.stderr.write(`\ninterrupted (${sig}); the unfinished output was removed\n`);
  process.exit(sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129);
}

/** Registers a temporary folder to remove if the process is interrupted (until forgetOutputDir). */
export function trackOutputDir(dir: string): void {
  if (pendingOutputs.size === 0) for (const s of SIGNALS) process.on(s, onInterrupt);
  pendingOutputs.add(dir);
}

export function forgetOutputDir(dir: string): void {
  if (!pendingOutputs.delete(dir)) return;
  if (pendingOutputs.size === 0) for (const s of SIGNALS) process.off(s, onInterrupt);
}

/** Moves a finished temporary folder to `out` (replacing an old one). */
export function commitOutputDir(tmp: string, out: string): void {
  forgetOutputDir(tmp);
  const abs = path.resolve(out);
  fsyncDir(tmp);
  let old: string | null = null;
  if (existsSync(abs)) {
    old = tempSibling(abs);
    renameSync(abs, old);
  }
  renameSync(tmp, abs);
  fsyncDir(path.dirname(abs));
  if (old) rmSync(old, { recursive: true, force: true });
}

/** Removes a temporary folder after a failure. */
export function abortOutputDir(tmp: string): void {
  forgetOutputDir(tmp);
  rmSync(tmp, { recursive: true, force: true });
}

// ---------------------------------------------------------------------------
// sharded checkpoints
// ---------------------------------------------------------------------------

/** Default shard limit for model writers: 4 GiB of tensor data per file. */
export const DEFAULT_MAX_SHARD_BYTES = 4 * 1024 ** 3;

/**
 * Writes the tensors of a checkpoint into `dir`: one model.safetensors, or
 * model-0000i-of-0000n.safetensors shards plus model.safetensors.index.json
 * when the data passes maxShardBytes. Tensors are appended in spec order.
 */
export class CheckpointWriter {
  readonly dir: string;
  readonly fileNames: string[];
  readonly totalBytes: number;
  private readonly shards: TensorSpec[][];
  private readonly shardOf = new Map<string, number>();
  private writer: SafetensorsWriter | null = null;
  private shardIdx = -1;
  private closed = false;

  constructor(dir: string, specs: readonly TensorSpec[], maxShardBytes = DEFAULT_MAX_SHARD_BYTES) {
    this.dir = dir;
    const bytesOf = (s: TensorSpec) => numel(s.shape) * dtypeBytes(s.dtype);
    this.totalBytes = specs.reduce((a, s) => a + bytesOf(s), 0);
    const shards: TensorSpec[][] = [[]];
    let cur = 0;
    for (const s of specs) {
      const b = bytesOf(s);
      if (cur > 0 && cur + b > maxShardBytes) {
        shards.push([]);
        cur = 0;
      }
      shards[shards.length - 1]!.push(s);
      cur += b;
    }
    this.shards = shards;
    shards.forEach((sh, i) => sh.forEach((s) => this.shardOf.set(s.name, i)));
    const n = shards.length;
    this.fileNames = n === 1 ? ['model.safetensors']
      : shards.map((_, i) => `model-${String(i + 1).padStart(5, '0')}-of-${String(n).padStart(5, '0')}.safetensors`);
  }

  /** Files this writer produces (shards, then the index when sharded). */
  get files(): string[] {
    return this.fileNames.length > 1 ? [...this.fileNames, 'model.safetensors.index.json'] : [...this.fileNames];
  }

  append(name: string, data: ArrayBufferView): void {
    const i = this.shardOf.get(name);
    if (i === undefined) throw new ToolError('SHOAL_ERR_INVALID_ARG', `tensor ${name} is not part of this checkpoint`);
    if (i !== this.shardIdx) {
      if (i < this.shardIdx) throw new ToolError('SHOAL_ERR_INVALID_ARG', `tensor ${name} arrives after its shard was closed; write tensors in order`);
      this.writer?.close();
      this.writer = null;
      for (let k = this.shardIdx + 1; k < i; k++) {
        // shards whose tensors are all empty
        new SafetensorsWriter(path.join(this.dir, this.fileNames[k]!), this.shards[k]!).close();
      }
      this.shardIdx = i;
      this.writer = new SafetensorsWriter(path.join(this.dir, this.fileNames[i]!), this.shards[i]!);
    }
    this.writer!.append(name, data);
  }

  close(): void {
    if (this.closed) return;
    this.writer?.close();
    this.writer = null;
    for (let k = this.shardIdx + 1; k < this.shards.length; k++) {
      new SafetensorsWriter(path.join(this.dir, this.fileNames[k]!), this.shards[k]!).close();
    }
    this.shardIdx = this.shards.length;
    if (this.fileNames.length > 1) {
      const weightMap: Record<string, string> = {};
      this.shards.forEach((sh, i) => sh.forEach((s) => { weightMap[s.name] = this.fileNames[i]!; }));
      writeFileAtomic(path.join(this.dir, 'model.safetensors.index.json'),
        JSON.stringify({ metadata: { total_size: this.totalBytes }, weight_map: weightMap }, null, 2) + '\n');
    }
    this.closed = true;
  }

  abort(): void {
    this.writer?.abort();
    this.writer = null;
    this.closed = true;
  }
}
