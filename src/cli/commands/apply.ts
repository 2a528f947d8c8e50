/** `apply <vm> -f FILE`: the VM's NICs become exactly the spec's (hotplug/apply.ts, hotplug/vms.ts applyByName). */
import fs from 'node:fs';
import { UsageError } from '../../errors.js';
import { readInput } from '../../util/request.js';
import { type ApplyResult, applyLive, parseApplySpec } from '../../hotplug/apply.js';
import { applyByName } from '../../hotplug/vms.js';
import { type CommandEnv, printJson, seconds, withController } from '../env.js';

export async function apply(
  vm: string,
  o: { file: string; dryRun?: boolean; json?: boolean; timeout: string },
  env: CommandEnv,
): Promise<void> {
  const options = { dryRun: o.dryRun, removeTimeoutMs: seconds(o.timeout, 'timeout') };
  const source = o.file === '-' ? 'on stdin' : o.file;
  let text: string;
  try {
    text = o.file === '-' ? await readInput() : fs.readFileSync(o.file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read spec ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const wanted = parseApplySpec(text, source);
  const result: ApplyResult = env.global.qmp
    ? await withController(vm, env, (c) => applyLive(c.context, wanted, options))
    : await applyByName(env, vm, wanted, options);
  if (o.json) return printJson(env, result);
  env.output.out(summary(vm, result));
}

/** One line: what changed, or that nothing did. */
export function summary(vm: string, result: ApplyResult): string {
  const what = (verb: string, ids: string[]) => (ids.length ? [`${verb} ${ids.join(', ')}`] : []);
  const lines = [
    ...what('removed', result.removed),
    ...what('replaced', result.replaced),
    ...what('updated', result.updated),
    ...what('added', result.added),
  ];
  const where = result.definitionOnly ? ` (${vm} is not running: its definition only)` : '';
  const prefix = result.dryRun ? 'dry run, would have: ' : '';
  return lines.length ? `${prefix}${lines.join('; ')}${where}\n` : `no change: ${vm} has exactly these NICs${where}\n`;
}
