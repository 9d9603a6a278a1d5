// gptq/sequential.ts — GPTQ over a LLaMA-family model, layer by layer and, inside
// a layer, sub-layer by sub-layer ("true sequential", as AutoGPTQ): each linear's
// Hessian comes from calibration activations that already went through every
// quantized linear before it.
//
// Per decoder layer, x [T, D] = the previous (quantized) layer's output:
//   h  = rmsnorm(x)                      H_qkv = 2/T·hᵀh   → GPTQ q, k, v
//   a  = attention(h·Q̂ᵀ, h·K̂ᵀ, h·V̂ᵀ)    H_o   = 2/T·aᵀa   → GPTQ o
//   x1 = x + a·Ôᵀ;  h2 = rmsnorm(x1)     H_gu  = 2/T·h2ᵀh2 → GPTQ gate, up
//   m  = silu(h2·Ĝᵀ)·(h2·Ûᵀ)             H_d   = 2/T·mᵀm   → GPTQ down
//   x' = x1 + m·D̂ᵀ
// Only one layer's weights and activations are held (plus the embedding table
// for the first lookup). Products go through the backend (awq/ops.ts), the
// Hessians and the solver are native (solve.ts).
import { LINEAR_KINDS, linearDims, type LinearKind, type ModelShape } from '../../arch/model-shapes.js';
import { ropeInvFreq } from '../../eval/reference-forward.js';
import type { Checkpoint } from '../../io/safetensors.js';
import { add, backendOps, linear, rmsnorm } from '../awq/ops.js';
import { PhaseTimer, type PhaseTimes } from '../phases.js';
import { accumulateHessian, gptqLinear, type GptqLinearResult, type GptqSolveOptions } from './solve.js';

export interface GptqLinearReport {
  kind: LinearKind;
  seconds: number;
  loss: number;
  dead: number;
  relErrGptq?: number;
  relErrRtn?: number;
}

export interface GptqLayerReport {
  layer: number;
  seconds: number;
  linears: GptqLinearReport[];
  /** wall and CPU seconds per stage of this layer (the stages onStage announces) */
  phases: PhaseTimes;
}

export interface GptqSequentialOptions {
  ck: Checkpoint;
  shape: ModelShape;
  /** calibration tokens [samples · seqlen], block after block */
  tokens: Int32Array;
  seqlen: number;
  /** linear kinds to quantize (others stay FP and are used as they are) */
  quantize: ReadonlySet<LinearKind>;
  /** group -1: one group over all inputs */
  solve: Omit<GptqSolveOptions, 'group'> & { group: number };
  onStage?: (layer: number, phase: string, layers: number) => void;
  onLayer?: (report: GptqLayerReport, layers: number) => void;
}

/** Rows per chunk of the MLP forward (a [1024, F] gate/up chunk stays small). */
const MLP_ROWS = 1024;

/** Runs the layers in order as the writer asks for their linears. */
export class GptqSequential {
  private readonly o: GptqSequentialOptions;
  private x: Float32Array | null = null;
  private layer = -1;
  private results = new Map<LinearKind, GptqLinearResult>();
  readonly reports: GptqLayerReport[] = [];
  private readonly invFreq: Float32Array;

  constructor(o: GptqSequentialOptions) {
    this.o = o;
    this.invFreq = Float32Array.from(ropeInvFreq(o.shape));
  }

  /** The GPTQ result of one linear; layers must be asked for in order. */
  async linear(layer: number, kind: LinearKind): Promise<GptqLinearResult> {
    if (layer !== this.layer) {
      if (layer !== this.layer + 1) throw new Error(`GPTQ layers must be quantized in order (asked ${layer} after ${this.layer})`);
      this.results = new Map();
      await this.runLayer(layer);
      this.layer = layer;
    }
    const r = this.results.get(kind);
    if (!r) throw new Error(`GPTQ: ${kind} of layer ${layer} was not quantized`);
    return r;
  }

  private embed(): Float32Array {
    const { shape, tokens, ck } = this.o;
    const D = shape.hiddenSize;
    const emb = ck.readFloat32('model.embed_tokens.weight');
    const x = new Float32Array(tokens.length * D);
    for (let t = 0; t < tokens.length; t++) x.set(emb.subarray(tokens[t]! * D, (tokens[t]! + 1) * D), t * D);
    return x;
  }

  private async runLayer(l: number): Promise<void> {
    const t0 = performance.now();
    const { shape: s, ck, seqlen } = this.o;
    const timer = new PhaseTimer();
    const stage = (p: string) => {
      timer.start(p);
      this.o.onStage?.(l, p, s.layers);
    };
    stage('load');
    const D = s.hiddenSize;
    const F = s.intermediateSize;
    const qd = s.heads * s.headDim;
    const kvd = s.kvHeads * s.headDim;
    const T = this.o.tokens.length;
    const p = `model.layers.${l}`;
    if (!this.x) this.x = this.embed();
    let x: Float32Array | null = this.x;
    const w = {} as Record<LinearKind, Float32Array>;
    const bias: Partial<Record<LinearKind, Float32Array>> = {};
    for (const kind of LINEAR_KINDS) {
      w[kind] = ck.readFloat32(`${p}.${kind}.weight`);
      if (ck.has(`${p}.${kind}.bias`)) bias[kind] = ck.readFloat32(`${p}.${kind}.bias`);
    }
    const reports: GptqLinearReport[] = [];
    // GPTQ of the given kinds sharing the input act [T, K]; returns the weights to run them with
    const solve = async (kinds: LinearKind[], act: Float32Array, K: number, name: string): Promise<void> => {
      const todo = kinds.filter((k) => this.o.quantize.has(k));
      if (todo.length === 0) return;
      stage(`hessian ${name}`);
      const H = new Float64Array(K * K);
      await accumulateHessian(H, act, T, K, T);
      for (let i = 0; i < todo.length; i++) {
        const kind = todo[i]!;
        stage(`gptq ${kind.split('.')[1]}`);
        const tl = performance.now();
        const N = linearDims(s, kind).out;
        const G = this.o.solve.group === -1 ? K : this.o.solve.group;
        const r = await gptqLinear(w[kind], N, K, i === todo.length - 1 ? H : H.slice(), { ...this.o.solve, group: G });
        this.results.set(kind, r);
        w[kind] = r.deq;
        const rep: GptqLinearReport = { kind, seconds: (performance.now() - tl) / 1000, loss: r.loss, dead: r.dead };
        if (r.relErrGptq !== undefined) {
          rep.relErrGptq = r.relErrGptq;
          rep.relErrRtn = r.relErrRtn!;
        }
        reports.push(rep);
      }
    };
    const eps = s.rmsNormEps;
    let h: Float32Array | null = rmsnorm(x, T, D, ck.readFloat32(`${p}.input_layernorm.weight`), eps);
    await solve(['self_attn.q_proj', 'self_attn.k_proj', 'self_attn.v_proj'], h, D, 'q,k,v');
    stage('forward attention');
    const q = await linear(h, T, w['self_attn.q_proj'], qd, D, bias['self_attn.q_proj'] ?? null);
    const k = await linear(h, T, w['self_attn.k_proj'], kvd, D, bias['self_attn.k_proj'] ?? null);
    const v = await linear(h, T, w['self_attn.v_proj'], kvd, D, bias['self_attn.v_proj'] ?? null);
    h = null;
    let a: Float32Array | null = await backendOps().attention(q, k, v, T, seqlen, s.heads, s.kvHeads, s.headDim, this.invFreq);
    await solve(['self_attn.o_proj'], a, qd, 'o');
    stage('forward o');
    const x1 = add(x, await linear(a, T, w['self_attn.o_proj'], D, qd, bias['self_attn.o_proj'] ?? null));
    a = null;
    x = null; // x1 carries the residual stream from here
    this.x = null;
    let h2: Float32Array | null = rmsnorm(x1, T, D, ck.readFloat32(`${p}.post_attention_layernorm.weight`), eps);
    await solve(['mlp.gate_proj', 'mlp.up_proj'], h2, D, 'gate,up');
    stage('forward mlp');
    // m = silu(gate)·up [T, F], filled in chunks of rows (the MLP is per token), so
    // gate and up are never held for all T tokens (2 × [T, F] f32 less at the peak)
    const m = new Float32Array(T * F);
    for (let r0 = 0; r0 < T; r0 += MLP_ROWS) {
      const n = Math.min(MLP_ROWS, T - r0);
      const hc = h2.subarray(r0 * D, (r0 + n) * D);
      const g = await linear(hc, n, w['mlp.gate_proj'], F, D);
      await backendOps().siluMul(g, await linear(hc, n, w['mlp.up_proj'], F, D));
      m.set(g, r0 * F);
    }
    h2 = null;
    await solve(['mlp.down_proj'], m, F, 'down');
    if (l + 1 < s.layers) {
      stage('forward down');
      this.x = add(x1, await linear(m, T, w['mlp.down_proj'], D, F));
    }
    const report = { layer: l, seconds: (performance.now() - t0) / 1000, linears: reports, phases: timer.finish() };
    this.reports.push(report);
    this.o.onLayer?.(report, s.layers);
  }
}
