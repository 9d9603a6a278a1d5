// @shoal/testkit — helpers for the tests of every package (the fleet harness is '@shoal/testkit/fleet').
export * from './shared.js';
export * from './engine.js';
export * from './numeric.js';
export * from './logits.js';
export * from './system.js';
export * from './prom-lint.js';
