// The retained desired state (shoal/v1/devices/{id}/desired) → the OTA manager.
// An empty payload clears it; a malformed one is reported as request.rejected
// and changes nothing.
import { Desired, type DesiredModel, type EventType } from '@shoal/protocol';

export function onDesired(payload: Buffer, setDesired: (model: DesiredModel | null, rolloutId?: string) => void,
  emit: (type: EventType, data: Record<string, unknown>) => void): void {
  if (payload.length === 0) { setDesired(null); return; }
  let json: unknown;
  try { json = JSON.parse(payload.toString('utf8')); } catch (e) {
    emit('request.rejected', { code: 'INVALID_JSON', message: `desired state is not JSON: ${(e as Error).message}`, topic: 'desired' });
    return;
  }
  const d = Desired.safeParse(json);
  if (!d.success) {
    emit('request.rejected', { code: 'INVALID_MESSAGE', message: `desired state is invalid: ${d.error.issues.slice(0, 3).map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`, topic: 'desired' });
    return;
  }
  setDesired(d.data.model, d.data.rolloutId);
}
