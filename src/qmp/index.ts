export * from './client.js';
export * from './errors.js';
export * from './events.js';
export * from './framing.js';
export * from './messages.js';
