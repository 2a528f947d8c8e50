/** `remove <vm> <nic>`: hot-unplug a NIC by id, tap name or MAC (hotplug/remove.ts). */
import { type CommandEnv, printJson, seconds, withController } from '../env.js';

export async function remove(
  vm: string,
  nic: string,
  o: { timeout: string; json?: boolean; transient?: boolean },
  env: CommandEnv,
): Promise<void> {
  const timeoutMs = seconds(o.timeout, 'timeout');
  const r = await withController(vm, env, (c) => c.removeNic(nic, timeoutMs, { persist: o.transient !== true }));
  if (o.json) return printJson(env, { ...r, unplugMs: Math.round(r.unplugMs) });
  env.output.out(
    `removed ${r.id} from ${vm} (DEVICE_DELETED after ${Math.round(r.unplugMs)} ms; netdev ${r.netdev} and tap ${r.tap ?? '?'} gone)\n`,
  );
}
