/**
 * The add transaction, and how it fails. Under the VM's lock:
 *   1. recovery of adds a dead process left half-made (recovery.ts), then the plan (plan.ts);
 *   2. the record says 'adding' (a crash from here on is found by the next operation);
 *   3. the tap source readies the tap; netdev_add and device_add are sent pipelined;
 *   4. DEVICE_ADDED is published; the bridging reaction attaches the tap (network/) and answers
 *      NIC_BRIDGED or NIC_BRIDGE_FAILED;
 *   5. a qom-get confirms the device while the record says 'active' and the definition gains it.
 * A failure after step 3 is undone here, in reverse order, by `rollback`: the device (waiting for
 * the guest to let go), the netdev, the tap where the tap source made it, the backend's extras
 * (an ifb). The error says what was undone and what is still pending; with QMP lost, what is left.
 */
import { filter } from 'rxjs';
import { type Nic, definitionOf, nicOf, recordOf } from '../../model/nic.js';
import { forDevice, nextEvent } from '../../qmp/events.js';
import { monotonicMs } from '../../util/time.js';
import type { HotplugContext } from '../context.js';
import { HotplugError, NOTHING_UNDONE, type RollbackReport } from '../errors.js';
import { fromController } from '../events.js';
import { unplugDevice } from '../unplug.js';
import { waitForDriver } from './guest-wait.js';
import { type AddPlan, type AddRequest, planNic } from './plan.js';
import { recoverAdds } from './recovery.js';

/** A hung ip must not hang the add: past this, bridging counts as failed and the NIC is rolled back. */
const BRIDGING_TIMEOUT_MS = 30_000;
/** How long a rollback waits for the guest to release a device it has just been given. */
const ROLLBACK_UNPLUG_MS = 5000;

export interface AddTimings {
  /** ms spent in each step: preflight, netdev_add + device_add (pipelined), bridging, the final confirmation */
  preflight: number;
  /** making the tap (owned, marked) before netdev_add */
  tap: number;
  plug: number;
  bridging: number;
  confirm: number;
  /** the five above (a guest wait is not part of the add) */
  total: number;
  /** with waitGuestMs: how long the guest took to bind its driver (or the whole wait) */
  guestWait?: number;
}

export interface AddResult extends Nic {
  notes: string[];
  timings: AddTimings;
  /** with waitGuestMs: the guest's driver took the NIC (DRIVER_OK), within the wait */
  guestReady?: boolean;
  /** ...and had set the link up by then (NIC_RX_FILTER_CHANGED); a guest with no config for the NIC never does */
  guestLinkUp?: boolean;
  /** ...and negotiated multiqueue (VIRTIO_NET_F_MQ) */
  guestMq?: boolean;
  activeQueues?: number;
}

/** Plans and executes an add under the VM's lock. */
export async function addNic(ctx: HotplugContext, request: AddRequest): Promise<AddResult> {
  return ctx.record.locked(async () => {
    const started = monotonicMs();
    await recoverAdds(ctx);
    const planning = planNic(ctx, request);
    // The tap is made before netdev_add, through the batch ip: start it while the preflight's
    // questions are out (its fork blocks this thread for several ms, which would else come after).
    ctx.host.warmUp();
    let plan: AddPlan | undefined;
    try {
      plan = await planning;
      const preflight = monotonicMs() - started;
      const result = await executeAdd(ctx, plan, request.waitGuestMs);
      result.timings.preflight = preflight;
      result.timings.total += preflight;
      ctx.publish('NIC_ADDED', { device: result.id, tap: result.tap, bridge: result.bridge, ms: result.timings.total });
      return result;
    } catch (e) {
      // an add its checks refused changed nothing and is the caller's error, not a failure to count
      if (plan) {
        const error = e instanceof Error ? e : new Error(String(e));
        const ms = monotonicMs() - started;
        ctx.publish('NIC_ADD_FAILED', { device: plan.id, kind: error.name, error: error.message, ms });
      }
      throw e;
    }
  });
}

export async function executeAdd(ctx: HotplugContext, plan: AddPlan, waitGuestMs?: number): Promise<AddResult> {
  const { qmp } = ctx;
  const nic = nicOf(plan);
  const { id, netdev, tap } = nic;
  const [netdevCmd, deviceCmd] = plan.commands;
  // Subscribed before device_add: the guest may set the link up before device_add's answer is read.
  let linkUp = false;
  const linkUpSeen =
    waitGuestMs !== undefined
      ? nextEvent(ctx.events$, 'NIC_RX_FILTER_CHANGED', (e) => e.source === 'qemu' && e.data.name === id, waitGuestMs)
      : undefined;
  linkUpSeen?.then(
    () => (linkUp = true),
    () => {},
  );
  const bridged = nextEvent(
    ctx.events$.pipe(filter(fromController)),
    ['NIC_BRIDGED', 'NIC_BRIDGE_FAILED'],
    forDevice(id),
    BRIDGING_TIMEOUT_MS,
  );

  // The intent first: if this process dies from here on, the next operation finds the NIC 'adding'.
  ctx.record.saveNic(recordOf(nic, 'adding', { transient: !plan.persist }));
  const tTap = monotonicMs();
  try {
    await ctx.taps.prepare(nic);
  } catch (e) {
    ctx.record.forgetNic(id);
    throw new HotplugError(`making tap ${tap}`, e as Error, { ...NOTHING_UNDONE, undone: await ctx.taps.release(nic) });
  }
  const t0 = monotonicMs();
  // Pipelined: if netdev_add fails, device_add fails too (no such netdev) and nothing exists.
  const plugged = Promise.allSettled([
    qmp.execute(netdevCmd.execute, netdevCmd.arguments),
    qmp.execute(deviceCmd.execute, deviceCmd.arguments),
  ]);
  // The commands are on their way; QEMU takes 10-15 ms over them. Starting the batch ip now (a
  // fork that blocks this thread for several ms, if this process has none yet) costs nothing then.
  ctx.host.warmUp();
  const [n, d] = await plugged;
  if (n.status === 'rejected') {
    if (!qmp.isReady) throw await failure(ctx, 'netdev_add', n.reason as Error, plan); // recovery judges later
    ctx.record.forgetNic(id); // nothing was made in QEMU
    const undone = await ctx.taps.release(nic);
    throw new HotplugError('netdev_add', n.reason as Error, { ...NOTHING_UNDONE, undone });
  }
  if (d.status === 'rejected') throw await undo(ctx, 'device_add', d.reason as Error, plan, false);

  const t1 = monotonicMs();
  ctx.publish('DEVICE_ADDED', {
    ...{ device: id, netdev, tap, mac: nic.mac, queues: nic.queues, vectors: nic.vectors, vhost: nic.vhost },
    ...{ bridge: nic.bridge, bus: nic.bus, tapMac: nic.tapMac },
    ...{ tapMtu: nic.tapMtu ?? null, rate: nic.rate ?? null, ifb: nic.ifb ?? null },
    ...{ bridgeKind: nic.bridgeKind ?? null, vlan: nic.vlan ?? null, trunks: nic.trunks ?? null },
    ifaceId: nic.ifaceId ?? null,
  });
  const outcome = await bridged.catch((e: Error) => e);
  const t2 = monotonicMs();
  const bridgeError =
    outcome instanceof Error
      ? outcome
      : outcome.event === 'NIC_BRIDGE_FAILED'
        ? new Error(outcome.data.error)
        : undefined;
  if (bridgeError) throw await undo(ctx, attachStep(plan), bridgeError, plan, true);
  // Last, QEMU confirms the device is there with our netdev: proof that the VM outlived the whole
  // add, bridging included (asked before the bridging, QEMU could answer and then die while the
  // tap was attached; faults.test.ts kills it at DEVICE_ADDED). The record is written while QEMU
  // answers, and taken back if the answer is wrong.
  const confirming = qmp.execute<string>('qom-get', { path: `/machine/peripheral/${id}`, property: 'netdev' });
  ctx.record.saveNic(recordOf(nic, 'active'));
  if (plan.persist) ctx.record.defineNic(definitionOf(nic));
  try {
    const backend = await confirming;
    if (backend !== netdev) throw new Error(`device ${id} has netdev '${backend}', expected '${netdev}'`);
  } catch (e) {
    ctx.record.forgetNic(id);
    if (plan.persist) ctx.record.undefineNic(id);
    throw await undo(ctx, `confirming ${id}`, e as Error, plan, true);
  }
  const t3 = monotonicMs();

  const timings = {
    preflight: 0,
    tap: t0 - tTap,
    plug: t1 - t0,
    bridging: t2 - t1,
    confirm: t3 - t2,
    total: t3 - tTap,
  };
  const result: AddResult = { ...nic, notes: plan.notes, timings };
  if (waitGuestMs !== undefined) {
    const t4 = monotonicMs();
    const driver = await waitForDriver(qmp, id, waitGuestMs, linkUpSeen!);
    Object.assign(result, {
      guestReady: driver.ready,
      guestLinkUp: linkUp,
      ...(driver.mq !== undefined ? { guestMq: driver.mq } : {}),
    });
    result.timings.guestWait = monotonicMs() - t4;
    result.activeQueues = (await ctx.host.showLink(tap))?.numQueues;
  }
  return result;
}

const attachStep = (plan: AddPlan) =>
  plan.bridge ? `attaching ${plan.tap} to ${plan.bridge}` : `setting ${plan.tap} up`;

/**
 * The error for a failed step. With the QMP connection lost nothing more can be undone: if QEMU's
 * process is gone, its tap, netdev and device went with it; otherwise they are reported pending.
 */
async function failure(
  ctx: HotplugContext,
  step: string,
  cause: Error,
  plan: AddPlan,
  report: RollbackReport = NOTHING_UNDONE,
): Promise<HotplugError> {
  if (ctx.qmp.isReady) return new HotplugError(step, cause, report);
  if (await ctx.record.qemuExited()) {
    await ctx.taps.release(plan).catch(() => {}); // persistent: it outlives QEMU
    ctx.record.forgetNic(plan.id); // nothing of it is left to recover
    return new HotplugError(
      step,
      new Error(
        `QEMU of VM '${ctx.vm}' exited during the hot-plug (${cause.message}); its netdev and device went with it, its tap is deleted`,
      ),
    );
  }
  return new HotplugError(
    step,
    new Error(`the QMP connection was lost (${cause.message}); check with 'mq-hotplug nics ${ctx.vm}'`),
    { ...report, pending: [`netdev ${plan.netdev} and tap ${plan.tap}`, `device ${plan.id} if QEMU made it`] },
  );
}

/** Rolls back a half-made NIC and returns the error that says what was undone. */
async function undo(
  ctx: HotplugContext,
  step: string,
  cause: Error,
  plan: AddPlan,
  deviceExists: boolean,
): Promise<HotplugError> {
  if (!ctx.qmp.isReady) return failure(ctx, step, cause, plan);
  return failure(ctx, step, cause, plan, await rollback(ctx, plan, deviceExists));
}

/**
 * Undoes a half-made add: device_del (waiting briefly for the guest), then netdev_del, which QEMU
 * accepts even while the unplug is pending, then the tap (unless the guest still holds the device) and the
 * backend's extras. A device the guest keeps is recorded as unplug-pending, so `remove` or the
 * agent can finish it.
 */
async function rollback(ctx: HotplugContext, plan: AddPlan, deviceExists: boolean): Promise<RollbackReport> {
  const report: RollbackReport = { undone: [], pending: [], devicePlugged: false };
  const step = async (what: string, fn: () => Promise<string[]>) => {
    try {
      report.undone.push(...(await fn()));
    } catch (e) {
      report.pending.push(`${what} (${(e as Error).message})`);
    }
  };
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
  // a device the guest still holds keeps its tap (QEMU 10.0 still has it open): `remove` deletes both
  if (report.devicePlugged) report.pending.push(`tap ${plan.tap} (kept with device ${plan.id})`);
  else {
    await step(`tap ${plan.tap}`, () => ctx.taps.release(plan));
    if (ctx.host.linkExists(plan.tap)) report.pending.push(`tap ${plan.tap} still exists`);
  }
  await step(plan.bridgeKind === 'ovs' ? `OVS port ${plan.tap}` : `ifb ${plan.ifb}`, () => ctx.network.detach(plan));
  // the device stays until the guest lets go: recorded, so `remove` or the agent can finish it
  if (report.devicePlugged) ctx.record.saveNic(recordOf(nicOf(plan), 'unplug-pending'));
  else ctx.record.forgetNic(plan.id);
  return report;
}
