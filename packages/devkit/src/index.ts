// @shoal/devkit — the local harness (shoal up, shoal sim, broker launchers); only the cli and tests import it.
export * from './brokers.js';
export * from './sim.js';
export * from './up.js';
export * from './shipped-broker.js';
export * from './trials/chaos.js';
export * from './trials/memory.js';
