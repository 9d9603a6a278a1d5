// types.ts — the engine's public TypeScript API (implemented in engine.ts).
// Everything above the engine (device daemon, controller demo, quantizer,
// evaluation) depends only on these types.

export type Backend = 'auto' | 'cpu' | 'cuda';
export type Isa = 'auto' | 'scalar' | 'avx2' | 'avx512' | 'neon' | 'neon-dotprod';

export interface LoadOptions {
  /** Worker threads for the CPU backend; 0 or absent = all cores. */
  threads?: number;
  backend?: Backend;
  /** Force a CPU kernel set (tests compare every ISA with the scalar reference). */
  isa?: Isa;
  /** Load the tokenizer (tokenizer.json) too; default true when present. */
  tokenizer?: boolean;
}

export interface ModelInfo {
  dir: string;
  arch: string;              // "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM"
  quant: string;             // "none" | "awq-w4g128" ...
  dtype: string;             // unquantized storage dtype: "f32" | "f16" | "bf16"
  backend: string;           // "cpu" | "cuda"
  isa: string;               // kernels in use
  threads: number;
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
  bytesPerToken: number;     // weight bytes read per decode step at batch 1
  loadSeconds: number;
  repackSeconds: number;
}

export interface SamplingOptions {
  temperature?: number;     // 0 = greedy (the default)
  topK?: number;            // 0 = off
  topP?: number;            // 1 = off
  minP?: number;            // 0 = off
  repeatPenalty?: number;   // 1 = off
  repeatLastN?: number;     // -1 = whole history
  seed?: number;
}

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
  /** Applies tokenizer_config.json's chat_template (falls back to a plain format). */
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
  /** Chat template rendered and tokenized (special tokens come from the template, none added). */
  encodeChat(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): number[];
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
  /** Drops cache positions >= keep. */
  truncate(keep: number): void;
  reset(): void;
  dispose(): void;
}

export interface Model {
  readonly info: ModelInfo;
  readonly tokenizer: Tokenizer | null;
  createSession(opts?: { contextSize?: number }): Session;
  dispose(): void;
}

