// safetensors reading/writing, f16/bf16 conversions, sharded checkpoints.
import t from 'tap';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, f64ToF16, toF16Array } from '../../src/io/dtypes.js';
import { buildHeader, CheckpointWriter, SafetensorsWriter, writeSafetensors } from '../../src/io/safetensors-write.js';
import { Checkpoint, SafetensorsReader } from '../../src/io/safetensors.js';

function tmpdir(t: Tap.Test): string {
  const d = mkdtempSync(path.join(os.tmpdir(), 'shoal-st-'));
  t.teardown(() => rmSync(d, { recursive: true, force: true }));
  return d;
}
declare namespace Tap { type Test = { teardown(fn: () => void): void } }

t.test('f16 conversion known values', async (t) => {
  const cases: Array<[number, number]> = [
    [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [0.5, 0x3800], [65504, 0x7bff],
    [65519.99, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00],
    [2 ** -14, 0x0400], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -25, 0x0002], [1.5 * 2 ** -24 + 1e-12, 0x0002],
    [0.1, 0x2e66], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [0.2, 0x3266],
  ];
  for (const [v, h] of cases) {
    t.equal(f32ToF16(v), h, `f32ToF16(${v}) = 0x${h.toString(16)}`);
    t.equal(f64ToF16(v), h, `f64ToF16(${v}) = 0x${h.toString(16)}`);
  }
  t.ok(Number.isNaN(f16ToF32(f32ToF16(NaN))));
  t.ok(Number.isNaN(f16ToF32(f64ToF16(NaN))));
  // every finite f16 round-trips through f32 and f64
  let bad = 0;
  for (let h = 0; h < 0x10000; h++) {
    const e = (h >>> 10) & 0x1f;
    if (e === 31) continue;
    const v = f16ToF32(h);
    if (f32ToF16(v) !== h || f64ToF16(v) !== h) bad++;
  }
  t.equal(bad, 0, 'all finite f16 values round-trip');
  // single rounding: a value just above the f16 tie that rounds to the tie in f32 must go up
  const tie = 1 + 2 ** -11; // between 1 and 1+2^-10
  t.equal(f64ToF16(tie + 2 ** -40), 0x3c01);
  t.same(Array.from(toF16Array([1, 2, -0.5])), [0x3c00, 0x4000, 0xb800]);
});

t.test('bf16 conversion known values', async (t) => {
  t.equal(f32ToBf16(1), 0x3f80);
  t.equal(f32ToBf16(-2), 0xc000);
  t.equal(f32ToBf16(1 + 2 ** -8), 0x3f80); // tie -> even
  t.equal(f32ToBf16(1 + 3 * 2 ** -8), 0x3f82); // tie -> even (up)
  t.equal(bf16ToF32(0x3f80), 1);
  t.ok(Number.isNaN(bf16ToF32(f32ToBf16(NaN))));
});

t.test('header is space-padded to 8 bytes and data offsets are contiguous', async (t) => {
  const { header, dataBytes } = buildHeader([{ name: 'a', dtype: 'F32', shape: [3] }, { name: 'b', dtype: 'F16', shape: [2, 3] }]);
  const n = Number(header.readBigUInt64LE(0));
  t.equal(n % 8, 0);
  t.equal(header.length, 8 + n);
  const text = header.subarray(8).toString('utf8');
  t.match(text, /^\{.*\} *$/);
  const j = JSON.parse(text) as Record<string, { data_offsets: number[] }>;
  t.same(j.a!.data_offsets, [0, 12]);
  t.same(j.b!.data_offsets, [12, 24]);
  t.equal(dataBytes, 24);
});

t.test('write -> read round trip for every dtype', async (t) => {
  const d = tmpdir(t);
  const f = path.join(d, 'x.safetensors');
  const f32 = Float32Array.from([1.5, -2.25, 3e-8, 1e30, 0, -0]);
  const f16 = toF16Array([0.1, -7, 65504]);
  const bf = Uint16Array.from([0x3f80, 0xc000]);
  const i32 = Int32Array.from([0x75316420, -1, 0, 2 ** 31 - 1]);
  writeSafetensors(f, [
    { name: 'w.f32', dtype: 'F32', shape: [2, 3], data: f32 },
    { name: 'w.f16', dtype: 'F16', shape: [3], data: f16 },
    { name: 'w.bf16', dtype: 'BF16', shape: [2, 1], data: bf },
    { name: 'w.i32', dtype: 'I32', shape: [4], data: i32 },
    { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
  ], { format: 'pt', note: 'test' });
  t.same(readdirSync(d), ['x.safetensors'], 'no temporary files left');
  const r = SafetensorsReader.open(f);
  t.teardown(() => r.close());
  t.same(r.metadata, { format: 'pt', note: 'test' });
  t.same(r.names().sort(), ['empty', 'w.bf16', 'w.f16', 'w.f32', 'w.i32']);
  t.same(r.entry('w.f32').shape, [2, 3]);
  t.same(Array.from(r.readFloat32('w.f32')), Array.from(f32));
  t.same(Array.from(r.read('w.f16') as Uint16Array), Array.from(f16));
  t.same(Array.from(r.readFloat32('w.f16')), [f16ToF32(f16[0]!), -7, 65504]);
  t.same(Array.from(r.readFloat32('w.bf16')), [1, -2]);
  t.same(Array.from(r.readInt32('w.i32')), Array.from(i32));
  t.equal(r.readFloat32('empty').length, 0);
  t.equal(r.dataStart % 8, 0);
  t.throws(() => r.readInt32('w.f32'), { code: 'SHOAL_ERR_ST_DTYPE' });
  t.throws(() => r.entry('nope'), { code: 'SHOAL_ERR_MISSING_TENSOR' });
});

t.test('streaming writer checks order and sizes, leaves nothing behind on abort', async (t) => {
  const d = tmpdir(t);
  const f = path.join(d, 'y.safetensors');
  const w = new SafetensorsWriter(f, [{ name: 'a', dtype: 'F32', shape: [4] }, { name: 'b', dtype: 'I32', shape: [1] }]);
  t.throws(() => w.append('b', new Int32Array(1)), { code: 'SHOAL_ERR_INVALID_ARG' });
  w.append('a', new Float32Array([1, 2]));
  w.append('a', new Float32Array([3, 4]));
  t.throws(() => w.close(), { code: 'SHOAL_ERR_INVALID_ARG' }, 'missing tensor b');
  t.same(readdirSync(d), [], 'aborted writer removed its temporary file');
  const w2 = new SafetensorsWriter(f, [{ name: 'a', dtype: 'F32', shape: [2] }]);
  t.throws(() => w2.append('a', new Float32Array(3)), { code: 'SHOAL_ERR_INVALID_ARG' });
  w2.abort();
  t.same(readdirSync(d), []);
});

t.test('corrupt files give stable error codes', async (t) => {
  const d = tmpdir(t);
  const good = path.join(d, 'g.safetensors');
  writeSafetensors(good, [{ name: 'a', dtype: 'F32', shape: [2], data: new Float32Array([1, 2]) }]);
  const bytes = readFileSync(good);
  const bad = (name: string, b: Uint8Array) => {
    const p = path.join(d, name);
    writeFileSync(p, b);
    return p;
  };
  t.throws(() => SafetensorsReader.open(path.join(d, 'missing.safetensors')), { code: 'SHOAL_ERR_IO' });
  t.throws(() => SafetensorsReader.open(bad('short', bytes.subarray(0, 5))), { code: 'SHOAL_ERR_ST_TRUNCATED' });
  const longLen = Buffer.from(bytes);
  longLen.writeBigUInt64LE(BigInt(bytes.length), 0);
  t.throws(() => SafetensorsReader.open(bad('len', longLen)), { code: 'SHOAL_ERR_ST_HEADER_LEN' });
  t.throws(() => SafetensorsReader.open(bad('trunc', bytes.subarray(0, bytes.length - 4))), { code: 'SHOAL_ERR_ST_OFFSETS' });
  const mk = (json: string, data = 8) => {
    const h = Buffer.from(json);
    const b = Buffer.alloc(8 + h.length + data);
    b.writeBigUInt64LE(BigInt(h.length), 0);
    h.copy(b, 8);
    return b;
  };
  t.throws(() => SafetensorsReader.open(bad('json', mk('{"a": '))), { code: 'SHOAL_ERR_ST_HEADER_JSON' });
  t.throws(() => SafetensorsReader.open(bad('arr', mk('[1]'))), { code: 'SHOAL_ERR_ST_HEADER_JSON' });
  t.throws(() => SafetensorsReader.open(bad('dtype', mk('{"a":{"dtype":"F8","shape":[2],"data_offsets":[0,2]}}'))), { code: 'SHOAL_ERR_ST_DTYPE' });
  t.throws(() => SafetensorsReader.open(bad('size', mk('{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}'))), { code: 'SHOAL_ERR_ST_OFFSETS' });
  t.throws(() => SafetensorsReader.open(bad('overlap', mk('{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}'))), { code: 'SHOAL_ERR_ST_OFFSETS' });
  t.throws(() => SafetensorsReader.open(bad('shape', mk('{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}'))), { code: 'SHOAL_ERR_ST_HEADER_JSON' });
});

t.test('sharded checkpoint writer and reader', async (t) => {
  const d = tmpdir(t);
  const specs = [
    { name: 'a', dtype: 'F32' as const, shape: [8] },   // 32 bytes
    { name: 'b', dtype: 'F32' as const, shape: [8] },
    { name: 'c', dtype: 'I32' as const, shape: [4] },   // 16 bytes
    { name: 'd', dtype: 'F16' as const, shape: [40] },  // 80 bytes: its own shard
  ];
  const w = new CheckpointWriter(d, specs, 64);
  t.same(w.files, ['model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors', 'model.safetensors.index.json']);
  w.append('a', new Float32Array(8).fill(1));
  w.append('b', new Float32Array(8).fill(2));
  w.append('c', new Int32Array([1, 2, 3, 4]));
  w.append('d', toF16Array(new Float32Array(40).fill(0.5)));
  w.close();
  const idx = JSON.parse(readFileSync(path.join(d, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
  t.equal(idx.metadata.total_size, 32 + 32 + 16 + 80);
  t.same(idx.weight_map, { a: 'model-00001-of-00003.safetensors', b: 'model-00001-of-00003.safetensors', c: 'model-00002-of-00003.safetensors', d: 'model-00003-of-00003.safetensors' });
  const ck = Checkpoint.open(d);
  t.teardown(() => ck.close());
  t.same(ck.names().sort(), ['a', 'b', 'c', 'd']);
  t.same(Array.from(ck.readFloat32('b')), new Array(8).fill(2));
  t.same(Array.from(ck.readInt32('c')), [1, 2, 3, 4]);
  t.same(Array.from(ck.readFloat64('d')), new Array(40).fill(0.5));
  t.throws(() => Checkpoint.open(path.join(d, 'nothing-here')), { code: 'SHOAL_ERR_IO' });
});
