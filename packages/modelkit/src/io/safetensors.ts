// safetensors.ts — reading safetensors files in TypeScript (writing: safetensors-write.ts,
// dtypes and f16/bf16: dtypes.ts).
//
// Format: u64 little-endian header length N, N bytes of UTF-8 JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}},
// then the data block; offsets are relative to the start of the data block.
//
// Reading never maps or loads the whole file: the header is parsed once and
// each tensor is read on demand into its own (aligned) buffer, so multi-GB
// checkpoints can be processed tensor by tensor.
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync } from 'node:fs';
import path from 'node:path';
import { DTYPE_BYTES, bf16ArrayToF32, f16ArrayToF32, isStDType, isUint, numel, type StDType } from './dtypes.js';
import { ShoalError } from '@shoal/common';

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
      throw new ShoalError('SHOAL_ERR_IO', `cannot open ${file}: ${(err as Error).message}; check the path`);
    }
    try {
      const size = fstatSync(fd).size;
      if (size < 8) throw new ShoalError('SHOAL_ERR_ST_TRUNCATED', `${file}: ${size} bytes, shorter than the 8-byte header length; the file is truncated or not safetensors`);
      const lenBuf = Buffer.alloc(8);
      readSync(fd, lenBuf, 0, 8, 0);
      const n = lenBuf.readBigUInt64LE(0);
      if (n > BigInt(MAX_HEADER_BYTES) || 8n + n > BigInt(size)) {
        throw new ShoalError('SHOAL_ERR_ST_HEADER_LEN', `${file}: header length ${n} does not fit the file (${size} bytes); the file is truncated or not safetensors`);
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
    if (!e) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${this.path}: no tensor named ${name}`);
    return e;
  }

  /** The raw bytes of a tensor in a fresh, 8-byte aligned buffer. */
  readBytes(name: string): Uint8Array {
    const e = this.entry(name);
    if (this.fd === null) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path} is closed`);
    const n = e.end - e.begin;
    const out = new Uint8Array(new ArrayBuffer(n));
    let done = 0;
    while (done < n) {
      const chunk = Math.min(n - done, 1 << 30);
      const got = readSync(this.fd, out, done, chunk, this.dataStart + e.begin + done);
      if (got <= 0) throw new ShoalError('SHOAL_ERR_ST_TRUNCATED', `${this.path}: unexpected end of file in tensor ${name}`);
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
    if (e.dtype !== 'I32') throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${this.path}: tensor ${name} is ${e.dtype}, expected I32`);
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
        throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${this.path}: tensor ${name} is ${e.dtype}, expected a float dtype (F32, F16, BF16)`);
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

/** Parses and validates a header JSON text against a data block of dataBytes. */
export function parseHeader(text: string, dataBytes: number, where: string): {
  entries: Map<string, TensorEntry>; metadata: Record<string, string> | null;
} {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: header is not valid JSON (${(err as Error).message}); the file is corrupt or not safetensors`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: header is not a JSON object`);
  }
  const entries = new Map<string, TensorEntry>();
  let metadata: Record<string, string> | null = null;
  for (const [name, raw] of Object.entries(json as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw)
        || !Object.values(raw as object).every((v) => typeof v === 'string')) {
        throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: __metadata__ must map strings to strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    if (typeof raw !== 'object' || raw === null) {
      throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: entry ${name} is not an object`);
    }
    const r = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    if (!isStDType(r.dtype)) {
      throw new ShoalError('SHOAL_ERR_ST_DTYPE', `${where}: tensor ${name} has unsupported dtype ${JSON.stringify(r.dtype)}`);
    }
    if (!Array.isArray(r.shape) || !r.shape.every(isUint)) {
      throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: tensor ${name} has an invalid shape ${JSON.stringify(r.shape)}`);
    }
    const off = r.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !isUint(off[0]) || !isUint(off[1])) {
      throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${where}: tensor ${name} has invalid data_offsets ${JSON.stringify(off)}`);
    }
    const [begin, end] = off as [number, number];
    const shape = r.shape as number[];
    if (begin > end || end > dataBytes) {
      throw new ShoalError('SHOAL_ERR_ST_OFFSETS', `${where}: tensor ${name} data_offsets [${begin}, ${end}] outside the ${dataBytes}-byte data block`);
    }
    if (end - begin !== numel(shape) * DTYPE_BYTES[r.dtype]) {
      throw new ShoalError('SHOAL_ERR_ST_OFFSETS', `${where}: tensor ${name} spans ${end - begin} bytes but shape [${shape}] ${r.dtype} needs ${numel(shape) * DTYPE_BYTES[r.dtype]}`);
    }
    entries.set(name, { name, dtype: r.dtype, shape, begin, end });
  }
  const sorted = [...entries.values()].filter((e) => e.end > e.begin).sort((a, b) => a.begin - b.begin);
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.begin < sorted[i - 1]!.end) {
      throw new ShoalError('SHOAL_ERR_ST_OFFSETS', `${where}: tensors ${sorted[i - 1]!.name} and ${sorted[i]!.name} overlap`);
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
          throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `tensor ${n} appears in both ${this.byName.get(n)!.path} and ${f.path}`);
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
        throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${index}: ${(err as Error).message}; regenerate the index`);
      }
      const shardNames = [...new Set(Object.values(weightMap))].sort();
      const files: SafetensorsReader[] = [];
      try {
        for (const s of shardNames) {
          if (s.includes('/') || s.includes('\\')) throw new ShoalError('SHOAL_ERR_ST_HEADER_JSON', `${index}: shard name ${s} must be a plain file name`);
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
          throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${index} maps ${name} to ${shard} but that shard does not hold it`);
        }
      }
      return ck;
    }
    throw new ShoalError('SHOAL_ERR_IO', `${dir}: no model.safetensors or model.safetensors.index.json; point --model at a Hugging Face model folder`);
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  private file(name: string): SafetensorsReader {
    const f = this.byName.get(name);
    if (!f) throw new ShoalError('SHOAL_ERR_MISSING_TENSOR', `${this.dir}: checkpoint has no tensor ${name}`);
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
