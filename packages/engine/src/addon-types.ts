// addon-types.ts — the hand-written type of the native addon (native/addon/).
// Keep in step with addon.cpp / addon-model.cpp / addon-session.cpp.
/** @internal */
export interface AddonModelInfo {
  arch: string; quant: string; dtype: string; backend: string; isa: string; threads: number;
  kvCache: 'f32' | 'f16' | 'q8'; kvBytesPerPosition: number; lmHead: string; precision: 'fast' | 'exact';
  vocabSize: number; hiddenSize: number; intermediateSize: number; layers: number; heads: number;
  kvHeads: number; headDim: number; contextLength: number; bosTokenId: number | null; eosTokenIds: number[];
  tiedEmbeddings: boolean; groupSize: number; parameters: number; fileBytes: number; weightBytes: number;
  bytesPerToken: number; loadSeconds: number; repackSeconds: number; backendNote: string;
  family: string; slidingWindow: number; experts: number; expertsUsed: number; activeParameters: number;
  expertCache: string;
}

/** @internal */
export interface AddonModel {
  info(): AddonModelInfo;
  dispose(): void;
}

/** @internal */
export interface AddonSamplingParams {
  temperature?: number; topK?: number; topP?: number; minP?: number;
  repeatPenalty?: number; repeatLastN?: number; seed?: number;
}

/** @internal */
export interface AddonGenerateResult {
  promptTokens: number;
  generatedTokens: number;
  /** 0 eos, 1 max tokens, 2 callback, 3 cancelled, 4 context full */
  stopReason: number;
  prefillSeconds: number;
  decodeSeconds: number;
}

/** @internal */
export interface AddonSession {
  eval(tokens: Int32Array, allLogits: boolean): Promise<Float32Array>;
  generate(prompt: Int32Array, sampling: AddonSamplingParams, maxTokens: number, stopIds: Int32Array,
    onToken: (ids: number[]) => void): Promise<AddonGenerateResult>;
  /** A fresh seeded sampler for step(). */
  setSampler(sampling: AddonSamplingParams): void;
  /** Evaluates tokens, then draws one token with controls (shoal_session_step). */
  step(tokens: Int32Array, history: Int32Array, controls: {
    presencePenalty?: number; frequencyPenalty?: number; counted?: Int32Array; biasIds?: Int32Array; biasValues?: Float32Array;
    allowed?: Uint32Array | null; topLogprobs?: number;
  }): Promise<{ token: number; logprob: number; topIds: Int32Array; topLogprobs: Float32Array }>;
  cancel(): void;
  truncate(keep: number): void;
  position(): number;
  contextSize(): number;
  dispose(): void;
}

/** @internal */
export interface Addon {
  loadModel(dir: string, opts: { threads?: number; backend?: string; isa?: string; kvCache?: string; lmHead?: string; expertCache?: string; precision?: string }): Promise<AddonModel>;
  AddonSession: new (model: AddonModel, contextSize: number) => AddonSession;
  cpuFeatures(): string;
  /** Memory read bandwidth in GB/s (blocks the calling thread). */
  measureBandwidth(threads: number, bytes: number, reps: number): number;
  /** malloc_trim(0) on glibc: free pages of the C heap go back to the system; true when some did. */
  trimNativeHeap(): boolean;
  statusCodes: Record<string, number>;
  /** Single backend ops on f32 arrays, on a worker thread (addon-ops.cpp); used by the AWQ quantizer. */
  ops: AddonOps;
}

/** @internal what ops.info() and ops.init() return */
export interface OpsInfo { backend: string; isa: string; threads: number; bf16Native: boolean }

/** @internal */
export interface AddonOps {
  /**
   * y [rows, out] = x [rows, in] · wᵀ, w [out, in]. precision 'bf16' (CPU; CUDA ignores it): x and w rounded
   * to bf16, products exact, sums in f32 (faster where the CPU has AVX512_BF16; see info().bf16Native);
   * default 'f32'. Anything else throws SHOAL_ERR_INVALID_ARG.
   */
  matmul(x: Float32Array, rows: number, w: Float32Array, out: number, inFeatures: number,
    precision?: 'f32' | 'bf16'): Promise<Float32Array>;
  /** Causal attention with RoPE over blocks of seqlen rows (positions 0..seqlen-1 each). */
  attention(q: Float32Array, k: Float32Array, v: Float32Array, rows: number, seqlen: number, heads: number,
    kvHeads: number, headDim: number, invFreq: Float32Array): Promise<Float32Array>;
  /** bf16Native: matmul 'bf16' runs on native bf16 dot products (else emulated in f32, or ignored on CUDA). */
  info(): OpsInfo;
  /** Q(w·diag(s))·diag(s)⁻¹ per group of `group` along cols (AutoAWQ asymmetric, f16 scales), on the host's cores. */
  fakeQuant(w: Float32Array, rows: number, cols: number, group: number, bits: number, colScale: Float64Array | null): Promise<Float32Array>;
  /** llm-awq clip candidates of group g: Q(clamp(w, ±max|w|·(1 − i/nGrid))) − w, [rows, steps, group]. */
  clipDeltas(w: Float32Array, rows: number, cols: number, group: number, g: number, bits: number, steps: number, nGrid: number): Promise<Float32Array>;
  /** gate ← silu(gate)·up in place, on the host's cores. */
  siluMul(gate: Float32Array, up: Float32Array): Promise<unknown>;
  /** H [K, K] += scale · XᵀX for x [rows, K] (blocks transposed natively, upper-triangle products through the backend, f64 sums, mirrored); H must be symmetric on entry. */
  hessian(x: Float32Array, rows: number, K: number, H: Float64Array, scale: number, precision?: 'f32' | 'bf16'): Promise<unknown>;
  /** GPTQ of w [N, K] with Hessian H [K, K] (overwritten), on the host's cores (native/addon/gptq.h). */
  gptq(w: Float32Array, N: number, K: number, H: Float64Array, options: GptqNativeOptions): Promise<GptqNativeResult>;
  /** Chooses the backend for the ops (default auto: CUDA when usable, else CPU); throws SHOAL_ERR_BACKEND. */
  init(backend: 'auto' | 'cpu' | 'cuda'): OpsInfo;
}

/** @internal options of ops.gptq */
export interface GptqNativeOptions {
  bits: number;
  /** group size dividing K (K: one group) */
  group: number;
  /** fraction of mean(diag H) added to the diagonal */
  damp: number;
  actOrder?: boolean;
  staticGroups?: boolean;
  sym?: boolean;
  /** 1: asymmetric zeros >= 1 (checkpoint_format gptq stores z − 1) */
  minZero?: 0 | 1;
  /** lazy-batch block (default 128) */
  block?: number;
  /** also return the quadratic errors of GPTQ and RTN and tr(W H Wᵀ) */
  errors?: boolean;
}

/** @internal result of ops.gptq */
export interface GptqNativeResult {
  /** codes [K, N] */
  q: Uint8Array;
  /** f16 bits [groups, N] */
  scales: Uint16Array;
  /** zero points [groups, N] */
  zeros: Uint8Array;
  gIdx: Int32Array;
  loss: number;
  dead: number;
  errGptq?: number;
  errRtn?: number;
  norm?: number;
}
