// rollback: go back to the version kept as previous.
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const rollback = (c: Pick<HandlerContext, 'ota'>): OpHandler<'rollback'> => () => c.ota.rollback();
