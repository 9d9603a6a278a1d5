// MQTT topic scheme of the Shoal fleet contract (v1).
//
//   shoal/v1/devices/{deviceId}/state      retained, device -> fleet (Last Will: retained offline state)
//   shoal/v1/devices/{deviceId}/telemetry  device -> fleet, QoS 0
//   shoal/v1/devices/{deviceId}/events     device -> fleet, QoS 1 (durable outbox on the device)
//   shoal/v1/devices/{deviceId}/cmd        requester -> device, QoS 1 (Request envelope)
//   shoal/v1/devices/{deviceId}/desired    retained, controller -> device (Desired state)
//   shoal/v1/clients/{clientId}/replies    device -> requester, QoS 1 (Reply messages; chosen by the requester)
//
// Imported by both device and controller; depends on nothing else in the repo.

export const TOPIC_PREFIX = 'shoal/v1' as const;

export const DEVICE_CHANNELS = ['state', 'telemetry', 'events', 'cmd', 'desired'] as const;
export type DeviceChannel = (typeof DEVICE_CHANNELS)[number];

/** Device ids and client ids: 1..64 chars of [A-Za-z0-9_.-]; never MQTT wildcards or '/'. */
export const ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

export function isValidId(id: string): boolean {
  return ID_PATTERN.test(id);
}

function checkId(kind: string, id: string): string {
  if (!isValidId(id)) {
    throw new Error(`invalid ${kind} '${id}': expected 1-64 chars of [A-Za-z0-9_.-] starting with a letter or digit`);
  }
  return id;
}

export function deviceTopic(deviceId: string, channel: DeviceChannel): string {
  return `${TOPIC_PREFIX}/devices/${checkId('device id', deviceId)}/${channel}`;
}

export const topics = {
  state: (deviceId: string) => deviceTopic(deviceId, 'state'),
  telemetry: (deviceId: string) => deviceTopic(deviceId, 'telemetry'),
  events: (deviceId: string) => deviceTopic(deviceId, 'events'),
  cmd: (deviceId: string) => deviceTopic(deviceId, 'cmd'),
  desired: (deviceId: string) => deviceTopic(deviceId, 'desired'),
  /** Reply topic for a requester (controller, CLI): where the device sends Reply messages. */
  replies: (clientId: string) => `${TOPIC_PREFIX}/clients/${checkId('client id', clientId)}/replies`,
};

/** Wildcard subscription filters (for the controller). */
export const filters = {
  allStates: `${TOPIC_PREFIX}/devices/+/state`,
  allTelemetry: `${TOPIC_PREFIX}/devices/+/telemetry`,
  allEvents: `${TOPIC_PREFIX}/devices/+/events`,
  allDevices: `${TOPIC_PREFIX}/devices/+/+`,
  device: (deviceId: string) => `${TOPIC_PREFIX}/devices/${checkId('device id', deviceId)}/+`,
  replies: (clientId: string) => topics.replies(clientId),
};

export type ParsedTopic =
  | { kind: 'device'; deviceId: string; channel: DeviceChannel }
  | { kind: 'replies'; clientId: string };

/** Parses a concrete topic of this scheme; returns null for anything else. */
export function parseTopic(topic: string): ParsedTopic | null {
  const parts = topic.split('/');
  if (parts.length !== 5 || `${parts[0]}/${parts[1]}` !== TOPIC_PREFIX) return null;
  if (parts[2] === 'devices') {
    const [,, , deviceId, channel] = parts;
    if (!isValidId(deviceId!)) return null;
    if (!(DEVICE_CHANNELS as readonly string[]).includes(channel!)) return null;
    return { kind: 'device', deviceId: deviceId!, channel: channel as DeviceChannel };
  }
  if (parts[2] === 'clients' && parts[4] === 'replies') {
    if (!isValidId(parts[3]!)) return null;
    return { kind: 'replies', clientId: parts[3]! };
  }
  return null;
}

/** True when a reply topic is acceptable for a device to publish to (no wildcards, inside the prefix). */
export function isValidReplyTopic(topic: string): boolean {
  if (topic.length === 0 || topic.length > 256) return false;
  if (/[+#\u0000]/.test(topic)) return false;
  return topic.startsWith(`${TOPIC_PREFIX}/`) && !topic.startsWith(`${TOPIC_PREFIX}/devices/`);
}

/** MQTT topic filter matching (for tests and in-process routing). */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true;
    if (i >= t.length) return false;
    if (f[i] !== '+' && f[i] !== t[i]) return false;
  }
  return f.length === t.length;
}

/** QoS and retain policy per channel (see docs/protocol.md). */
export const CHANNEL_POLICY: Record<DeviceChannel | 'replies', { qos: 0 | 1; retain: boolean }> = {
  state: { qos: 1, retain: true },
  telemetry: { qos: 0, retain: false },
  events: { qos: 1, retain: false },
  cmd: { qos: 1, retain: false },
  desired: { qos: 1, retain: true },
  replies: { qos: 1, retain: false },
};
