#!/usr/bin/env node
// jetson-budget.mjs — the memory-budget and decode-roofline tables of
// docs/jetson.md, computed from each model's real shapes (its config.json).
//
//   node scripts/jetson-budget.mjs            # prints the Markdown tables
//   node scripts/jetson-budget.mjs --check docs/jetson.md
//                                             # exits 1 when the doc's tables differ
//
// Weights at AutoAWQ w4g128 (zero_point, GEMM layout): every decoder-block linear
// costs 4 bits + an f16 scale and a 4-bit zero per group of 128 input channels
// = 4 + 16/128 + 4/128 = 4.15625 bit/weight. Embeddings, lm_head (when not tied),
// norms and biases stay f16. KV cache: K and V, f16, per layer, per kv head.
import { readFileSync } from 'node:fs';

const GIB = 2 ** 30;
const AWQ_BITS = 4 + 16 / 128 + 4 / 128;

// From each model's config.json on the Hugging Face Hub.
const MODELS = [
  { name: 'TinyLlama-1.1B', hidden: 2048, inter: 5632, layers: 22, heads: 32, kvHeads: 4, headDim: 64, vocab: 32000, tied: false, qkvBias: false, maxCtx: 2048 },
  { name: 'Qwen2-1.5B', hidden: 1536, inter: 8960, layers: 28, heads: 12, kvHeads: 2, headDim: 128, vocab: 151936, tied: true, qkvBias: true, maxCtx: 32768 },
  { name: 'Llama-2-7B', hidden: 4096, inter: 11008, layers: 32, heads: 32, kvHeads: 32, headDim: 128, vocab: 32000, tied: false, qkvBias: false, maxCtx: 4096 },
  { name: 'Mistral-7B', hidden: 4096, inter: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128, vocab: 32000, tied: false, qkvBias: false, maxCtx: 32768 },
  { name: 'Llama-3-8B', hidden: 4096, inter: 14336, layers: 32, heads: 32, kvHeads: 8, headDim: 128, vocab: 128256, tied: false, qkvBias: false, maxCtx: 8192 },
];

// RAM in GiB; reserve = firmware carve-outs + JetPack OS, headless or with the desktop;
// runtime = the daemon (Node, ~150 MiB), CUDA context and kernels, scratch and logits.
const MODULES = [
  { name: 'Orin Nano 8GB', ramGiB: 8, bw: [68, 102.4], bwNote: '68 (102 Super)' },
  { name: 'Orin NX 16GB', ramGiB: 16, bw: [102.4] },
  { name: 'AGX Orin 32GB', ramGiB: 32, bw: [204.8] },
  { name: 'AGX Orin 64GB', ramGiB: 64, bw: [204.8] },
];
const RESERVE_HEADLESS_GIB = 1.5;
const RESERVE_DESKTOP_GIB = 3.0;
const RUNTIME_GIB = 0.5;

function sizes(m) {
  const qDim = m.heads * m.headDim;
  const kvDim = m.kvHeads * m.headDim;
  const linear = m.layers * (m.hidden * qDim + 2 * m.hidden * kvDim + qDim * m.hidden + 3 * m.hidden * m.inter);
  const f16Params = m.vocab * m.hidden * (m.tied ? 1 : 2) // embeddings (+ lm_head)
    + m.layers * 2 * m.hidden + m.hidden                  // RMSNorm weights
    + (m.qkvBias ? m.layers * (qDim + 2 * kvDim) : 0);    // q/k/v biases (Qwen2)
  const weightBytes = (linear * AWQ_BITS) / 8 + f16Params * 2;
  // read per decoded token: every linear + lm_head (tied: the embedding matrix) + norms;
  // of the embedding table only one row
  const lmHead = m.vocab * m.hidden * 2;
  const readPerToken = (linear * AWQ_BITS) / 8 + lmHead + (m.layers * 2 * m.hidden + m.hidden) * 2;
  const kvPerToken = 2 * m.layers * kvDim * 2;
  return { linear, weightBytes, readPerToken, kvPerToken };
}

const fmt = (x, d = 2) => x.toFixed(d);
const ctxK = (n) => (n >= 1024 ? `${Math.floor(n / 1024)}k` : `${n}`);

function fitCell(m, s, budgetGiB) {
  const free = budgetGiB * GIB - s.weightBytes;
  if (free <= 0) return 'no';
  const ctx = Math.floor(free / s.kvPerToken);
  if (ctx < 512) return `no (${ctx} tok)`;
  if (ctx >= m.maxCtx) return `${ctxK(m.maxCtx)} (max)`;
  return `${ctxK(ctx)}`;
}

export function tables() {
  const lines = [];
  lines.push('| Model (AWQ w4g128) | linear params | weights (GiB) | KV cache per token | KV at 2k / 4k / 8k ctx (GiB) | max ctx |');
  lines.push('|---|---|---|---|---|---|');
  for (const m of MODELS) {
    const s = sizes(m);
    const kv = [2048, 4096, 8192].map((c) => fmt((s.kvPerToken * c) / GIB)).join(' / ');
    lines.push(`| ${m.name} | ${fmt(s.linear / 1e9)} B | ${fmt(s.weightBytes / GIB)} | ${fmt(s.kvPerToken / 1024, 0)} KiB | ${kv} | ${ctxK(m.maxCtx)} |`);
  }
  lines.push('');
  lines.push(`Longest f16 KV context that fits next to the weights (headless: RAM − ${RESERVE_HEADLESS_GIB} GiB OS − ${RUNTIME_GIB} GiB runtime; desktop: RAM − ${RESERVE_DESKTOP_GIB} GiB − ${RUNTIME_GIB} GiB), capped at the model's trained context:`);
  lines.push('');
  lines.push(`| Model | ${MODULES.map((d) => `${d.name} headless / desktop`).join(' | ')} |`);
  lines.push(`|---|${MODULES.map(() => '---').join('|')}|`);
  for (const m of MODELS) {
    const s = sizes(m);
    const cells = MODULES.map((d) => {
      const h = fitCell(m, s, d.ramGiB - RESERVE_HEADLESS_GIB - RUNTIME_GIB);
      const g = fitCell(m, s, d.ramGiB - RESERVE_DESKTOP_GIB - RUNTIME_GIB);
      return `${h} / ${g}`;
    });
    lines.push(`| ${m.name} | ${cells.join(' | ')} |`);
  }
  lines.push('');
  lines.push('Decode roofline, batch 1: tok/s ≤ bandwidth ÷ bytes read per token (all linears + f16 lm_head + the KV cache so far):');
  lines.push('');
  const bws = [['AGX Orin', 204.8], ['Orin NX', 102.4], ['Orin Nano Super', 102.4], ['Orin Nano', 68]];
  lines.push(`| Model | bytes/token (GB) | ${bws.map(([n, b]) => `${n} ${b} GB/s`).join(' | ')} | AGX Orin at 4k ctx |`);
  lines.push(`|---|---|${bws.map(() => '---').join('|')}|---|`);
  for (const m of MODELS) {
    const s = sizes(m);
    const b = s.readPerToken / 1e9;
    const at4k = (s.readPerToken + s.kvPerToken * Math.min(4096, m.maxCtx)) / 1e9;
    lines.push(`| ${m.name} | ${fmt(b)} | ${bws.map(([, bw]) => fmt(bw / b, 0)).join(' | ')} | ${fmt(204.8 / at4k, 0)} |`);
  }
  return lines.join('\n');
}

const BEGIN = '<!-- BEGIN jetson-budget.mjs -->';
const END = '<!-- END jetson-budget.mjs -->';

if (process.argv[2] === '--check') {
  const doc = readFileSync(process.argv[3], 'utf8');
  const a = doc.indexOf(BEGIN), b = doc.indexOf(END);
  if (a < 0 || b < a) { console.error(`${process.argv[3]}: no ${BEGIN} ... ${END} block`); process.exit(1); }
  const inDoc = doc.slice(a + BEGIN.length, b).trim();
  if (inDoc !== tables().trim()) {
    console.error(`${process.argv[3]}: the tables differ from scripts/jetson-budget.mjs output; regenerate them:\n${tables()}`);
    process.exit(1);
  }
  console.log(`${process.argv[3]}: memory and roofline tables match the computation`);
} else {
  console.log(tables());
}
