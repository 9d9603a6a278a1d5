// info: the state document plus the loaded model, queue, counters and uptime.
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const info = (c: HandlerContext): OpHandler<'info'> => async () => ({
  state: c.state(),
  model: c.active.current ? c.active.current.model.info : null,
  queue: { depth: c.scheduler.depth, maxDepth: c.cfg.queue.maxDepth, peakDepth: c.scheduler.peakDepth, active: c.scheduler.activeCount },
  inference: c.scheduler.stats,
  outbox: c.outbox(),
  http: c.http(),
  uptimeSec: c.uptimeSec(),
});
