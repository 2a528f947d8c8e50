/**
 * Hot-unplugging a NIC: device_del, wait for DEVICE_DELETED whose data.device is the id (QEMU sends
 * an earlier one for .../virtio-backend without `device`), then netdev_del, which closes the tap
 * QEMU made. A guest that never releases the device leaves the NIC recorded as unplug-pending.
 */
import { linkExists } from '../host/ip.js';
import { UsageError } from '../host/validate.js';
import { QmpCommandError } from '../qmp/errors.js';
import { EventTimeoutError, forDevice, nextEvent } from '../qmp/events.js';
import type { NicRecord, NicSpec } from '../qemu/state.js';
import type { Controller } from './controller.js';
import { UnplugPendingError } from './errors.js';
import { liveNics } from './inspect.js';

export interface RemoveResult {
  id: string;
  netdev: string;
  tap?: string;
  mac: string;
  /** ms from device_del to DEVICE_DELETED */
  unplugMs: number;
}

const ROLLBACK_UNPLUG_MS = 5000;

export async function removeNic(vm: Controller, selector: string, timeoutMs = 10_000): Promise<RemoveResult> {
  return vm.locked(async () => {
    const nic = await findNic(vm, selector);
    const started = performance.now();
    const gone = await unplugDevice(vm, nic.id, timeoutMs);
    if (!gone) {
      vm.updateRecord((r) => {
        const n = r.nics.find((x) => x.id === nic.id);
        if (n) n.state = 'unplug-pending';
      });
      vm.publish('NIC_UNPLUG_PENDING', { device: nic.id, netdev: nic.netdev, tap: nic.tap ?? null });
      throw new UnplugPendingError(
        `no DEVICE_DELETED for '${nic.id}' within ${timeoutMs} ms: the guest has not released the NIC ` +
          `(no guest OS, a guest still booting, or no hot-unplug support); recorded as unplug-pending, ` +
          `netdev ${nic.netdev} and tap ${nic.tap ?? '?'} kept; run remove again to retry`,
      );
    }
    const unplugMs = performance.now() - started;
    await finishRemoval(vm, nic);
    return { id: nic.id, netdev: nic.netdev, tap: nic.tap, mac: nic.mac, unplugMs };
  });
}

/** How often device_del is sent again while no DEVICE_DELETED comes. */
const RESEND_MS = 1000;

/**
 * device_del and wait for its DEVICE_DELETED; true when the device is gone (or was already).
 * With ACPI hot-plug a request that reaches a guest still busy (booting, or handling this very
 * device's insertion, as in a rollback) is lost: it is sent again every second until the timeout.
 */
async function unplugDevice(vm: Controller, id: string, timeoutMs: number): Promise<boolean> {
  const deleted = nextEvent(vm.events$, 'DEVICE_DELETED', forDevice(id), timeoutMs);
  let gone = false;
  deleted.then(() => (gone = true), () => {});
  const deadline = performance.now() + timeoutMs;
  do {
    try {
      await vm.qmp.execute('device_del', { id });
    } catch (e) {
      if (e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound') return true;
      // native PCIe refuses a second device_del while the first is in progress: keep waiting
      if (!(e instanceof QmpCommandError && /already in the process of unplug/.test(e.desc))) throw e;
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([deleted.catch(() => {}), new Promise((r) => (timer = setTimeout(r, Math.min(RESEND_MS, deadline - performance.now()))))]);
    clearTimeout(timer); // a live timer would hold a CLI process open
  } while (!gone && performance.now() < deadline);
  try {
    await deleted;
    return true;
  } catch (e) {
    if (e instanceof EventTimeoutError) return false;
    throw e;
  }
}

/** After the device is gone: netdev_del (closes the tap), forget the NIC, publish NIC_REMOVED. */
export async function finishRemoval(
  vm: Controller,
  nic: { id: string; netdev: string; tap?: string; mac?: string },
  reason = 'remove',
): Promise<void> {
  await vm.qmp.execute('netdev_del', { id: nic.netdev }).catch((e: unknown) => {
    if (!(e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound')) throw e;
  });
  vm.updateRecord((r) => (r.nics = r.nics.filter((n) => n.id !== nic.id)));
  vm.publish('NIC_REMOVED', { device: nic.id, netdev: nic.netdev, tap: nic.tap ?? null, mac: nic.mac ?? null, tapGone: nic.tap ? !linkExists(nic.tap) : null, reason });
}

/**
 * Undoes a half-made add: device_del (waiting briefly for the guest), then netdev_del, which
 * QEMU accepts even while the unplug is pending and which closes the tap at once.
 */
export async function rollbackNic(
  vm: Controller,
  nic: NicSpec & { bridge: string | null },
  deviceExists: boolean,
): Promise<{ undone: string[]; pending: string[] }> {
  const undone: string[] = [];
  const pending: string[] = [];
  if (deviceExists) {
    try {
      if (await unplugDevice(vm, nic.id, ROLLBACK_UNPLUG_MS)) undone.push(`device ${nic.id} deleted`);
      else pending.push(`device ${nic.id} (the guest has not released it; recorded as unplug-pending)`);
    } catch (e) {
      pending.push(`device ${nic.id} (device_del failed: ${(e as Error).message})`);
    }
  }
  try {
    await vm.qmp.execute('netdev_del', { id: nic.netdev });
    undone.push(`netdev ${nic.netdev} deleted`);
  } catch (e) {
    pending.push(`netdev ${nic.netdev} (netdev_del failed: ${(e as Error).message})`);
  }
  if (linkExists(nic.tap)) pending.push(`tap ${nic.tap} still exists`);
  else undone.push(`tap ${nic.tap} gone`);
  if (pending.some((p) => p.startsWith(`device ${nic.id} (the guest`))) {
    // the device stays until the guest lets go: record it, so `remove` or the agent can finish it
    const { id, netdev, tap, mac, queues, vectors, vhost, bus, bridge } = nic;
    vm.updateRecord((r) => {
      r.nics = r.nics.filter((n) => n.id !== id);
      r.nics.push({ id, netdev, tap, mac, queues, vectors, vhost, bus, ...(bridge ? { bridge } : {}), state: 'unplug-pending', addedAt: new Date().toISOString() });
    });
  }
  return { undone, pending };
}

/** A NIC by id, tap name or MAC, from the record joined with the live VM. */
export async function findNic(vm: Controller, selector: string): Promise<NicRecord | (Partial<NicRecord> & { id: string; netdev: string; mac: string })> {
  const key = selector.toLowerCase();
  const matches = (n: { id: string; tap?: string; mac: string }) => n.id === selector || n.tap === selector || n.mac === key;
  // the record knows our NICs: ask QEMU (a qom-get per property per NIC) only for others
  const recorded = vm.record()?.nics ?? [];
  const known = recorded.find(matches);
  if (known) return known;
  const live = await liveNics(vm.qmp);
  const hit = live.find(matches);
  if (hit) return hit;
  const all = [...new Map([...live, ...recorded].map((n) => [n.id, n])).values()];
  throw new UsageError(
    all.length
      ? `no NIC '${selector}' in VM '${vm.name}'; its NICs: ${all.map((n) => `${n.id} (${n.tap ?? '?'}, ${n.mac})`).join(', ')}`
      : `no NIC '${selector}' in VM '${vm.name}': it has no NICs`,
  );
}
