// @shoal/engine — the only TypeScript that touches the native addon: load a model,
// sessions, generate, tokenizer and chat template, backend choice.
export * from './engine.js';
export * from './tokenizer.js';
export * from './bench.js';
export * from './ops.js';
export * from './chat-prompt.js';
export * from './stop-matcher.js';
export * from './kv-slots.js';
export * from './serve-options.js';
export * from './json-constraint.js';
export * from './token-trie.js';
export * from './serve.js';
export * from './tool-format.js';
export { KV_CACHE_TYPES, LM_HEAD_MODES, PRECISIONS } from './types.js';
export { expertCachePath, shoalCacheDir } from './expert-cache.js';
