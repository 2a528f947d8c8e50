/** Mocha root hooks: whatever a test made is removed after the run, pass or fail. */
import { cleanupAll } from './env.js';

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    cleanupAll();
    process.exit(130);
  });
}

export const mochaHooks = {
  afterAll(): void {
    cleanupAll();
  },
};
