/** `doctor`: the host's probes (hotplug/doctor.ts); exit 1 when one fails. */
import { type Probes, probeHost } from '../../hotplug/doctor.js';
import { type CommandEnv, printJson } from '../env.js';

export async function doctor(o: { json?: boolean; qemu: string }, env: CommandEnv, probes?: Probes): Promise<number> {
  const checks = await probeHost(o.qemu, probes);
  if (o.json) printJson(env, checks);
  else env.output.out(checks.map((c) => `${c.status.padEnd(4)}  ${c.check.padEnd(14)}  ${c.detail}`).join('\n') + '\n');
  return checks.some((c) => c.status === 'fail') ? 1 : 0;
}
