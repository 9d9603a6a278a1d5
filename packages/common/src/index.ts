// @shoal/common — the small things every package uses, written once.
export * from './atomic.js';
export * from './log.js';
export * from './signals.js';
export * from './checkout.js';
export * from './errors.js';
export * from './hf-cache.js';
export * from './timers.js';
export * from './metrics.js';
