// How the controller reports any failure: a ShoalError keeps its code and HTTP
// status (registry: @shoal/common errors.ts); file-system errors become IO_ERROR;
// anything else INTERNAL.
import { ShoalError, isErrorCode } from '@shoal/common';

/** Wraps anything thrown into a ShoalError (unknown errors become INTERNAL). */
export function toControllerError(e: unknown): ShoalError {
  if (e instanceof ShoalError) return e;
  const err = e as NodeJS.ErrnoException;
  if (err && isErrorCode(err.code)) return new ShoalError(err.code, err.message);
  if (err && (err.code === 'ENOENT' || err.code === 'EACCES' || err.code === 'ENOSPC' || err.code === 'EISDIR')) {
    return new ShoalError('IO_ERROR', `${err.message}; check the path and its permissions`);
  }
  return new ShoalError('INTERNAL', err?.message ?? String(e));
}
