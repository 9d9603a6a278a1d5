// The retained desired state (shoal/v1/devices/{id}/desired) → the OTA manager.
// An empty payload clears it; an oversized or malformed one is reported as
// request.rejected and changes nothing.
import { Desired, MAX_DESIRED_BYTES, parsePayload, type DesiredModel, type EventType } from '@shoal/protocol';

export function onDesired(payload: Buffer, setDesired: (model: DesiredModel | null, rolloutId?: string, retryUntil?: number) => void,
  emit: (type: EventType, data: Record<string, unknown>) => void): void {
  if (payload.length === 0) { setDesired(null); return; }
  if (payload.length > MAX_DESIRED_BYTES) {
    emit('request.rejected', { code: 'PAYLOAD_TOO_LARGE', message: `desired state is ${payload.length} bytes; the limit is ${MAX_DESIRED_BYTES}`, bytes: payload.length, topic: 'desired' });
    return;
  }
  const d = parsePayload(Desired, payload);
  if (!d.ok) {
    const what = d.code === 'INVALID_JSON' ? 'desired state is not JSON' : 'desired state is invalid';
    emit('request.rejected', { code: d.code, message: `${what}: ${d.message}`, bytes: payload.length, topic: 'desired' });
    return;
  }
  setDesired(d.value.model, d.value.rolloutId, d.value.retryUntil);
}
