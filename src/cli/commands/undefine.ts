/** `undefine <vm>`: forgets a stopped VM's definition (hotplug/vms.ts undefineVm). */
import { undefineVm } from '../../hotplug/vms.js';
import { type CommandEnv, printJson } from '../env.js';

export async function undefine(vm: string, o: { json?: boolean }, env: CommandEnv): Promise<void> {
  const file = await undefineVm(env, vm);
  if (o.json) return printJson(env, { name: vm, undefined: true });
  env.output.out(`undefined ${vm}: ${file} removed\n`);
}
