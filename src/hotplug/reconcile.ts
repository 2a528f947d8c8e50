/**
 * Reactions that keep the record and the host true to the VM, for `watch --reconcile` and `agent`:
 *  - a DEVICE_DELETED for a recorded NIC that no running `remove` handles (the guest ejected it, or
 *    an unplug-pending NIC finally went): netdev_del, forget it, publish NIC_REMOVED;
 *  - a tap that lost its bridge or went down (checked on every event and every `periodMs`):
 *    attach it again, publish NIC_REATTACHED.
 * Each reaction takes the VM's lock, so it never races a `remove` or `add` in another process.
 */
import { type Observable, type Subscription, concatMap, filter, interval, map, merge } from 'rxjs';
import { attachArgs, linkExists, linkIsUp, masterOf } from '../host/ip.js';
import type { QmpEvent } from '../qmp/messages.js';
import type { Controller } from './controller.js';
import { finishRemoval } from './remove.js';

export function startReconcile(vm: Controller, events$: Observable<QmpEvent> = vm.events$, periodMs = 5000): Subscription {
  const deleted$ = events$.pipe(
    filter((e) => e.event === 'DEVICE_DELETED' && e.source === 'qemu' && typeof e.data.device === 'string'),
    map((e) => ({ kind: 'deleted' as const, device: e.data.device as string })),
  );
  const check$ = merge(interval(periodMs), events$.pipe(filter((e) => e.event !== 'DEVICE_DELETED'))).pipe(map(() => ({ kind: 'check' as const })));
  return merge(deleted$, check$)
    .pipe(
      concatMap(async (job) => {
        try {
          if (job.kind === 'deleted') await vm.locked(() => forgetDeleted(vm, job.device));
          else await vm.locked(() => reattachTaps(vm));
        } catch (e) {
          vm.publish('RECONCILE_FAILED', { error: (e as Error).message });
        }
      }),
    )
    .subscribe();
}

async function forgetDeleted(vm: Controller, device: string): Promise<void> {
  const nic = vm.record()?.nics.find((n) => n.id === device);
  if (!nic) return; // not ours, or a `remove` already finished it
  await finishRemoval(vm, nic, nic.state === 'unplug-pending' ? 'pending unplug completed' : 'guest-initiated unplug');
}

async function reattachTaps(vm: Controller): Promise<void> {
  for (const nic of vm.record()?.nics ?? []) {
    if (nic.state !== 'active' || !linkExists(nic.tap)) continue;
    const master = masterOf(nic.tap);
    if ((nic.bridge && master !== nic.bridge) || !linkIsUp(nic.tap)) {
      if (nic.bridge && !linkExists(nic.bridge)) {
        vm.publish('NIC_BRIDGE_MISSING', { device: nic.id, tap: nic.tap, bridge: nic.bridge });
        continue;
      }
      await vm.ip.run(attachArgs(nic.tap, nic.bridge));
      vm.publish('NIC_REATTACHED', { device: nic.id, tap: nic.tap, bridge: nic.bridge ?? null, was: master ?? null });
    }
  }
}
