// @shoal/controller — the fleet controller.
export * from './controller.js';
export * from './config.js';
export * from './client.js';
export * from './errors.js';
export * from './format.js';
export * from './packages.js';
export * from './web.js';
export * from './storage/types.js';
export * from './context.js';
