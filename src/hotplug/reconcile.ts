/**
 * Reactions that keep the record and the host true to the VM, for `watch --reconcile` and `agent`:
 *  - a DEVICE_DELETED for a recorded NIC that no running `remove` handles (the guest ejected it, or
 *    an unplug-pending NIC finally went): netdev_del, forget it, publish NIC_REMOVED;
 *  - a tap that drifted from its record (off its bridge, down, another MAC or MTU, its rate limit
 *    gone), checked on every event and every `periodMs`: set it right again (the network backend), publish
 *    NIC_REATTACHED with what was fixed; `kick$` asks for a check now (the host agent's link monitor).
 * Each reaction takes the VM's lock, so it never races a `remove` or `add` in another process.
 */
import { EMPTY, type Observable, type Subscription, concatMap, filter, interval, map, merge } from 'rxjs';
import type { HotplugContext } from './context.js';
import type { VmEvent } from './events.js';
import { finishRemoval } from './remove.js';

export function startReconcile(
  ctx: HotplugContext,
  events$: Observable<VmEvent> = ctx.events$,
  periodMs = 5000,
  kick$: Observable<unknown> = EMPTY,
): Subscription {
  const deleted$ = events$.pipe(
    filter((e) => e.event === 'DEVICE_DELETED' && e.source === 'qemu' && typeof e.data.device === 'string'),
    map((e) => ({ kind: 'deleted' as const, device: (e.data as { device: string }).device })),
  );
  // A check queued and not begun yet covers whatever asks for one meanwhile: an add's three events
  // (DEVICE_ADDED, NIC_BRIDGED, NIC_ADDED) queue one check behind its lock, not three.
  let checkQueued = false;
  const check$ = merge(interval(periodMs), kick$, events$.pipe(filter((e) => e.event !== 'DEVICE_DELETED'))).pipe(
    filter(() => !checkQueued),
    map(() => ((checkQueued = true), { kind: 'check' as const })),
  );
  return merge(deleted$, check$)
    .pipe(
      concatMap(async (job) => {
        try {
          if (job.kind === 'deleted') await ctx.record.locked(() => forgetDeleted(ctx, job.device));
          else
            await ctx.record.locked(() => {
              checkQueued = false; // begun: a change from now on needs the next one
              return repairPorts(ctx);
            });
        } catch (e) {
          ctx.publish('RECONCILE_FAILED', { error: (e as Error).message });
        }
      }),
    )
    .subscribe();
}

async function forgetDeleted(ctx: HotplugContext, device: string): Promise<void> {
  const nic = ctx.record.read()?.nics.find((n) => n.id === device);
  if (!nic) return; // not ours, or a `remove` already finished it
  await finishRemoval(ctx, nic, nic.state === 'unplug-pending' ? 'pending unplug completed' : 'guest-initiated unplug');
}

/** Sysfs reads for every tap, and what the network backend reads (for a Linux bridge, one `tc` exec where a rate limit is kept). */
async function repairPorts(ctx: HotplugContext): Promise<void> {
  const { host, network } = ctx;
  const nics = (ctx.record.read()?.nics ?? []).filter((n) => n.state === 'active' && host.linkExists(n.tap));
  const seen = await network.observe(nics);
  for (const nic of nics) {
    const link = host.readLink(nic.tap);
    const fixed = network.drift(nic, link, seen);
    if (!fixed.length) continue;
    if (nic.bridge && !host.linkExists(nic.bridge)) {
      ctx.publish('NIC_BRIDGE_MISSING', { device: nic.id, tap: nic.tap, bridge: nic.bridge });
      continue;
    }
    await network.repair(nic, link, seen);
    ctx.publish('NIC_REATTACHED', {
      ...{ device: nic.id, tap: nic.tap, bridge: nic.bridge, was: link?.master ?? null },
      fixed,
    });
  }
}
