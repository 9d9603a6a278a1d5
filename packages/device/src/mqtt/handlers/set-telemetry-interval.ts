// set-telemetry-interval: change how often telemetry is published (shown in state).
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const setTelemetryInterval = (c: Pick<HandlerContext, 'telemetry' | 'changed'>): OpHandler<'set-telemetry-interval'> => async ({ seconds }) => {
  c.telemetry.setInterval(seconds);
  c.changed();
  return { seconds };
};
