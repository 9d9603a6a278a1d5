// errors.ts — the engine's error codes, one registry. Native statuses arrive as
// Error.code = the C enum name (native/include/shoal.h); TypeScript-side checks
// use the same names so callers branch on one set of codes.
export const EngineErrorCode = {
  IO: 'SHOAL_ERR_IO',
  ST_TRUNCATED: 'SHOAL_ERR_ST_TRUNCATED',
  ST_HEADER_LEN: 'SHOAL_ERR_ST_HEADER_LEN',
  ST_HEADER_JSON: 'SHOAL_ERR_ST_HEADER_JSON',
  ST_OFFSETS: 'SHOAL_ERR_ST_OFFSETS',
  ST_DTYPE: 'SHOAL_ERR_ST_DTYPE',
  CONFIG: 'SHOAL_ERR_CONFIG',
  SHAPE: 'SHOAL_ERR_SHAPE',
  MISSING_TENSOR: 'SHOAL_ERR_MISSING_TENSOR',
  UNSUPPORTED_ARCH: 'SHOAL_ERR_UNSUPPORTED_ARCH',
  UNSUPPORTED_QUANT: 'SHOAL_ERR_UNSUPPORTED_QUANT',
  GROUP_SIZE: 'SHOAL_ERR_GROUP_SIZE',
  CONTEXT_FULL: 'SHOAL_ERR_CONTEXT_FULL',
  INVALID_ARG: 'SHOAL_ERR_INVALID_ARG',
  OOM: 'SHOAL_ERR_OOM',
  CANCELLED: 'SHOAL_ERR_CANCELLED',
  BACKEND: 'SHOAL_ERR_BACKEND',
  INTERNAL: 'SHOAL_ERR_INTERNAL',
  /** Quantized tensors contradict their metadata (e.g. GPTQ g_idx out of range). */
  QUANT_METADATA: 'SHOAL_ERR_QUANT_METADATA',
  /** The native addon is not built or cannot be loaded. */
  ADDON_MISSING: 'SHOAL_ERR_ADDON_MISSING',
  /** tokenizer.json missing or unreadable when text was given. */
  TOKENIZER: 'SHOAL_ERR_TOKENIZER',
  DISPOSED: 'SHOAL_ERR_DISPOSED',
  /** A tool's output folder exists and is not empty (pass --force). */
  OUTPUT_EXISTS: 'SHOAL_ERR_OUTPUT_EXISTS',
  /** A requested method or format is not implemented. */
  NOT_IMPLEMENTED: 'SHOAL_ERR_NOT_IMPLEMENTED',
} as const;

export type EngineErrorCodeName = (typeof EngineErrorCode)[keyof typeof EngineErrorCode];

export class EngineError extends Error {
  readonly code: string;
  constructor(code: EngineErrorCodeName | string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'EngineError';
    this.code = code;
  }
}
