/**
 * Hot-unplugging a NIC: device_del, wait for DEVICE_DELETED whose data.device is the id (QEMU sends
 * an earlier one for .../virtio-backend without `device`), then netdev_del, which closes the tap
 * QEMU made. A guest that never releases the device leaves the NIC recorded as unplug-pending.
 */
import { UsageError } from '../errors.js';
import { QmpCommandError } from '../qmp/errors.js';
import { EventTimeoutError, forDevice, nextEvent } from '../qmp/events.js';
import { type NicRecord, type NicSpec, nicRecord } from '../qemu/state.js';
import { monotonicMs, within } from '../util/time.js';
import type { AddPlan } from './add.js';
import type { HotplugContext } from './context.js';
import { type RollbackReport, UnplugPendingError } from './errors.js';
import { liveNics } from './inspect.js';
import { removeIfb } from './port.js';

export interface RemoveResult {
  id: string;
  netdev: string;
  tap?: string;
  mac: string;
  /** ms from device_del to DEVICE_DELETED */
  unplugMs: number;
}

const ROLLBACK_UNPLUG_MS = 5000;
/** How often device_del is sent again while no DEVICE_DELETED comes. */
const RESEND_MS = 1000;

export async function removeNic(
  ctx: HotplugContext,
  selector: string,
  timeoutMs = 10_000,
  { persist = true } = {},
): Promise<RemoveResult> {
  return ctx.record.locked(async () => {
    const nic = await findNic(ctx, selector);
    if (persist) ctx.record.undefineNic(nic.id); // the intent lasts, even while the guest has not let go
    const started = monotonicMs();
    const gone = await unplugDevice(ctx, nic.id, timeoutMs);
    if (!gone) {
      ctx.record.markNic(nic.id, 'unplug-pending');
      ctx.publish('NIC_UNPLUG_PENDING', { device: nic.id, netdev: nic.netdev, tap: nic.tap ?? null });
      throw new UnplugPendingError(
        `no DEVICE_DELETED for '${nic.id}' within ${timeoutMs} ms: the guest has not released the NIC ` +
          `(no guest OS, a guest still booting, or no hot-unplug support); recorded as unplug-pending, ` +
          `netdev ${nic.netdev} and tap ${nic.tap ?? '?'} kept; run remove again to retry`,
      );
    }
    const unplugMs = monotonicMs() - started;
    await finishRemoval(ctx, nic);
    return { id: nic.id, netdev: nic.netdev, tap: nic.tap, mac: nic.mac, unplugMs };
  });
}

/**
 * device_del and wait for its DEVICE_DELETED; true when the device is gone (or was already).
 * With ACPI hot-plug a request that reaches a guest still busy (booting, or handling this very
 * device's insertion, as in a rollback) is lost: it is sent again every second until the timeout.
 */
async function unplugDevice(ctx: HotplugContext, id: string, timeoutMs: number): Promise<boolean> {
  const deleted = nextEvent(ctx.events$, 'DEVICE_DELETED', forDevice(id), timeoutMs);
  let gone = false;
  deleted.then(
    () => (gone = true),
    () => {},
  );
  const deadline = monotonicMs() + timeoutMs;
  do {
    try {
      await ctx.qmp.execute('device_del', { id });
    } catch (e) {
      if (e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound') return true;
      // native PCIe refuses a second device_del while the first is in progress ("already in the
      // process of unplug"), and while the guest's 5 s attention wait runs ("guest is busy (power
      // indicator blinking)"): the unplug is under way, keep waiting
      if (!(e instanceof QmpCommandError && /already in the process of unplug|guest is busy/.test(e.desc))) throw e;
    }
    await within(
      deleted.catch(() => {}),
      Math.min(RESEND_MS, deadline - monotonicMs()),
      undefined,
    );
  } while (!gone && monotonicMs() < deadline);
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
  ctx: HotplugContext,
  nic: { id: string; netdev: string; tap?: string; mac?: string; ifb?: string },
  reason = 'remove',
): Promise<void> {
  await ctx.qmp.execute('netdev_del', { id: nic.netdev }).catch((e: unknown) => {
    if (!(e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound')) throw e;
  });
  await removeIfb(ctx.host, nic); // the tap's qdiscs went with the tap; its ifb must go by hand
  ctx.record.forgetNic(nic.id);
  ctx.publish('NIC_REMOVED', {
    device: nic.id,
    netdev: nic.netdev,
    tap: nic.tap ?? null,
    mac: nic.mac ?? null,
    tapGone: nic.tap ? !ctx.host.linkExists(nic.tap) : null,
    reason,
  });
}

/**
 * Undoes a half-made add: device_del (waiting briefly for the guest), then netdev_del, which
 * QEMU accepts even while the unplug is pending and which closes the tap at once. A device the
 * guest keeps is recorded as unplug-pending, so `remove` or the agent can finish it.
 */
export async function rollbackNic(ctx: HotplugContext, plan: AddPlan, deviceExists: boolean): Promise<RollbackReport> {
  const report: RollbackReport = { undone: [], pending: [], devicePlugged: false };
  if (deviceExists) {
    try {
      if (await unplugDevice(ctx, plan.id, ROLLBACK_UNPLUG_MS)) report.undone.push(`device ${plan.id} deleted`);
      else {
        report.devicePlugged = true;
        report.pending.push(`device ${plan.id} (the guest has not released it; recorded as unplug-pending)`);
      }
    } catch (e) {
      report.devicePlugged = true;
      report.pending.push(`device ${plan.id} (device_del failed: ${(e as Error).message})`);
    }
  }
  try {
    await ctx.qmp.execute('netdev_del', { id: plan.netdev });
    report.undone.push(`netdev ${plan.netdev} deleted`);
  } catch (e) {
    report.pending.push(`netdev ${plan.netdev} (netdev_del failed: ${(e as Error).message})`);
  }
  if (ctx.host.linkExists(plan.tap)) report.pending.push(`tap ${plan.tap} still exists`);
  else report.undone.push(`tap ${plan.tap} gone`);
  try {
    if (await removeIfb(ctx.host, plan)) report.undone.push(`ifb ${plan.ifb} deleted`);
  } catch (e) {
    report.pending.push(`ifb ${plan.ifb} (${(e as Error).message})`);
  }
  // the device stays until the guest lets go: recorded, so `remove` or the agent can finish it
  if (report.devicePlugged) ctx.record.saveNic(nicRecord(plan, 'unplug-pending'));
  else ctx.record.forgetNic(plan.id);
  return report;
}

type FoundNic = NicRecord | (Partial<NicSpec> & { id: string; netdev: string; mac: string });

/** A NIC by id, tap name or MAC, from the record joined with the live VM. */
export async function findNic(ctx: HotplugContext, selector: string): Promise<FoundNic> {
  const key = selector.toLowerCase();
  const matches = (n: { id: string; tap?: string; mac: string }) =>
    n.id === selector || n.tap === selector || n.mac === key;
  // the record knows our NICs: ask QEMU (a qom-get per property per NIC) only for others
  const recorded = ctx.record.read()?.nics ?? [];
  const known = recorded.find(matches);
  if (known) return known;
  const live = await liveNics(ctx.qmp);
  const hit = live.find(matches);
  if (hit) return hit;
  const all = [...new Map([...live, ...recorded].map((n) => [n.id, n])).values()];
  throw new UsageError(
    all.length
      ? `no NIC '${selector}' in VM '${ctx.vm}'; its NICs: ${all.map((n) => `${n.id} (${n.tap ?? '?'}, ${n.mac})`).join(', ')}`
      : `no NIC '${selector}' in VM '${ctx.vm}': it has no NICs`,
  );
}
