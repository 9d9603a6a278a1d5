// generate: queued on the scheduler at remote priority; streams chunk replies
// (text, and each tool call as it completes) unless args.stream is false.
import type { TokenLogprob } from '@shoal/protocol';
import { PRIORITY_REMOTE } from '../../scheduler.js';
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const generate = (c: Pick<HandlerContext, 'scheduler'>): OpHandler<'generate'> => (args, ctx) => {
  const input = { ...args } as Record<string, unknown>;
  delete input.stream;
  return c.scheduler.submit({
    id: ctx.id, source: 'mqtt', priority: PRIORITY_REMOTE, input, deadline: ctx.deadline, signal: ctx.signal,
    ...(args.stream === false ? {} : {
      onChunk: (text: string, tokens: number, logprobs?: TokenLogprob[]) => ctx.chunk({ text, tokens, ...(logprobs ? { logprobs } : {}) }),
      // each call once its JSON closes, so a robot can start the first action while the next is generated
      onToolCall: (call) => ctx.chunk({ text: '', tokens: 0, toolCall: { index: call.index, id: call.id, name: call.name, arguments: call.arguments } }),
    }),
  });
};
