// The one error registry: stable codes, HTTP statuses, the wire shape, and every
// status of the native engine's public header present under the same name.
import t from 'tap';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, ShoalError, isDeviceErrorCode, isErrorCode } from '../src/errors.js';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');

t.test('every native status code of shoal.h is in the registry', async (t) => {
  const header = readFileSync(path.join(repo, 'native/include/shoal.h'), 'utf8');
  const native = [...header.matchAll(/^\s*(SHOAL_ERR_[A-Z0-9_]+)\s*=\s*\d+/gm)].map((m) => m[1]!);
  t.ok(native.length >= 19, `found ${native.length} native codes`);
  for (const code of native) t.ok(isErrorCode(code), `${code} is registered`);
});

t.test('codes are upper-case names with a message and, when given, a valid HTTP status', async (t) => {
  for (const [code, info] of Object.entries(ERROR_CODES)) {
    t.match(code, /^[A-Z][A-Z0-9_]*$/, code);
    t.ok(info.message.length > 0, `${code} has a message`);
    if (info.status !== undefined) t.ok(info.status >= 400 && info.status <= 599, `${code} status ${info.status}`);
  }
});

t.test('ShoalError carries code, status, details and the wire shape', async (t) => {
  const e = new ShoalError('SHOAL_ERR_INVALID_ARG', 'temperature must be <= 2', { param: 'temperature' });
  t.ok(e instanceof Error);
  t.equal(e.name, 'ShoalError');
  t.equal(e.status, 400);
  t.same(e.toJSON(), { code: 'SHOAL_ERR_INVALID_ARG', message: 'temperature must be <= 2', details: { param: 'temperature' } });
  t.same(e.toInfo(), { code: 'SHOAL_ERR_INVALID_ARG', message: 'temperature must be <= 2' });
  t.same(JSON.parse(JSON.stringify(new ShoalError('SHOAL_ERR_IO'))), { code: 'SHOAL_ERR_IO', message: 'file I/O failed' }, 'default message, no details key');
  t.equal(new ShoalError('SHOAL_ERR_INTERNAL').status, 500, 'no status in the registry → 500');
  const cause = new Error('disk');
  t.equal(new ShoalError('SHOAL_ERR_IO', 'x', undefined, { cause }).cause, cause);
});

t.test('isErrorCode and isDeviceErrorCode do not accept inherited or foreign names', async (t) => {
  t.notOk(isErrorCode('toString'));
  t.notOk(isErrorCode('__proto__'));
  t.notOk(isErrorCode(42));
  t.notOk(isDeviceErrorCode('SHOAL_ERR_IO'), 'an engine code is not a device code');
});
