// Every kind of broken checkpoint gives a JS Error with a stable code and a
// message naming the file or tensor — never a crash or a hang.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync, cpSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { generateModel } from '@shoal/modelkit';

const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-bad-'));
t.teardown(() => rmSync(root, { recursive: true, force: true }));

// A valid AWQ model (hidden 128, intermediate 192, 2 layers, GQA 4:2, group 64).
const good = path.join(root, 'good');
generateModel({
  out: good, shape: 'tiny', quant: 'awq-w4g64', dtype: 'f16', seed: 3,
  overrides: { hiddenSize: 128, intermediateSize: 192, layers: 2, heads: 4, kvHeads: 2, headDim: 32, vocabSize: 96 },
});

let n = 0;
function variant(edit: (dir: string) => void): string {
  const dir = path.join(root, `v${n++}`);
  cpSync(good, dir, { recursive: true });
  edit(dir);
  return dir;
}

const stFile = (dir: string) => path.join(dir, 'model.safetensors');
const cfgFile = (dir: string) => path.join(dir, 'config.json');

function editConfig(dir: string, f: (c: Record<string, any>) => void): void {
  const c = JSON.parse(readFileSync(cfgFile(dir), 'utf8'));
  f(c);
  writeFileSync(cfgFile(dir), JSON.stringify(c, null, 2));
}

/** Rewrites the safetensors header (the data region is kept as is). */
function editHeader(dir: string, f: (h: Record<string, any>) => void): void {
  const buf = readFileSync(stFile(dir));
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString('utf8'));
  f(header);
  const json = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeBigUInt64LE(BigInt(json.length));
  writeFileSync(stFile(dir), Buffer.concat([prefix, json, buf.subarray(8 + len)]));
}

const firstTensor = (h: Record<string, any>) => Object.keys(h).filter((k) => k !== '__metadata__').sort()[0]!;

t.test('the valid model loads', async (t) => {
  const m = await loadModel(good);
  t.equal(m.info.quant, 'awq-w4g64');
  m.dispose();
});

const cases: Array<[string, (dir: string) => void, string, RegExp]> = [
  ['truncated safetensors', (d) => truncateSync(stFile(d), Math.floor(readFileSync(stFile(d)).length / 2)), 'SHOAL_ERR_ST_TRUNCATED', /model\.safetensors/],
  ['file shorter than the 8-byte prefix', (d) => truncateSync(stFile(d), 5), 'SHOAL_ERR_ST_TRUNCATED', /model\.safetensors/],
  ['header length past the end of the file', (d) => {
    const b = readFileSync(stFile(d)); b.writeBigUInt64LE(BigInt(b.length), 0); writeFileSync(stFile(d), b);
  }, 'SHOAL_ERR_ST_HEADER_LEN', /model\.safetensors/],
  ['header not JSON', (d) => {
    const b = readFileSync(stFile(d)); b.write('{"not json', 8); writeFileSync(stFile(d), b);
  }, 'SHOAL_ERR_ST_HEADER_JSON', /model\.safetensors/],
  ['tensor offsets out of range', (d) => editHeader(d, (h) => {
    const k = firstTensor(h); h[k].data_offsets = [h[k].data_offsets[0], h[k].data_offsets[1] + 1e9];
  }), 'SHOAL_ERR_ST_OFFSETS', /model\.safetensors/],
  ['overlapping tensor offsets', (d) => editHeader(d, (h) => {
    const ks = Object.keys(h).filter((k) => k !== '__metadata__' && h[k].dtype === 'F16');
    const [a, b] = ks.sort((x, y) => h[x].data_offsets[0] - h[y].data_offsets[0]);
    // make b start inside a, keeping its size
    const size = h[b!].data_offsets[1] - h[b!].data_offsets[0];
    h[b!].data_offsets = [h[a!].data_offsets[0], h[a!].data_offsets[0] + size];
  }), 'SHOAL_ERR_ST_OFFSETS', /overlap/],
  ['unknown dtype', (d) => editHeader(d, (h) => { h[firstTensor(h)].dtype = 'F8_E9M0'; }), 'SHOAL_ERR_ST_DTYPE', /F8_E9M0/],
  ['shape not matching the config', (d) => editConfig(d, (c) => { c.intermediate_size = 256; }), 'SHOAL_ERR_SHAPE', /mlp/],
  ['missing tensor', (d) => editHeader(d, (h) => { delete h['model.norm.weight']; }), 'SHOAL_ERR_MISSING_TENSOR', /model\.norm\.weight/],
  ['unsupported architecture', (d) => editConfig(d, (c) => { c.architectures = ['GPT2LMHeadModel']; }), 'SHOAL_ERR_UNSUPPORTED_ARCH', /GPT2LMHeadModel/],
  ['bits other than 4', (d) => editConfig(d, (c) => { c.quantization_config.bits = 3; }), 'SHOAL_ERR_UNSUPPORTED_QUANT', /bits/],
  ['group size not dividing in_features', (d) => editConfig(d, (c) => { c.quantization_config.group_size = 96; }), 'SHOAL_ERR_GROUP_SIZE', /96/],
  ['missing config.json', (d) => rmSync(cfgFile(d)), 'SHOAL_ERR_CONFIG', /config\.json/],
  ['config.json not JSON', (d) => writeFileSync(cfgFile(d), '{ hidden_size: 3'), 'SHOAL_ERR_CONFIG', /config\.json/],
  ['no weights file', (d) => rmSync(stFile(d)), 'SHOAL_ERR_IO', /safetensors/],
];

for (const [name, edit, code, message] of cases) {
  t.test(name, async (t) => {
    const dir = variant(edit);
    await t.rejects(loadModel(dir), { code, message }, `${code}`);
  });
}

t.test('prompt longer than the context', async (t) => {
  const m = await loadModel(good);
  const s = m.createSession({ contextSize: 16 });
  await t.rejects(s.eval(new Array(17).fill(3)), { code: 'SHOAL_ERR_CONTEXT_FULL' });
  const gen = s.generate(new Array(20).fill(3), {});
  await t.rejects(gen.next(), { code: 'SHOAL_ERR_CONTEXT_FULL', message: /20 tokens/ });
  s.dispose();
  m.dispose();
});
