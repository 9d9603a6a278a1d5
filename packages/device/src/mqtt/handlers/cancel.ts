// cancel: aborts a running request by id (its own reply ends with CANCELLED).
import { ShoalError } from '@shoal/common';
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const cancel = (c: Pick<HandlerContext, 'cancel'>): OpHandler<'cancel'> => async ({ requestId }) => {
  if (!c.cancel(requestId)) throw new ShoalError('NOT_FOUND', `no running request with id '${requestId}'`);
  return { requestId, cancelled: true };
};
