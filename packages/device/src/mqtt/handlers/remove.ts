// remove: delete a stored version (never the active one or the one kept for rollback).
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const remove = (c: Pick<HandlerContext, 'ota'>): OpHandler<'remove'> => (ref) => c.ota.remove(ref);
