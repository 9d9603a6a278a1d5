// generate: queued on the scheduler at remote priority; streams chunk replies
// unless args.stream is false.
import { PRIORITY_REMOTE } from '../../scheduler.js';
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const generate = (c: Pick<HandlerContext, 'scheduler'>): OpHandler<'generate'> => (args, ctx) => {
  const input = { ...args } as Record<string, unknown>;
  delete input.stream;
  return c.scheduler.submit({
    id: ctx.id, source: 'mqtt', priority: PRIORITY_REMOTE, input, deadline: ctx.deadline, signal: ctx.signal,
    ...(args.stream === false ? {} : { onChunk: (text: string, tokens: number) => ctx.chunk({ text, tokens }) }),
  });
};
