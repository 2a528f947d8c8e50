/**
 * Hot-unplugging a NIC: device_del, wait for DEVICE_DELETED (unplug.ts), then netdev_del, which
 * closes the tap; then the tap source and the network backend take away what they made. A guest
 * that never releases the device leaves the NIC recorded as unplug-pending. The same finisher
 * serves `remove` and the reconcile reaction to a DEVICE_DELETED that no `remove` waited for.
 */
import { UsageError } from '../errors.js';
import type { Nic, NicRecord } from '../model/nic.js';
import { monotonicMs, pollUntil } from '../util/time.js';
import type { HotplugContext } from './context.js';
import { UnplugPendingError } from './errors.js';
import { liveNics } from './inspect.js';
import { deleteNetdev, unplugDevice } from './unplug.js';

/** How long NIC_REMOVED waits to see the tap go. */
const TAP_CLOSE_MS = 1000;

export interface RemoveResult {
  id: string;
  netdev: string;
  tap?: string;
  mac: string;
  /** ms from device_del to DEVICE_DELETED */
  unplugMs: number;
}

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
    await finishRemoval(ctx, nic, 'remove', started);
    return { id: nic.id, netdev: nic.netdev, tap: nic.tap, mac: nic.mac, unplugMs };
  });
}

/** After the device is gone: netdev_del (closes the tap), the tap and the port's extras, forget the NIC, publish NIC_REMOVED. */
export async function finishRemoval(
  ctx: HotplugContext,
  nic: FoundNic,
  reason = 'remove',
  startedMs?: number,
): Promise<void> {
  await deleteNetdev(ctx, nic.netdev);
  if (nic.tap) await ctx.taps.release({ tap: nic.tap });
  // the tap's qdiscs went with the tap; an ifb must go by hand
  await ctx.network.detach({ ...nic, tap: nic.tap ?? '', bridge: nic.bridge ?? null, tapMac: nic.tapMac ?? '' });
  // QEMU closes the tap with the netdev (10.0: once the device is gone); give it a moment. Waited
  // for before the record forgets the NIC: forgetting and NIC_REMOVED go together
  const tapGone = nic.tap ? (await pollUntil(() => !ctx.host.linkExists(nic.tap!), TAP_CLOSE_MS)) === true : null;
  ctx.record.forgetNic(nic.id);
  ctx.publish('NIC_REMOVED', {
    device: nic.id,
    netdev: nic.netdev,
    tap: nic.tap ?? null,
    mac: nic.mac ?? null,
    tapGone,
    reason,
    ms: startedMs === undefined ? null : monotonicMs() - startedMs,
  });
}

/** A NIC to remove: ours from the record, or one QEMU shows that the record does not know. */
type FoundNic = NicRecord | (Partial<Nic> & { id: string; netdev: string; mac: string });

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
