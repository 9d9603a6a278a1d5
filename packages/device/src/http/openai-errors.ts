// openai-errors.ts — errors in the shape OpenAI's API and SDKs use:
//   {"error": {"message", "type", "param", "code"}}
// with the status the SDKs act on: 400/404 are not retried, 429 and 5xx are
// (after Retry-After). A client's mistake is never a 5xx.

export type OpenAIErrorType = 'invalid_request_error' | 'not_found_error' | 'rate_limit_error' | 'server_error' | 'service_unavailable';

export class OpenAIError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: OpenAIErrorType,
    readonly code: string | null = null,
    readonly param: string | null = null,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'OpenAIError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** 400 naming the parameter, e.g. badParam('temperature', 'must be <= 2'). */
export function badParam(param: string, message: string, code = 'invalid_value'): OpenAIError {
  return new OpenAIError(400, message, 'invalid_request_error', code, param);
}

/**
 * 400 context_length_exceeded as OpenAI words it, with the token counts.
 * `param` is the culprit: the prompt's parameter (messages, prompt, input) when
 * the prompt alone does not fit, else the one that asked for the completion
 * tokens (max_tokens, max_completion_tokens, max_output_tokens).
 */
export function contextLengthExceeded(
  promptTokens: number, maxTokens: number, contextSize: number,
  opts: { promptParam?: string; maxTokensParam?: string } = {},
): OpenAIError {
  const promptParam = opts.promptParam ?? 'messages';
  const maxParam = opts.maxTokensParam ?? 'max_tokens';
  const message = maxTokens > 0
    ? `This model's maximum context length is ${contextSize} tokens. However, you requested ${promptTokens + maxTokens} tokens ` +
      `(${promptTokens} in the ${promptParam}, ${maxTokens} in the completion, asked for by '${maxParam}'). ` +
      `Please reduce the length of the ${promptParam} or '${maxParam}' (at most ${Math.max(0, contextSize - promptTokens)} for this prompt).`
    : `This model's maximum context length is ${contextSize} tokens. However, your ${promptParam} resulted in ${promptTokens} tokens ` +
      `(at least one must stay free for the answer). Please reduce the length of the ${promptParam}.`;
  return new OpenAIError(400, message, 'invalid_request_error', 'context_length_exceeded', maxTokens > 0 ? maxParam : promptParam);
}

export function modelNotFound(model: string, available: string[]): OpenAIError {
  return new OpenAIError(404,
    `The model '${model}' does not exist on this device${available.length ? `; available: ${available.join(', ')}` : ' (no model is active)'}`,
    'invalid_request_error', 'model_not_found', 'model');
}

export function rateLimited(message: string, retryAfterSec: number): OpenAIError {
  return new OpenAIError(429, message, 'rate_limit_error', 'rate_limit_exceeded', null, { 'retry-after': String(Math.max(1, Math.ceil(retryAfterSec))) });
}

/** Device error codes (the daemon's registry) → OpenAI errors. Unknown codes are server errors. */
export function fromDeviceCode(code: string, message: string, opts: { retryAfterSec?: number } = {}): OpenAIError {
  switch (code) {
    case 'INVALID_JSON': return new OpenAIError(400, message, 'invalid_request_error', 'invalid_json');
    case 'INVALID_ARGS': case 'INVALID_MESSAGE': return new OpenAIError(400, message, 'invalid_request_error', 'invalid_value');
    case 'PAYLOAD_TOO_LARGE': return new OpenAIError(413, message, 'invalid_request_error', 'payload_too_large');
    case 'NOT_FOUND': return new OpenAIError(404, message, 'not_found_error', 'not_found');
    case 'METHOD_NOT_ALLOWED': return new OpenAIError(405, message, 'invalid_request_error', 'method_not_allowed');
    case 'QUEUE_FULL': return rateLimited(message, opts.retryAfterSec ?? 1);
    case 'NO_ACTIVE_MODEL': case 'SHUTTING_DOWN': return new OpenAIError(503, message, 'service_unavailable', code.toLowerCase(), null, { 'retry-after': '5' });
    case 'DEADLINE_EXCEEDED': return new OpenAIError(504, message, 'server_error', 'deadline_exceeded');
    case 'CANCELLED': return new OpenAIError(499, message, 'invalid_request_error', 'cancelled');
    default: return new OpenAIError(500, message, 'server_error', code.toLowerCase());
  }
}
