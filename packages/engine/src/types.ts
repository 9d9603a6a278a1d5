// types.ts — the engine's public TypeScript API (implemented in engine.ts).
// Everything above the engine (device daemon, controller demo, quantizer,
// evaluation) depends only on these types.
import type { ApiChatMessage, FunctionTool } from './chat-prompt.js';
import type { ServeOptions } from './serve-options.js';
import type { ServeChunk, ServeStats } from './serve-options.js';

export type Backend = 'auto' | 'cpu' | 'cuda';
export type Isa = 'auto' | 'scalar' | 'avx2' | 'avx512' | 'neon' | 'neon-dotprod';
/** KV cache element type: f16 (default), f32, or int8 with one scale per position and KV head (CPU only). */
export type KvCacheType = 'f32' | 'f16' | 'q8';
export const KV_CACHE_TYPES: readonly KvCacheType[] = ['f32', 'f16', 'q8'];
/** Output matrix storage: as in the checkpoint (default), or int8 with per-row / per-128 scales (CPU). */
export type LmHeadMode = 'auto' | 'native' | 'q8';
export const LM_HEAD_MODES: readonly LmHeadMode[] = ['auto', 'native', 'q8'];
/**
 * Arithmetic of the quantized (2/3/4/8-bit) linears. 'fast' (default): f16 −s·z and int8
 * activations per 32-block, the speed path. 'exact': f32 (q − z)·s and f32 activations, so
 * logits match a float64 forward of the dequantized weights to ~1e-6 (with kvCache 'f32');
 * for verification, CPU only (docs/engine.md).
 */
export type Precision = 'fast' | 'exact';
export const PRECISIONS: readonly Precision[] = ['fast', 'exact'];

export interface LoadOptions {
  /** Worker threads for the CPU backend; 0 or absent = all cores. */
  threads?: number;
  /** Default 'auto': a GPU when its capability table covers the checkpoint (docs/formats.md), else the CPU. */
  backend?: Backend;
  /** Force a CPU kernel set (tests compare every ISA with the scalar reference); implies backend 'cpu' unless one is given. */
  isa?: Isa;
  /** KV cache element type of the model's sessions (default f16; CUDA holds f16 only). */
  kvCache?: KvCacheType;
  /** Output matrix storage (default 'auto': q8 where it applies, as stored with precision 'exact'); q8 halves its bytes per token against f16. */
  lmHead?: LmHeadMode;
  /** Quantized-linear arithmetic (default 'fast'); 'exact' runs on the CPU only and keeps the output matrix as stored (lmHead 'q8' is refused). */
  precision?: Precision;
  /** Load the tokenizer (tokenizer.json) too; default true when present. */
  tokenizer?: boolean;
  /**
   * MoE models: where the experts' repacked weights are kept. A file path: built on the first
   * load and memory-mapped read-only after, so an expert is resident only once routed (and the
   * kernel may drop its pages again); 'auto': such a file under the user's cache folder
   * (expertCachePath); 'off' (default): repacked into memory at every load. Ignored by dense models.
   */
  expertCache?: string;
}

export interface ModelInfo {
  dir: string;
  arch: string;              // architectures[0]: "LlamaForCausalLM", "MixtralForCausalLM", "OPTForCausalLM", ... (docs/architectures.md)
  family: string;            // "llama" | "mistral" | "qwen2" | "qwen3" | "mixtral" | "qwen3_moe" | "opt" | "gpt_bigcode"
  quant: string;             // "none" | "awq-w4g128" ...
  dtype: string;             // unquantized storage dtype: "f32" | "f16" | "bf16"
  backend: string;           // "cpu" | "cuda"
  isa: string;               // kernels in use
  threads: number;
  kvCache: KvCacheType;      // KV cache element type of the sessions
  kvBytesPerPosition: number; // KV cache bytes per position (K and V, all layers)
  lmHead: string;            // output matrix as held: "q8" | "f16" | "f32" | "bf16" | "q4" ...
  precision: Precision;      // arithmetic of the quantized linears: "fast" | "exact"
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  contextLength: number;     // max_position_embeddings
  bosTokenId: number | null;
  eosTokenIds: number[];
  tiedEmbeddings: boolean;
  groupSize: number;         // 0 when unquantized
  parameters: number;        // parameter count
  fileBytes: number;         // bytes of tensor data in the checkpoint
  weightBytes: number;       // bytes held by the backend after repacking
  bytesPerToken: number;     // weight bytes read per decode step at batch 1 (MoE: the routed experts only)
  activeParameters: number;  // parameters used per token (MoE: top-k of the experts; else = parameters)
  slidingWindow: number;     // attention window in positions (0: full attention)
  experts: number;           // MoE experts per layer (0: dense)
  /** MoE: "created" | "reused" | "rebuilt (<why>)" the expert cache file, or "off" / "off: <why it could not be used>". */
  expertCache: string;
  expertsUsed: number;       // experts routed per token
  loadSeconds: number;
  repackSeconds: number;
  /** Why `backend: 'auto'` chose the CPU over a GPU ("" or absent when it did not): log it. */
  backendNote?: string;
}

export type { SamplingOptions } from './serve-options.js';
import type { SamplingOptions } from './serve-options.js';

export interface GenerateOptions extends SamplingOptions {
  maxTokens?: number;       // default: until EOS or the context is full
  signal?: AbortSignal;
  /** Extra stop token ids besides the model's EOS ids. */
  stopTokenIds?: number[];
}

/** One streamed piece of a generation. */
export interface GeneratedChunk {
  /** The token id; -1 for a final text-only chunk (a held-back UTF-8 tail). */
  token: number;
  /** Text this token completes (may be '' while a UTF-8 sequence is incomplete). */
  text: string;
}

export interface GenerateStats {
  promptTokens: number;
  generatedTokens: number;
  stopReason: 'eos' | 'max_tokens' | 'aborted' | 'context_full';
  /** Seconds from the call to the first generated token. */
  timeToFirstToken: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string }

export interface Tokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  /** Applies tokenizer_config.json's chat_template (falls back to a plain format); OpenAI messages accepted. */
  applyChatTemplate(messages: Array<ChatMessage | ApiChatMessage>, opts?: { addGenerationPrompt?: boolean; tools?: FunctionTool[] }): string;
  /** Chat template rendered and tokenized (special tokens come from the template, none added): BOS exactly once. */
  encodeChat(messages: Array<ChatMessage | ApiChatMessage>, opts?: { addGenerationPrompt?: boolean; tools?: FunctionTool[] }): number[];
  /** Text each token id adds when generated (null: special / not text on its own). */
  vocabTexts?(vocabSize: number): Array<string | null>;
  /** Source of the chat template ('' without one). */
  readonly chatTemplateText?: string;
  /** A decoder that turns a token stream into text without broken UTF-8; context = the tokens before the stream. */
  createStreamDecoder(context?: number[]): { push(token: number): string; flush(): string };
  readonly bosTokenId: number | null;
  readonly eosTokenIds: number[];
}

export interface Session {
  readonly contextSize: number;
  /** Tokens in the KV cache. */
  readonly position: number;
  /** Evaluates tokens; returns the last token's logits, or all rows when allLogits. */
  eval(tokens: ArrayLike<number>, opts?: { allLogits?: boolean }): Promise<Float32Array>;
  /** Prompt as text (tokenized with BOS per the tokenizer) or ids; streams generated tokens. */
  generate(prompt: string | number[], opts?: GenerateOptions): AsyncGenerator<GeneratedChunk, GenerateStats, void>;
  /**
   * One application request: the KV cache must already hold
   * prompt[0..position) (prefix cache); the rest is evaluated, then tokens are
   * drawn one step at a time with stop strings, penalties, logit bias,
   * logprobs and JSON / tool-call constraints (serve.ts).
   */
  serve(prompt: number[], opts: ServeOptions & { signal?: AbortSignal }): AsyncGenerator<ServeChunk, ServeStats, void>;
  /** Drops cache positions >= keep. */
  truncate(keep: number): void;
  reset(): void;
  dispose(): void;
}

export interface Model {
  readonly info: ModelInfo;
  readonly tokenizer: Tokenizer | null;
  createSession(opts?: { contextSize?: number }): Session;
  /** KV-cache bytes of one session of `contextSize` positions. */
  kvBytes?(contextSize: number): number;
  dispose(): void;
}

