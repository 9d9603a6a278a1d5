// The device daemon's error registry: every error the daemon reports (logs, MQTT
// replies, events, HTTP bodies, CLI) carries one of these stable codes.

export const DEVICE_ERRORS = {
  // configuration
  CONFIG_NOT_FOUND: 'configuration file not found',
  CONFIG_INVALID_JSON: 'configuration file is not valid JSON',
  CONFIG_INVALID: 'configuration does not match the schema',
  CONFIG_UNSUPPORTED_VERSION: 'configVersion is not supported by this daemon',
  FLEET_KEY_INVALID: 'fleet public key is missing or not an Ed25519 public key',
  // protocol / requests
  PAYLOAD_TOO_LARGE: 'payload exceeds the size limit',
  INVALID_JSON: 'payload is not JSON',
  INVALID_MESSAGE: 'payload does not match the message schema',
  UNKNOWN_OP: 'unknown operation',
  INVALID_ARGS: 'operation arguments are invalid',
  INVALID_REPLY_TO: 'replyTo is not an acceptable reply topic',
  DEADLINE_EXCEEDED: 'the request deadline passed',
  DEADLINE_INVALID: 'the request deadline is too far in the future',
  CANCELLED: 'the request was cancelled',
  NOT_FOUND: 'no such request, model, version or route',
  METHOD_NOT_ALLOWED: 'HTTP method not allowed on this route',
  QUEUE_FULL: 'the request queue is full',
  SHUTTING_DOWN: 'the daemon is shutting down',
  NO_ACTIVE_MODEL: 'no model is active',
  GENERATION_FAILED: 'the engine failed during generation',
  // OTA / store
  MANIFEST_FETCH_FAILED: 'could not fetch the manifest',
  MANIFEST_HASH_MISMATCH: 'manifest sha256 differs from the desired manifestSha256',
  MANIFEST_INVALID: 'manifest does not match the manifest schema',
  MANIFEST_MISMATCH: 'manifest name/version differ from the desired model',
  SIGNATURE_INVALID: 'manifest signature does not verify with the fleet public key',
  INSUFFICIENT_SPACE: 'not enough free space in the model store',
  DOWNLOAD_FAILED: 'a package file could not be downloaded',
  FILE_HASH_MISMATCH: 'a downloaded file does not match its sha256',
  FILE_SIZE_MISMATCH: 'a downloaded file does not match its size',
  HEALTH_CHECK_FAILED: 'the new model failed its health check',
  VERSION_ACTIVE: 'the version is active or kept for rollback',
  NO_PREVIOUS: 'there is no previous version to roll back to',
  STORE_IO: 'model store I/O error',
  INTERNAL: 'internal error',
} as const;

export type DeviceErrorCode = keyof typeof DEVICE_ERRORS;

export class DeviceError extends Error {
  readonly code: DeviceErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: DeviceErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? DEVICE_ERRORS[code]);
    this.name = 'DeviceError';
    this.code = code;
    if (details) this.details = details;
  }
  toInfo(): { code: string; message: string } {
    return { code: this.code, message: this.message };
  }
}

export function isDeviceErrorCode(code: unknown): code is DeviceErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(DEVICE_ERRORS, code);
}

/** Any thrown value → {code, message} with a registry code (engine codes are kept as the message prefix). */
export function toErrorInfo(err: unknown, fallback: DeviceErrorCode = 'INTERNAL'): { code: DeviceErrorCode; message: string } {
  if (err instanceof DeviceError) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  if (isDeviceErrorCode(e?.code)) return { code: e.code, message: String(e.message ?? DEVICE_ERRORS[e.code]) };
  if (e?.name === 'AbortError') return { code: 'CANCELLED', message: 'the request was cancelled' };
  const msg = e && typeof e.message === 'string' ? e.message : String(err);
  const engineCode = e && typeof e.code === 'string' ? `${e.code}: ` : '';
  return { code: fallback, message: `${engineCode}${msg}` };
}
