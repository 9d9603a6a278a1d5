// ping: liveness over MQTT (no engine work).
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const ping = (c: Pick<HandlerContext, 'cfg'>): OpHandler<'ping'> =>
  async () => ({ pong: true, ts: Date.now(), deviceId: c.cfg.deviceId });
