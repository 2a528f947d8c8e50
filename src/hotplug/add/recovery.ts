/**
 * Crash recovery: finishes or undoes the adds that a process which died left half-made (recorded
 * 'adding'). Every operation on a VM runs it first, under the VM's lock, so no live add is among
 * them. A device that is in the VM gets its port set up again from scratch and becomes active;
 * otherwise its netdev, its tap (where mq-hotplug made it) and the backend's extras are removed.
 */
import { definitionOf } from '../../model/nic.js';
import type { HotplugContext } from '../context.js';
import { inspectVm, tapsOfNetdevs } from '../inspect.js';

export async function recoverAdds(ctx: HotplugContext): Promise<void> {
  const stale = ctx.record.read()?.nics.filter((n) => n.state === 'adding') ?? [];
  if (!stale.length) return;
  const [live, network] = await Promise.all([
    inspectVm(ctx.qmp, { askCpus: false }),
    ctx.qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' }),
  ]);
  const netdevs = tapsOfNetdevs(network);
  for (const nic of stale) {
    if (live.deviceIds.has(nic.id)) {
      await ctx.network.detach(nic); // whatever the dead process got to, from scratch
      await ctx.network.attach(nic);
      ctx.record.saveNic({ ...nic, state: 'active', transient: undefined });
      if (!nic.transient) ctx.record.defineNic(definitionOf(nic));
      ctx.publish('NIC_RECOVERED', { device: nic.id, outcome: 'finished' });
    } else {
      if (netdevs.has(nic.netdev)) await ctx.qmp.execute('netdev_del', { id: nic.netdev });
      await ctx.taps.release(nic, { unfinished: true });
      await ctx.network.detach(nic);
      ctx.record.forgetNic(nic.id);
      ctx.publish('NIC_RECOVERED', { device: nic.id, outcome: 'undone' });
    }
  }
}
