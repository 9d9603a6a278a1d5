// Stable error codes of the fleet controller, its HTTP API and its CLI commands.
// Every error the controller reports carries one of these codes, an HTTP status
// and a message that says what to do next.

export const ERROR_CODES = {
  CONFIG_INVALID: 400,
  CONFIG_NOT_FOUND: 400,
  BAD_REQUEST: 400,
  INVALID_JSON: 400,
  INVALID_SELECTOR: 400,
  INVALID_WAVES: 400,
  INVALID_THRESHOLD: 400,
  INVALID_MODEL_REF: 400,
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  DEVICE_NOT_FOUND: 404,
  PACKAGE_NOT_FOUND: 404,
  ROLLOUT_NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  PACKAGE_EXISTS: 409,
  ROLLOUT_CONFLICT: 409,
  ROLLOUT_STATE: 409,
  NO_DEVICES: 409,
  PAYLOAD_TOO_LARGE: 413,
  RANGE_NOT_SATISFIABLE: 416,
  PACKAGE_INVALID: 422,
  SIGNATURE_INVALID: 422,
  DEVICE_OFFLINE: 409,
  DEVICE_ERROR: 502,
  BROKER_UNAVAILABLE: 503,
  TIMEOUT: 504,
  API_UNREACHABLE: 503,
  API_ERROR: 502,
  NO_API_CONFIG: 400,
  IO_ERROR: 500,
  KEY_EXISTS: 409,
  KEY_INVALID: 400,
  MODEL_DIR_INVALID: 400,
  CHILD_FAILED: 500,
  INTERRUPTED: 499,
  INTERNAL: 500,
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

export class ControllerError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details?: unknown;
  constructor(code: ErrorCode, message: string, details?: unknown) {
    super(message);
    this.name = 'ControllerError';
    this.code = code;
    this.status = ERROR_CODES[code];
    this.details = details;
  }
  toJSON(): { code: string; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isControllerError(e: unknown): e is ControllerError {
  return e instanceof ControllerError;
}

/** Wraps anything thrown into a ControllerError (unknown errors become INTERNAL). */
export function toControllerError(e: unknown): ControllerError {
  if (e instanceof ControllerError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err.code === 'string' && err.code in ERROR_CODES) {
    return new ControllerError(err.code as ErrorCode, err.message);
  }
  if (err && (err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'ENOSPC' || err.code === 'EISDIR')) {
    return new ControllerError('IO_ERROR', `${err.message}; check the path and its permissions`);
  }
  return new ControllerError('INTERNAL', err?.message ?? String(e));
}
