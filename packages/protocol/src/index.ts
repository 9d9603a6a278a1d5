export * from './topics.js';
export * from './messages.js';
export * from './manifest.js';
export * from './errors.js';
