// io/safetensors-write.ts — writing safetensors files and whole checkpoints: one
// file streamed tensor by tensor (SafetensorsWriter), sharded checkpoints with their
// index (CheckpointWriter), and model folders built beside their final place and
// renamed into it (beginOutputDir / commitOutputDir), so a crash leaves no half model.
//
// Writers pad the header with spaces so the data block starts 8-byte aligned.
import {
  closeSync, existsSync, fsyncSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync,
} from 'node:fs';
import path from 'node:path';
import { fsyncDirSync, tempSibling, writeFileAtomicSync, ShoalError } from '@shoal/common';
import { DTYPE_BYTES, dtypeBytes, encodeFloats, isStDType, isUint, numel, type StDType } from './dtypes.js';
import type { Checkpoint } from './safetensors.js';

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
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `tensor name ${s.name} is reserved or repeated`);
    }
    seen.add(s.name);
    if (!isStDType(s.dtype)) throw new ShoalError('SHOAL_ERR_ST_DTYPE', `tensor ${s.name}: unsupported dtype ${String(s.dtype)}`);
    if (!s.shape.every(isUint)) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `tensor ${s.name}: invalid shape [${s.shape}]`);
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
      throw new ShoalError('SHOAL_ERR_IO', `cannot create ${this.tmpPath}: ${(err as Error).message}; check that the folder exists and is writable`);
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
    if (this.fd === null) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path}: writer is closed`);
    const cur = this.current;
    if (data.byteLength === 0 && cur !== name) {
      const i = this.specs.findIndex((s) => s.name === name);
      if (i >= 0 && this.sizes[i] === 0) return; // empty tensors need no data
    }
    if (cur !== name) {
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path}: got data for ${name} but the next tensor is ${cur ?? '(none)'}; write tensors in header order`);
    }
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    const need = this.sizes[this.index]! - this.written;
    if (bytes.length > need) {
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${name} gets ${this.written + bytes.length} bytes, expected ${this.sizes[this.index]}`);
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
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${name} is incomplete (${this.written} of ${this.sizes[i]} bytes)`);
    }
  }

  /** Checks every tensor was written, fsyncs and renames into place. */
  close(): void {
    if (this.fd === null) return;
    if (this.current !== null) {
      const missing = this.current;
      this.abort();
      throw new ShoalError('SHOAL_ERR_INVALID_ARG', `${this.path}: tensor ${missing} was not written`);
    }
    fsyncSync(this.fd);
    closeSync(this.fd);
    this.fd = null;
    renameSync(this.tmpPath, this.path);
    fsyncDirSync(path.dirname(this.path));
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
      throw new ShoalError('SHOAL_ERR_IO', `${out} exists and is not a folder; choose another --out`);
    }
    if (entries.length > 0 && !force) {
      throw new ShoalError('SHOAL_ERR_OUTPUT_EXISTS', `${out} exists and is not empty; choose another --out or pass --force to replace it`);
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
  pendingOutputs.clear();
  process.stderr.write(`\ninterrupted (${sig}); the unfinished output was removed\n`);
  for (const s of SIGNALS) process.off(s, onInterrupt);
  // Die of the signal itself: process.exit() would wait for a native op still
  // running on the thread pool (a GPTQ solve can take a minute) before exiting.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
  else process.exit(sig === 'SIGINT' ? 130 : sig === 'SIGTERM' ? 143 : 129);
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
  fsyncDirSync(tmp);
  let old: string | null = null;
  if (existsSync(abs)) {
    old = tempSibling(abs);
    renameSync(abs, old);
  }
  renameSync(tmp, abs);
  fsyncDirSync(path.dirname(abs));
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
    if (i === undefined) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `tensor ${name} is not part of this checkpoint`);
    if (i !== this.shardIdx) {
      if (i < this.shardIdx) throw new ShoalError('SHOAL_ERR_INVALID_ARG', `tensor ${name} arrives after its shard was closed; write tensors in order`);
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
      writeFileAtomicSync(path.join(this.dir, 'model.safetensors.index.json'),
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

/** Copies tensor `src` of `ck` into `w` as `spec`: float tensors converted to spec's dtype, anything else byte for byte. */
export function appendCopied(w: CheckpointWriter, ck: Checkpoint, src: string, spec: TensorSpec): void {
  const e = ck.entry(src);
  const isFloat = e.dtype === 'F32' || e.dtype === 'F16' || e.dtype === 'BF16' || e.dtype === 'F64';
  w.append(spec.name, isFloat && spec.dtype !== e.dtype ? encodeFloats(ck.readFloat32(src), spec.dtype) : ck.read(src));
}
