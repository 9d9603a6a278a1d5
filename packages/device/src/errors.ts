// How the daemon reports any failure: a ShoalError keeps its code; anything else
// (an engine error, a bug) becomes a device code with the cause in the message.
import { ShoalError, ERROR_CODES, isDeviceErrorCode, type DeviceErrorCode } from '@shoal/common';

/** Any thrown value → {code, message} with a device code (engine codes are kept as the message prefix). */
export function toErrorInfo(err: unknown, fallback: DeviceErrorCode = 'INTERNAL'): { code: DeviceErrorCode; message: string } {
  if (err instanceof ShoalError && isDeviceErrorCode(err.code)) return { code: err.code, message: err.message };
  const e = err as { code?: unknown; message?: unknown; name?: unknown };
  if (isDeviceErrorCode(e?.code)) return { code: e.code, message: String(e.message ?? ERROR_CODES[e.code].message) };
  if (e?.name === 'AbortError') return { code: 'CANCELLED', message: 'the request was cancelled' };
  const msg = e && typeof e.message === 'string' ? e.message : String(err);
  const engineCode = e && typeof e.code === 'string' ? `${e.code}: ` : '';
  return { code: fallback, message: `${engineCode}${msg}` };
}
