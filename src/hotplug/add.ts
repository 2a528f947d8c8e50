/**
 * Hot-plugging a multiqueue virtio-net NIC, as one transaction:
 *   1. plan (preflight): every check before anything is sent (one pipelined QMP burst + sysfs reads);
 *   2. netdev_add (QEMU creates the multiqueue tap) and device_add, sent pipelined;
 *   3. DEVICE_ADDED published on the event stream; the bridging reaction attaches the tap and sets it up;
 *   4. a qom-get confirms the device while the record gains the NIC.
 * A failure after step 2 undoes what was done, in reverse order, and says so.
 *
 * `planNic` alone is the dry run: it changes nothing and returns what `executeAdd` would send.
 */
import { randomBytes } from 'node:crypto';
import { decideVhost, type VhostMode } from '../host/ip.js';
import { checkChoice, checkIfname, checkInt, checkMac, checkQemuId } from '../host/validate.js';
import { UsageError } from '../errors.js';
import { QmpCommandError } from '../qmp/errors.js';
import { forDevice, nextEvent } from '../qmp/events.js';
import { monotonicMs, sleep } from '../util/time.js';
import type { NicDefinition } from '../qemu/definition.js';
import { type NicSpec, nicRecord } from '../qemu/state.js';
import type { HostPort, HotplugContext } from './context.js';
import { HotplugError, NOTHING_UNDONE, type RollbackReport } from './errors.js';
import { fromController } from './events.js';
import { filter } from 'rxjs';
import { type LiveVm, type Slot, inspectVm, nicProps, tapsOfNetdevs } from './inspect.js';
import { type Port, attachLine, portCommands, removeIfb, resetShaping, tapMacOf } from './port.js';
import { rollbackNic } from './remove.js';

export const MAX_QUEUES = 256; // MAX_TAP_QUEUES in the kernel's tun driver
/**
 * MSI-X vectors the NICs of one VM may take in all. Under KVM every vector a guest enables takes
 * an interrupt route, and KVM gives a VM at most KVM_MAX_IRQ_ROUTES = 4096 (include/linux/kvm_host.h);
 * QEMU dies when it runs out (seen around the 20th multiqueue NIC of a 100-vCPU VM). 256 routes are
 * kept for the VM's other devices and the IOAPIC's pins.
 */
export const MSIX_BUDGET = 4096 - 256;
/** tun's IFF_MULTI_QUEUE flag (include/uapi/linux/if_tun.h), as sysfs shows it in tun_flags. */
const IFF_MULTI_QUEUE = 0x0100;
/** A hung ip must not hang the add: past this, bridging counts as failed and the NIC is rolled back. */
const BRIDGING_TIMEOUT_MS = 30_000;

export interface AddRequest {
  /** queue pairs, or 'auto': one per vCPU (as Incus does) */
  queues: number | string;
  /** undefined: the VM's default bridge; null or '': no bridge, only set the tap up. */
  bridge?: string | null;
  ifname?: string;
  mac?: string;
  id?: string;
  vhost?: VhostMode;
  /** MTU for the guest (virtio-net host_mtu), 68..65535, at most the bridge's; without a bridge also the tap's. */
  mtu?: number | string;
  /** Rate limit in Mbit/s, both directions (tc, see src/host/tc.ts). */
  rate?: number | string;
  /** Wait this long for the guest driver to take the NIC (NIC_RX_FILTER_CHANGED). */
  waitGuestMs?: number;
  /** Where the NIC must go (a saved NIC coming back); default: the first free slot. */
  slot?: Slot;
  /** Plug into a VM whose CPUs have not started yet (started with -S, status prelaunch). */
  beforeBoot?: boolean;
  /** Keep the NIC in the VM's definition, where it has one (default true); false: only as long as the VM runs. */
  persist?: boolean;
}

export interface QmpCommand {
  execute: string;
  arguments: Record<string, unknown>;
}

/** What an add will do: the NIC, and the exact QMP commands and host commands. */
export interface AddPlan extends NicSpec {
  bridge: string | null;
  tapMac: string;
  addr: string;
  /** vhost as asked (the definition keeps the choice, not what this host allowed) */
  vhostMode: VhostMode;
  persist: boolean;
  notes: string[];
  commands: [netdevAdd: QmpCommand, deviceAdd: QmpCommand];
  /** The ip line that readies and attaches the tap. */
  ipArgv: string[];
  /** Every host command, in order (the ifb and tc lines of a rate limit, then ipArgv). */
  hostCommands: string[][];
}

export interface AddTimings {
  /** ms spent in each step: preflight, netdev_add + device_add (pipelined), bridging, the final confirmation */
  preflight: number;
  plug: number;
  bridging: number;
  confirm: number;
  /** the four above (a guest wait is not part of the add) */
  total: number;
  /** with waitGuestMs: how long the guest took to bind its driver (or the whole wait) */
  guestWait?: number;
}

export interface AddResult extends NicSpec {
  bridge: string | null;
  tapMac: string;
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

/** A request's values, checked: what needs no VM to judge. */
export interface CheckedRequest {
  queues: number;
  mac?: string;
  vhostMode: VhostMode;
  guestMtu?: number;
  rate?: number;
  /** null: no bridge */
  bridge: string | null;
}

/**
 * Every check of a request that needs only the host: values, names, the bridge, the tools. Shared
 * by `add` and `apply` (which checks every NIC before it changes anything). `defaultBridge` is
 * the VM's, taken when the request names none.
 */
export function checkRequest(
  host: HostPort,
  request: AddRequest,
  defaultBridge: string | null,
  cpus?: number,
): CheckedRequest {
  const queues = resolveQueues(request.queues, cpus);
  if (request.id !== undefined) checkQemuId(request.id, 'NIC id');
  if (request.ifname !== undefined) checkIfname(request.ifname, 'tap name');
  const mac = request.mac === undefined ? undefined : checkMac(request.mac);
  if (mac?.startsWith('fe')) {
    throw new UsageError(
      `invalid MAC '${request.mac}': MACs starting with fe are kept for taps (a tap gets fe and its guest's ` +
        `last five bytes, so no bridge takes its MAC); use another, like 52:54:00:12:34:56`,
    );
  }
  const vhostMode = checkChoice(request.vhost ?? 'auto', 'vhost', ['auto', 'on', 'off'] as const);
  const guestMtu = request.mtu === undefined ? undefined : checkInt(request.mtu, 'MTU', 68, 65535);
  const rate = request.rate === undefined ? undefined : checkInt(request.rate, 'rate', 1, 100_000, 'Mbit/s');

  if (!host.findIp())
    throw new UsageError(`'${host.ipArgv([])[0]}' not found in PATH: the tap could not be bridged (install iproute2)`);
  if (rate !== undefined && !host.findTc())
    throw new UsageError(`'${host.tcArgv([])[0]}' not found in PATH: --rate needs it (install iproute2)`);
  const bridge = request.bridge === undefined ? defaultBridge : request.bridge || null;
  if (bridge !== null) {
    checkIfname(bridge, 'bridge name');
    if (!host.linkExists(bridge))
      throw new UsageError(`bridge '${bridge}' does not exist (create it: ip link add ${bridge} type bridge)`);
    if (!host.isBridge(bridge))
      throw new UsageError(`'${bridge}' is not a bridge; give --bridge the name of a Linux bridge`);
  }
  return { queues, mac, vhostMode, guestMtu, rate, bridge };
}

/** A queue count, or 'auto': one pair per vCPU (at most the tap's 256). */
export function resolveQueues(value: number | string, cpus?: number): number {
  if (value === 'auto') {
    if (cpus === undefined) throw new UsageError(`queues 'auto' needs the VM's vCPU count, which is not known here`);
    return Math.min(cpus, MAX_QUEUES);
  }
  return checkInt(value, 'queue count', 1, MAX_QUEUES);
}

/** All checks and choices; throws UsageError (nothing sent, nothing changed) on bad input. */
export async function planNic(ctx: HotplugContext, request: AddRequest, live?: LiveVm): Promise<AddPlan> {
  const { host } = ctx;
  const notes: string[] = [];
  const record = ctx.record.read();
  // 'auto' queues need the vCPUs: the record knows them for our VMs, QEMU for the others
  if (request.queues === 'auto' && !record) live ??= await inspectVm(ctx.qmp, { askCpus: true });
  const checked = checkRequest(host, request, record?.spec.bridge ?? null, record?.spec.cpus ?? live?.cpus);
  const { queues, vhostMode, guestMtu, rate, bridge } = checked;
  const requestedMac = checked.mac;
  // The tap takes its bridge's MTU (a smaller one would shrink the bridge); --mtu tells the guest.
  const bridgeMtu = bridge === null ? undefined : host.linkMtu(bridge);
  if (guestMtu !== undefined && bridgeMtu !== undefined && guestMtu > bridgeMtu) {
    throw new UsageError(
      `invalid MTU '${request.mtu}': bridge '${bridge}' has MTU ${bridgeMtu}; use at most ${bridgeMtu}, or raise the bridge's MTU first`,
    );
  }
  const mtu = bridgeMtu ?? guestMtu;
  const { vhost, note } = decideVhost(vhostMode, () => host.vhostNetUsable());
  if (note) notes.push(note);

  live ??= await inspectVm(ctx.qmp, { askCpus: !record });
  if (!live.running && !(request.beforeBoot && live.status === 'prelaunch')) {
    throw new UsageError(`VM '${ctx.vm}' is ${live.status}, not running; hot-plug needs a running VM`);
  }
  const cpus = record?.spec.cpus ?? live.cpus ?? 1;
  if (queues > cpus)
    notes.push(
      `${queues} queues for ${cpus} vCPUs: the guest enables ${cpus} pairs until 'ethtool -L <if> combined ${queues}'`,
    );

  const recordedIds = new Set(record?.nics.map((n) => n.id));
  const taken = (candidate: string) => live.deviceIds.has(candidate) || recordedIds.has(candidate);
  const id = request.id ?? firstFree('nic', taken);
  if (taken(id)) throw new UsageError(`NIC id '${id}' is already used in VM '${ctx.vm}'; pick another --id`);
  const netdev = `nd-${id}`;

  // MACs and MSI-X vectors: ours from the record (a device cannot change them), others asked of QEMU
  const unrecorded = await nicProps(
    ctx.qmp,
    live.nicIds.filter((nicId) => !recordedIds.has(nicId)),
  );
  const macs = new Set([...(record?.nics.map((n) => n.mac) ?? []), ...unrecorded.map((n) => n.mac)]);
  const vectors = 2 * queues + 2; // one per rx and tx queue, one for config, one for control
  const used = [...(record?.nics ?? []), ...unrecorded].reduce((sum, n) => sum + n.vectors, 0);
  if (used + vectors > MSIX_BUDGET) {
    throw new UsageError(
      `a ${queues}-queue NIC needs ${vectors} MSI-X vectors (2N+2); the NICs of VM '${ctx.vm}' have ${used}, and ` +
        `${used + vectors} would pass the budget of ${MSIX_BUDGET} (KVM routes at most 4096 interrupts per VM; ` +
        `256 are kept for its other devices); use fewer queues`,
    );
  }
  let mac: string;
  if (requestedMac !== undefined) {
    if (macs.has(requestedMac))
      throw new UsageError(`MAC '${requestedMac}' is already used in VM '${ctx.vm}'; pick another --mac`);
    mac = requestedMac;
  } else mac = randomMac(macs);

  const tap = request.ifname ?? defaultTapName(ctx.vm, id, host.linkExists);
  if (host.linkExists(tap)) {
    const flags = host.tunFlags(tap);
    if (flags !== undefined && !(flags & IFF_MULTI_QUEUE)) {
      // the trap that brings people here: a tap made by hand cannot carry queues=N
      throw new UsageError(
        `tap name '${tap}' is taken by a tap made without multi_queue (tunctl, or 'ip tuntap add' without ` +
          `multi_queue), which QEMU cannot open with ${queues} queues; mq-hotplug lets QEMU make its own tap: ` +
          `delete it ('ip link del ${tap}') or pick another --ifname`,
      );
    }
    throw new UsageError(`tap name '${tap}' is already taken by a host interface; pick another --ifname`);
  }

  const slot = request.slot ? live.free.find((f) => sameSlot(f, request.slot!)) : live.free[0];
  if (request.slot && !slot) {
    throw new UsageError(
      `slot ${request.slot.bus} addr ${request.slot.addr} for NIC '${id}' is taken in VM '${ctx.vm}'`,
    );
  }
  if (!slot) {
    throw new UsageError(
      live.q35
        ? `VM '${ctx.vm}' has no free hot-plug slot: every pcie-root-port is taken (start it with more --hotplug-slots)`
        : `VM '${ctx.vm}' has no free slot on pci.0`,
    );
  }

  const { bus, addr } = slot;
  const ifb = rate === undefined ? undefined : freeLinkName('mqi', host.linkExists);
  const port: Port & { tapMac: string } = { tap, mac, tapMac: tapMacOf(mac), bridge, mtu, rate, ifb };
  // addr: on a root port the device must sit at 0.0 (QEMU would put a second one at 1.0, where the
  // guest never looks); on pci.0 the slot is pinned so that a saved NIC comes back where it was
  const deviceArgs: Record<string, unknown> = {
    driver: 'virtio-net-pci',
    id,
    netdev,
    mac,
    mq: true,
    vectors,
    bus,
    addr,
  };
  if (guestMtu !== undefined) deviceArgs.host_mtu = guestMtu;
  return {
    ...{ id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, addr, notes, vhostMode },
    persist: request.persist !== false,
    ...withoutUndefined({ ...port, guestMtu }),
    tapMac: port.tapMac,
    commands: [
      {
        execute: 'netdev_add',
        arguments: { type: 'tap', id: netdev, ifname: tap, script: 'no', downscript: 'no', vhost, queues },
      },
      { execute: 'device_add', arguments: deviceArgs },
    ],
    ipArgv: host.ipArgv(attachLine(port)),
    hostCommands: portCommands(port).map((c) => (c.program === 'ip' ? host.ipArgv(c.argv) : host.tcArgv(c.argv))),
  };
}

/** What the VM's definition keeps of a NIC: what it was asked for, and the MAC, tap and slot it got. */
export function nicDefinition(nic: NicSpec & { bridge?: string | null }): NicDefinition {
  const { id, mac, tap, queues, vhostMode, guestMtu: mtu, rate, bus, addr } = nic;
  const bridge = nic.bridge ?? null;
  return {
    id,
    mac,
    tap,
    queues,
    bridge,
    vhost: vhostMode ?? 'auto',
    ...withoutUndefined({ mtu, rate }),
    bus,
    addr: addr ?? '0',
  };
}

/**
 * Finishes or undoes the adds that a process which died left half-made (recorded 'adding'). The
 * caller holds the VM's lock, so no live add is among them. A device that is in the VM gets its
 * port set up and becomes active; otherwise its netdev (and tap) and ifb are removed.
 */
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
      await resetShaping(ctx.host, nic);
      await ctx.host.ip(attachLine(nic));
      ctx.record.saveNic({ ...nic, state: 'active', transient: undefined });
      if (!nic.transient) ctx.record.defineNic(nicDefinition(nic));
      ctx.publish('NIC_RECOVERED', { device: nic.id, outcome: 'finished' });
    } else {
      if (netdevs.has(nic.netdev)) await ctx.qmp.execute('netdev_del', { id: nic.netdev });
      await removeIfb(ctx.host, nic);
      ctx.record.forgetNic(nic.id);
      ctx.publish('NIC_RECOVERED', { device: nic.id, outcome: 'undone' });
    }
  }
}

/** Slots compare by bus and the number the address means ('0x5' is '5'). */
const sameSlot = (a: Slot, b: Slot) => a.bus === b.bus && Number(a.addr) === Number(b.addr);

/** The object without its undefined fields (so records and JSON show only what was set). */
function withoutUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** Plans and executes an add under the VM's lock. */
export async function addNic(ctx: HotplugContext, request: AddRequest): Promise<AddResult> {
  return ctx.record.locked(async () => {
    const started = monotonicMs();
    await recoverAdds(ctx);
    const plan = await planNic(ctx, request);
    const preflight = monotonicMs() - started;
    const result = await executeAdd(ctx, plan, request.waitGuestMs);
    result.timings.preflight = preflight;
    result.timings.total += preflight;
    return result;
  });
}

export async function executeAdd(ctx: HotplugContext, plan: AddPlan, waitGuestMs?: number): Promise<AddResult> {
  const { qmp } = ctx;
  const { id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, addr, notes, tapMac, mtu, guestMtu, rate, ifb } =
    plan;
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
  ctx.record.saveNic({ ...nicRecord(plan, 'adding'), ...(plan.persist ? {} : { transient: true }) });
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
    if (ctx.qmp.isReady) ctx.record.forgetNic(id); // nothing was made; with QMP lost, recovery judges later
    throw await failure(ctx, 'netdev_add', n.reason as Error, plan);
  }
  if (d.status === 'rejected') throw await undo(ctx, 'device_add', d.reason as Error, plan, false);

  const t1 = monotonicMs();
  ctx.publish('DEVICE_ADDED', {
    ...{ device: id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, tapMac },
    ...{ mtu: mtu ?? null, rate: rate ?? null, ifb: ifb ?? null },
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
  ctx.record.saveNic(nicRecord(plan, 'active'));
  if (plan.persist) ctx.record.defineNic(nicDefinition(plan));
  try {
    const backend = await confirming;
    if (backend !== netdev) throw new Error(`device ${id} has netdev '${backend}', expected '${netdev}'`);
  } catch (e) {
    ctx.record.forgetNic(id);
    if (plan.persist) ctx.record.undefineNic(id);
    throw await undo(ctx, `confirming ${id}`, e as Error, plan, true);
  }
  const t3 = monotonicMs();

  const timings = { preflight: 0, plug: t1 - t0, bridging: t2 - t1, confirm: t3 - t2, total: t3 - t0 };
  const result: AddResult = {
    ...{ id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, addr, tapMac },
    ...withoutUndefined({ mtu, guestMtu, rate, ifb }),
    notes,
    timings,
  };
  if (waitGuestMs !== undefined) {
    const t4 = monotonicMs();
    const driver = await waitForDriver(ctx, id, waitGuestMs, linkUpSeen!);
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

/**
 * Waits until the guest's virtio-net driver has taken the NIC: the device's status has DRIVER_OK
 * (x-query-virtio-status, QEMU 7.2+). This does not depend on the guest's network configuration,
 * unlike NIC_RX_FILTER_CHANGED, which comes only once the guest sets the link up (a guest with no
 * config for a new NIC never does): that one is reported apart, as guestLinkUp. A QEMU without the
 * command falls back to NIC_RX_FILTER_CHANGED. `mq` says whether the driver negotiated multiqueue.
 */
async function waitForDriver(
  ctx: HotplugContext,
  id: string,
  timeoutMs: number,
  linkUp: Promise<unknown>,
): Promise<{ ready: boolean; mq?: boolean }> {
  const path = `/machine/peripheral/${id}/virtio-backend`;
  const deadline = monotonicMs() + timeoutMs;
  for (;;) {
    let status: { status: { statuses: string[] }; 'guest-features'?: { 'dev-features'?: string[] } };
    try {
      status = await ctx.qmp.execute('x-query-virtio-status', { path });
    } catch (e) {
      if (e instanceof QmpCommandError && e.errorClass === 'CommandNotFound') {
        return {
          ready: await linkUp.then(
            () => true,
            () => false,
          ),
        };
      }
      throw e;
    }
    if (status.status.statuses.some((s) => s.startsWith('VIRTIO_CONFIG_S_DRIVER_OK'))) {
      return {
        ready: true,
        mq: (status['guest-features']?.['dev-features'] ?? []).some((f) => f.startsWith('VIRTIO_NET_F_MQ')),
      };
    }
    if (monotonicMs() >= deadline) return { ready: false };
    await sleep(Math.min(100, deadline - monotonicMs()));
  }
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
  plan?: AddPlan,
  report: RollbackReport = NOTHING_UNDONE,
): Promise<HotplugError> {
  if (ctx.qmp.isReady) return new HotplugError(step, cause, report);
  if (await ctx.record.qemuExited()) {
    if (plan) ctx.record.forgetNic(plan.id); // nothing of it is left to recover
    return new HotplugError(
      step,
      new Error(
        `QEMU of VM '${ctx.vm}' exited during the hot-plug (${cause.message}); its tap, netdev and device went with it`,
      ),
    );
  }
  const left = plan ? [`netdev ${plan.netdev} and tap ${plan.tap}`, `device ${plan.id} if QEMU made it`] : [];
  return new HotplugError(
    step,
    new Error(`the QMP connection was lost (${cause.message}); check with 'mq-hotplug nics ${ctx.vm}'`),
    {
      ...report,
      pending: left,
    },
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
  return failure(ctx, step, cause, plan, await rollbackNic(ctx, plan, deviceExists));
}

function firstFree(prefix: string, taken: (candidate: string) => boolean): string {
  for (let i = 0; ; i++) if (!taken(`${prefix}${i}`)) return `${prefix}${i}`;
}

/** A random 52:54:00:xx:xx:xx (QEMU's prefix) that is not in `taken`. */
export function randomMac(taken: Set<string>): string {
  for (;;) {
    const mac = `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    if (!taken.has(mac)) return mac;
  }
}

/** "<vm>-<id>" when it fits in 15 characters and is free, else "mqh" and 6 random hex digits. */
export function defaultTapName(vmName: string, id: string, exists: (name: string) => boolean): string {
  const readable = `${vmName}-${id}`;
  if (readable.length <= 15 && /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(readable) && !exists(readable)) return readable;
  return freeLinkName('mqh', exists);
}

/** The prefix and 6 random hex digits, not taken by any link. */
export function freeLinkName(prefix: string, exists: (name: string) => boolean): string {
  for (;;) {
    const name = `${prefix}${randomBytes(3).toString('hex')}`;
    if (!exists(name)) return name;
  }
}
