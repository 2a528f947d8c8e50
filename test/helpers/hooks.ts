/** Mocha root hooks: whatever a test made is removed after the run, pass or fail. */
import { VIA_AGENT, cleanupAll, stopAgents, tempDir } from './env.js';

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    cleanupAll();
    process.exit(130);
  });
}

export const mochaHooks = {
  async afterEach(): Promise<void> {
    if (VIA_AGENT) await stopAgents();
  },
  afterAll(): void {
    cleanupAll();
  },
};

// Definitions go to a directory of this run, never to the host's /var/lib/mq-hotplug (the CLI
// processes the tests start inherit it).
process.env.MQ_HOTPLUG_CONFIG_DIR ??= tempDir('config');
