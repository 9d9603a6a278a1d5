// One handler per op of the protocol (OPS in @shoal/protocol); the router
// validates the arguments before a handler runs.
import type { OpHandlers } from '../router.js';
import type { HandlerContext } from './context.js';
import { activate } from './activate.js';
import { cancel } from './cancel.js';
import { generate } from './generate.js';
import { info } from './info.js';
import { ping } from './ping.js';
import { remove } from './remove.js';
import { rollback } from './rollback.js';
import { setTelemetryInterval } from './set-telemetry-interval.js';

export type { HandlerContext };

export function opHandlers(c: HandlerContext): OpHandlers {
  return {
    ping: ping(c),
    info: info(c),
    generate: generate(c),
    cancel: cancel(c),
    activate: activate(c),
    rollback: rollback(c),
    remove: remove(c),
    'set-telemetry-interval': setTelemetryInterval(c),
  };
}
