// serve-options.ts — what one generation request asks of the engine, whatever
// the transport (OpenAI HTTP, MQTT generate, CLI). Transports validate and
// translate their own wire names into this.
import type { FunctionTool } from './chat-prompt.js';

export interface SamplingOptions {
  temperature?: number;     // 0 = greedy (the default)
  topK?: number;            // 0 = off
  topP?: number;            // 1 = off
  minP?: number;            // 0 = off
  repeatPenalty?: number;   // 1 = off
  repeatLastN?: number;     // -1 = whole history
  seed?: number;
}

export interface ServeSampling extends SamplingOptions {
  /** OpenAI: subtracted once from the logit of every token generated so far. */
  presencePenalty?: number;
  /** OpenAI: subtracted per occurrence of a token generated so far. */
  frequencyPenalty?: number;
  /** Token id → bias added to its logit (-100 bans, +100 forces). */
  logitBias?: Record<number, number>;
}

export type ResponseFormat =
  | { type: 'text' }
  | { type: 'json_object' }
  | { type: 'json_schema'; name: string; schema: Record<string, unknown>; strict: boolean };

export type ToolChoice = 'auto' | 'none' | 'required' | { name: string };

export interface ServeOptions extends ServeSampling {
  maxTokens?: number;
  /** Up to 4 strings; generation ends before the first one, which is not returned. */
  stop?: string[];
  /** Report the sampled token's logprob (and topLogprobs alternatives) per token. */
  logprobs?: boolean;
  topLogprobs?: number;
  responseFormat?: ResponseFormat;
  tools?: FunctionTool[];
  toolChoice?: ToolChoice;
  /** false: at most one call per answer (default: up to MAX_PARALLEL_TOOL_CALLS). */
  parallelToolCalls?: boolean;
}

export const MAX_STOP_STRINGS = 4;
export const MAX_TOP_LOGPROBS = 20;

export interface TokenLogprob { token: number; logprob: number }

export interface ServeChunk {
  token: number;
  /** Content text released by this token ('' while held back by a stop string, a UTF-8 tail or a possible tool call). */
  text: string;
  logprob?: number;
  top?: TokenLogprob[];
  /** A tool call whose JSON just closed (token -1): index 0, 1, ... in the order generated. */
  toolCall?: ToolCallOut & { index: number };
}

export interface ToolCallOut { id: string; name: string; arguments: string }

export interface ServeStats {
  promptTokens: number;
  /** Prompt tokens that were already in the KV cache. */
  cachedTokens: number;
  completionTokens: number;
  finishReason: 'stop' | 'length' | 'tool_calls';
  /** Why it ended, in detail. */
  reason: 'eos' | 'stop_string' | 'max_tokens' | 'context_full' | 'tool_calls';
  /** Content text (without stop strings and tool calls). */
  text: string;
  toolCalls: ToolCallOut[];
  /** prompt + generated ids; the KV cache holds the first position() of them. */
  tokens: number[];
  timeToFirstToken: number;
  /** Seconds spent computing allowed-token masks and advancing the JSON/tool recognizer (0 without a constraint). */
  constraintSeconds: number;
  prefillTokensPerSecond: number;
  decodeTokensPerSecond: number;
}

