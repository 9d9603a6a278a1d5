// errors.ts — the one error class and the one registry of stable codes. Every
// error Shoal reports (CLI, logs, MQTT replies and events, HTTP bodies) carries a
// code from this table; the strings never change once released, because
// scripts, tests and devices on the wire branch on them.
//
// SHOAL_ERR_* are the engine's and the model tools' codes (the native statuses
// of native/include/shoal.h arrive under the same names); the upper-case names
// without prefix are the device daemon's and the controller's. `status` is the
// HTTP status an API answers with (500 when absent).

interface CodeInfo { readonly message: string; readonly status?: number }

const ENGINE = {
  SHOAL_ERR_IO: { message: 'file I/O failed' },
  SHOAL_ERR_ST_TRUNCATED: { message: 'safetensors file is truncated' },
  SHOAL_ERR_ST_HEADER_LEN: { message: 'safetensors header length is invalid' },
  SHOAL_ERR_ST_HEADER_JSON: { message: 'safetensors header is not valid JSON' },
  SHOAL_ERR_ST_OFFSETS: { message: 'safetensors tensor offsets are invalid' },
  SHOAL_ERR_ST_DTYPE: { message: 'safetensors dtype is not supported' },
  SHOAL_ERR_CONFIG: { message: 'model config is invalid' },
  SHOAL_ERR_SHAPE: { message: 'tensor shape does not match the config' },
  SHOAL_ERR_MISSING_TENSOR: { message: 'a tensor the architecture needs is missing' },
  SHOAL_ERR_UNSUPPORTED_ARCH: { message: 'architecture is not supported' },
  SHOAL_ERR_UNSUPPORTED_QUANT: { message: 'quantization is not supported' },
  SHOAL_ERR_GROUP_SIZE: { message: 'group size does not fit the tensor' },
  SHOAL_ERR_CONTEXT_FULL: { message: 'the context is full', status: 400 },
  SHOAL_ERR_INVALID_ARG: { message: 'invalid argument', status: 400 },
  SHOAL_ERR_OOM: { message: 'out of memory' },
  SHOAL_ERR_CANCELLED: { message: 'cancelled', status: 499 },
  SHOAL_ERR_BACKEND: { message: 'the compute backend failed or is unavailable' },
  SHOAL_ERR_INTERNAL: { message: 'internal error' },
  /** Quantized tensors contradict their metadata (e.g. GPTQ g_idx out of range). */
  SHOAL_ERR_QUANT_METADATA: { message: 'quantized tensors contradict their metadata' },
  /** The native addon is not built or cannot be loaded. */
  SHOAL_ERR_ADDON_MISSING: { message: 'the native engine is not built' },
  /** tokenizer.json missing or unreadable when text was given. */
  SHOAL_ERR_TOKENIZER: { message: 'tokenizer missing or unreadable' },
  SHOAL_ERR_DISPOSED: { message: 'the model or session was disposed' },
  /** A tool's output folder exists and is not empty (pass --force). */
  SHOAL_ERR_OUTPUT_EXISTS: { message: 'output folder exists and is not empty' },
  /** A requested method or format is not implemented. */
  SHOAL_ERR_NOT_IMPLEMENTED: { message: 'not implemented' },
  /** The AWQ calibration text gives fewer tokens than one block. */
  SHOAL_ERR_CALIB_TOO_SHORT: { message: 'calibration text too short' },
  /** A --calib file holds no text. */
  SHOAL_ERR_CALIB_EMPTY: { message: 'calibration file is empty' },
  /** A quantizer's search produced a non-finite value. */
  SHOAL_ERR_NUMERIC: { message: 'a numeric search produced a non-finite value' },
  /** The Hugging Face Hub (or HF_ENDPOINT) failed or answered something unusable. */
  SHOAL_ERR_HUB: { message: 'the model hub request failed' },
  /** The Hub refused the request: gated or private model without a valid HF_TOKEN. */
  SHOAL_ERR_HUB_AUTH: { message: 'the model hub refused the request (gated or private model)' },
  /** No such repository, revision or file on the Hub. */
  SHOAL_ERR_HUB_NOT_FOUND: { message: 'not found on the model hub' },
  /** A downloaded file's hash differs from the one the Hub lists, twice. */
  SHOAL_ERR_HASH_MISMATCH: { message: 'downloaded file does not match its published hash' },
} as const satisfies Record<string, CodeInfo>;

/** The device daemon's codes; those in protocol's WIRE_ERROR_CODES travel over MQTT. */
const DEVICE = {
  // configuration
  CONFIG_NOT_FOUND: { message: 'configuration file not found', status: 400 },
  CONFIG_INVALID_JSON: { message: 'configuration file is not valid JSON' },
  CONFIG_INVALID: { message: 'configuration does not match the schema', status: 400 },
  CONFIG_UNSUPPORTED_VERSION: { message: 'configVersion is not supported by this daemon' },
  FLEET_KEY_INVALID: { message: 'fleet public key is missing or not an Ed25519 public key' },
  // protocol / requests
  PAYLOAD_TOO_LARGE: { message: 'payload exceeds the size limit', status: 413 },
  INVALID_JSON: { message: 'payload is not JSON', status: 400 },
  INVALID_MESSAGE: { message: 'payload does not match the message schema', status: 400 },
  UNKNOWN_OP: { message: 'unknown operation' },
  INVALID_ARGS: { message: 'operation arguments are invalid', status: 400 },
  INVALID_REPLY_TO: { message: 'replyTo is not an acceptable reply topic' },
  DEADLINE_EXCEEDED: { message: 'the request deadline passed', status: 504 },
  DEADLINE_INVALID: { message: 'the request deadline is too far in the future', status: 400 },
  CANCELLED: { message: 'the request was cancelled', status: 499 },
  NOT_FOUND: { message: 'no such request, model, version or route', status: 404 },
  METHOD_NOT_ALLOWED: { message: 'HTTP method not allowed on this route', status: 405 },
  QUEUE_FULL: { message: 'the request queue is full', status: 429 },
  SHUTTING_DOWN: { message: 'the daemon is shutting down', status: 503 },
  NO_ACTIVE_MODEL: { message: 'no model is active', status: 503 },
  CONTEXT_LENGTH_EXCEEDED: { message: 'the prompt (plus the requested tokens) does not fit the context', status: 400 },
  GENERATION_FAILED: { message: 'the engine failed during generation' },
  // OTA / store
  MANIFEST_FETCH_FAILED: { message: 'could not fetch the manifest' },
  MANIFEST_HASH_MISMATCH: { message: 'manifest sha256 differs from the desired manifestSha256' },
  MANIFEST_INVALID: { message: 'manifest does not match the manifest schema' },
  MANIFEST_MISMATCH: { message: 'manifest name/version differ from the desired model' },
  SIGNATURE_INVALID: { message: 'manifest signature does not verify with the fleet public key', status: 422 },
  INSUFFICIENT_SPACE: { message: 'not enough free space in the model store' },
  DOWNLOAD_FAILED: { message: 'a package file could not be downloaded' },
  FILE_HASH_MISMATCH: { message: 'a downloaded file does not match its sha256' },
  FILE_SIZE_MISMATCH: { message: 'a downloaded file does not match its size' },
  HEALTH_CHECK_FAILED: { message: 'the new model failed its health check' },
  VERSION_ACTIVE: { message: 'the version is active or kept for rollback' },
  NO_PREVIOUS: { message: 'there is no previous version to roll back to' },
  STORE_IO: { message: 'model store I/O error' },
  INTERNAL: { message: 'internal error', status: 500 },
} as const satisfies Record<string, CodeInfo>;

/** The controller's codes (its HTTP API and the fleet CLI). */
const CONTROLLER = {
  BAD_REQUEST: { message: 'bad request', status: 400 },
  INVALID_SELECTOR: { message: 'invalid device selector', status: 400 },
  INVALID_WAVES: { message: 'invalid wave specification', status: 400 },
  INVALID_THRESHOLD: { message: 'invalid failure threshold', status: 400 },
  INVALID_MODEL_REF: { message: 'not NAME@VERSION', status: 400 },
  UNAUTHORIZED: { message: 'missing or wrong API token', status: 401 },
  DEVICE_NOT_FOUND: { message: 'no such device', status: 404 },
  PACKAGE_NOT_FOUND: { message: 'no such package', status: 404 },
  ROLLOUT_NOT_FOUND: { message: 'no such rollout', status: 404 },
  PACKAGE_EXISTS: { message: 'the package version exists', status: 409 },
  ROLLOUT_CONFLICT: { message: 'another rollout is running on these devices', status: 409 },
  ROLLOUT_STATE: { message: 'the rollout cannot do that in its state', status: 409 },
  NO_DEVICES: { message: 'the selector matches no device', status: 409 },
  RANGE_NOT_SATISFIABLE: { message: 'range not satisfiable', status: 416 },
  PACKAGE_INVALID: { message: 'the package is invalid', status: 422 },
  DEVICE_OFFLINE: { message: 'the device is offline', status: 409 },
  DEVICE_ERROR: { message: 'the device answered with an error', status: 502 },
  BROKER_UNAVAILABLE: { message: 'the MQTT broker is unreachable', status: 503 },
  TIMEOUT: { message: 'timed out', status: 504 },
  API_UNREACHABLE: { message: 'the controller API is unreachable', status: 503 },
  API_ERROR: { message: 'the controller API answered with an error', status: 502 },
  NO_API_CONFIG: { message: 'no controller API configured', status: 400 },
  IO_ERROR: { message: 'file I/O failed', status: 500 },
  KEY_EXISTS: { message: 'the key exists', status: 409 },
  KEY_INVALID: { message: 'the key is invalid', status: 400 },
  MODEL_DIR_INVALID: { message: 'not a model folder', status: 400 },
  CHILD_FAILED: { message: 'a child process failed', status: 500 },
  INTERRUPTED: { message: 'interrupted', status: 499 },
} as const satisfies Record<string, CodeInfo>;

export const ERROR_CODES: Readonly<Record<ErrorCode, CodeInfo>> = { ...ENGINE, ...DEVICE, ...CONTROLLER };

export type EngineErrorCode = keyof typeof ENGINE;
export type DeviceErrorCode = keyof typeof DEVICE;
export type ErrorCode = EngineErrorCode | DeviceErrorCode | keyof typeof CONTROLLER;

export function isDeviceErrorCode(code: unknown): code is DeviceErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(DEVICE, code);
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, code);
}

export class ShoalError extends Error {
  readonly code: ErrorCode;
  /** HTTP status for APIs (the registry's, 500 when it has none). */
  readonly status: number;
  readonly details?: unknown;
  constructor(code: ErrorCode, message?: string, details?: unknown, options?: ErrorOptions) {
    super(message ?? ERROR_CODES[code].message, options);
    this.name = 'ShoalError';
    this.code = code;
    this.status = ERROR_CODES[code].status ?? 500;
    if (details !== undefined) this.details = details;
  }

  toInfo(): { code: string; message: string } {
    return { code: this.code, message: this.message };
  }

  toJSON(): { code: string; message: string; details?: unknown } {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}
