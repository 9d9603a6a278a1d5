// The MoE expert cache through the TypeScript API (native/src/repack-cache.h): a tiny
// Mixtral-shaped AutoAWQ checkpoint written here (random weights, the real tensor names)
// loads with its experts mapped from a cache file: created on the first load, reused on
// the next, logits bit-identical to experts repacked in memory; 'auto' puts the file under
// $SHOAL_CACHE_DIR; an empty path is refused. Damaged and stale files: native test-arch.
import t from 'tap';
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadModel } from '../src/engine.js';
import { expertCachePath } from '../src/expert-cache.js';
import { packLinear, quantizeLinear, writeSafetensors, type TensorData } from '@shoal/modelkit';
import { engineSkip } from '@shoal/testkit';

const D = 64, H = 4, KVH = 2, HD = 16, FE = 64, E = 4, V = 80, L = 2, G = 32;

function writeMixtral(dir: string): void {
  let seed = 12345;
  const rand = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return seed / 2 ** 32 - 0.5; };
  const floats = (n: number, scale: number, base = 0): Float32Array => Float32Array.from({ length: n }, () => base + scale * rand());
  const tensors: TensorData[] = [];
  const f32 = (name: string, shape: number[], data: Float32Array): void => { tensors.push({ name, dtype: 'F32', shape, data }); };
  const awq = (name: string, out: number, inF: number): void => {
    const p = packLinear(quantizeLinear(floats(out * inF, 2 / Math.sqrt(inF)), out, inF, G));
    tensors.push({ name: `${name}.qweight`, dtype: 'I32', shape: [inF, out / 8], data: p.qweight });
    tensors.push({ name: `${name}.qzeros`, dtype: 'I32', shape: [inF / G, out / 8], data: p.qzeros });
    tensors.push({ name: `${name}.scales`, dtype: 'F16', shape: [inF / G, out], data: p.scales });
  };
  f32('model.embed_tokens.weight', [V, D], floats(V * D, 0.1));
  for (let l = 0; l < L; l++) {
    const p = `model.layers.${l}.`;
    f32(`${p}input_layernorm.weight`, [D], floats(D, 0.1, 1));
    awq(`${p}self_attn.q_proj`, H * HD, D);
    awq(`${p}self_attn.k_proj`, KVH * HD, D);
    awq(`${p}self_attn.v_proj`, KVH * HD, D);
    awq(`${p}self_attn.o_proj`, D, H * HD);
    f32(`${p}post_attention_layernorm.weight`, [D], floats(D, 0.1, 1));
    f32(`${p}block_sparse_moe.gate.weight`, [E, D], floats(E * D, 1));
    for (let e = 0; e < E; e++) {
      awq(`${p}block_sparse_moe.experts.${e}.w1`, FE, D);
      awq(`${p}block_sparse_moe.experts.${e}.w3`, FE, D);
      awq(`${p}block_sparse_moe.experts.${e}.w2`, D, FE);
    }
  }
  f32('model.norm.weight', [D], floats(D, 0.1, 1));
  f32('lm_head.weight', [V, D], floats(V * D, 0.5));
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  writeFileSync(path.join(dir, 'config.json'), JSON.stringify({
    architectures: ['MixtralForCausalLM'], model_type: 'mixtral', hidden_size: D, intermediate_size: FE,
    num_hidden_layers: L, num_attention_heads: H, num_key_value_heads: KVH, vocab_size: V, max_position_embeddings: 128,
    rms_norm_eps: 1e-5, rope_theta: 1e6, hidden_act: 'silu', num_local_experts: E, num_experts_per_tok: 2,
    tie_word_embeddings: false, bos_token_id: 1, eos_token_id: 2, sliding_window: null,
    quantization_config: { quant_method: 'awq', bits: 4, group_size: G, zero_point: true, version: 'gemm', modules_to_not_convert: ['gate'] },
  }));
}

async function logits(dir: string, expertCache: string): Promise<{ state: string; values: number[] }> {
  const model = await loadModel(dir, { threads: 1, tokenizer: false, expertCache });
  try {
    const s = model.createSession({ contextSize: 32 });
    const values: number[] = [];
    let last = await s.eval([1, 5, 9, 13, 17, 21, 25]);
    for (let i = 0; i < 4; i++) {
      values.push(...last);
      last = await s.eval([last.indexOf(Math.max(...last))]);
    }
    s.dispose();
    return { state: model.info.expertCache, values };
  } finally {
    model.dispose();
  }
}

t.test('MoE experts mapped from the expert cache', { skip: engineSkip }, async (t) => {
  const root = mkdtempSync(path.join(os.tmpdir(), 'shoal-expert-cache-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  const dir = path.join(root, 'mixtral-tiny');
  mkdirSync(dir);
  writeMixtral(dir);

  const inMemory = await logits(dir, 'off');
  t.equal(inMemory.state, 'off', 'off: experts repacked in memory');
  const file = path.join(root, 'experts.bin');
  const first = await logits(dir, file);
  t.equal(first.state, 'created', 'first load creates the file');
  t.ok(existsSync(file) && statSync(file).size > 4096, 'the cache file exists');
  t.same(first.values, inMemory.values, 'logits identical to experts in memory');
  const second = await logits(dir, file);
  t.equal(second.state, 'reused', 'second load maps the file');
  t.same(second.values, inMemory.values, 'logits identical again');

  const cacheRoot = path.join(root, 'cache');
  const prev = process.env.SHOAL_CACHE_DIR;
  process.env.SHOAL_CACHE_DIR = cacheRoot;
  t.teardown(() => { if (prev === undefined) delete process.env.SHOAL_CACHE_DIR; else process.env.SHOAL_CACHE_DIR = prev; });
  const auto = await logits(dir, 'auto');
  t.equal(auto.state, 'created', "'auto' creates the file under $SHOAL_CACHE_DIR");
  t.ok(existsSync(expertCachePath(dir)) && expertCachePath(dir).startsWith(cacheRoot), `at ${expertCachePath(dir)}`);

  await t.rejects(loadModel(dir, { tokenizer: false, expertCache: '' }), { code: 'SHOAL_ERR_INVALID_ARG' }, 'an empty path is refused');
});
