// serve-options.ts — what one generation request asks of the engine, whatever
// the transport (OpenAI HTTP, MQTT generate, CLI). Transports validate and
// translate their own wire names into this.
import type { FunctionTool } from './chat-prompt.js';
import type { SamplingOptions } from './types.js';

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
  parallelToolCalls?: boolean;
}

export const MAX_STOP_STRINGS = 4;
export const MAX_TOP_LOGPROBS = 20;
