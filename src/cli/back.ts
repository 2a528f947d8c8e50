/**
 * Everything the commands run, behind one door for main.ts. The bundle puts it in a second file
 * (dist/back.cjs, with its own code cache), loaded on the first action, so that `--version`,
 * `--help` and usage errors load only commander and the program (scripts/bundle.mjs). Each
 * command module still loads on demand.
 */
export const commands = () => import('./commands/index.js');
export const watch = () => import('./watch.js');
export const completion = () => import('./completion.js');
export const agent = () => import('../agent/run.js');
export { fail } from './output.js';
export { setTrace } from '../util/trace.js';
export { UsageError } from '../errors.js';
