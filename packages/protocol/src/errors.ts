// The error codes a device puts on the wire (a reply's error.code, request.rejected
// and ota.failed events): the device codes of the one registry in @shoal/common.
// Released codes never change; controllers and scripts branch on them.
import { isDeviceErrorCode, type DeviceErrorCode } from '@shoal/common';

export type WireErrorCode = DeviceErrorCode;

export function isWireErrorCode(code: unknown): code is WireErrorCode {
  return isDeviceErrorCode(code);
}
