/**
 * Taking a device out of the VM: device_del, then DEVICE_DELETED whose data.device is the id (QEMU
 * sends an earlier one for .../virtio-backend without `device`). Used by remove and by an add's
 * rollback.
 */
import { QmpCommandError } from '../qmp/errors.js';
import { EventTimeoutError, forDevice, nextEvent } from '../qmp/events.js';
import { monotonicMs, within } from '../util/time.js';
import type { HotplugContext } from './context.js';

/** How often device_del is sent again while no DEVICE_DELETED comes. */
const RESEND_MS = 1000;

/**
 * device_del and wait for its DEVICE_DELETED; true when the device is gone (or was already).
 * With ACPI hot-plug a request that reaches a guest still busy (booting, or handling this very
 * device's insertion, as in a rollback) is lost: it is sent again every second until the timeout.
 */
export async function unplugDevice(
  ctx: Pick<HotplugContext, 'qmp' | 'events$'>,
  id: string,
  timeoutMs: number,
): Promise<boolean> {
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

/** netdev_del, where a netdev already gone is fine. */
export async function deleteNetdev(ctx: Pick<HotplugContext, 'qmp'>, netdev: string): Promise<void> {
  await ctx.qmp.execute('netdev_del', { id: netdev }).catch((e: unknown) => {
    if (!(e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound')) throw e;
  });
}
