// @shoal/device — the device daemon.
export * from './daemon.js';
export * from './config/load.js';
export * from './errors.js';
