// activate: make a stored version active (health-checked first; pins it until
// the desired state changes).
import type { OpHandler } from '../router.js';
import type { HandlerContext } from './context.js';

export const activate = (c: Pick<HandlerContext, 'ota'>): OpHandler<'activate'> => (ref) => c.ota.activate(ref);
