/**
 * The long soak: `npm run soak` (500 operations), or `npm run soak -- OPERATIONS [SEED]`.
 * A failure prints its seed; MQH_SEED=<seed> replays it.
 */
import { cleanupAll } from '../test/helpers/env.js';
import { soak } from '../test/helpers/soak.js';

const operations = Number(process.argv[2] ?? 500);
const seed = Number(process.argv[3] ?? process.env.MQH_SEED ?? Date.now() % 1e9);
const started = performance.now();
try {
  const report = await soak(operations, seed, process.env.VERBOSE ? (l) => console.log(l) : undefined);
  console.log(
    `soak: ${report.operations} operations, seed ${report.seed}, ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  for (const [what, n] of Object.entries(report.counts).sort()) console.log(`  ${String(n).padStart(4)}  ${what}`);
} catch (e) {
  console.error((e as Error).message);
  process.exitCode = 1;
} finally {
  cleanupAll();
}
