/**
 * Hot-plugging a multiqueue virtio-net NIC, as one transaction:
 *   1. preflight: every check before anything is sent (one pipelined QMP burst + sysfs reads);
 *   2. netdev_add (QEMU creates the multiqueue tap), device_add, and a qom-get that confirms the
 *      device, sent pipelined;
 *   3. DEVICE_ADDED published on the event stream; the bridging reaction attaches the tap and sets it up;
 *   4. the record gains the NIC.
 * A failure after step 2 undoes what was done, in reverse order, and says so.
 */
import { randomBytes } from 'node:crypto';
import { attachArgs, findIp, ipBinary, isBridge, linkExists, vhostNetUsable } from '../host/ip.js';
import { UsageError, checkIfname, checkInt, checkMac, checkQemuId } from '../host/validate.js';
import { nextEvent, forDevice } from '../qmp/events.js';
import { type NicRecord, type NicSpec, qemuAlive } from '../qemu/state.js';
import type { Controller } from './controller.js';
import { HotplugError } from './errors.js';
import { type LiveVm, inspectVm, nicMacs } from './inspect.js';
import { showLink } from '../host/ip.js';
import { rollbackNic } from './remove.js';

export const MAX_QUEUES = 256; // MAX_TAP_QUEUES in the kernel's tun driver
/** A hung ip must not hang the add: past this, bridging counts as failed and the NIC is rolled back. */
const BRIDGING_TIMEOUT_MS = 30_000;

export interface AddRequest {
  queues: number | string;
  /** undefined: the VM's default bridge; null or '': no bridge, only set the tap up. */
  bridge?: string | null;
  ifname?: string;
  mac?: string;
  id?: string;
  vhost?: 'auto' | 'on' | 'off';
  /** Wait this long for the guest driver to take the NIC (NIC_RX_FILTER_CHANGED). */
  waitGuestMs?: number;
  dryRun?: boolean;
}

export interface AddPlan extends NicSpec {
  bridge: string | null;
  notes: string[];
  commands: { execute: string; arguments: Record<string, unknown> }[];
  ipArgv: string[];
}

export interface AddTimings {
  /** ms spent in each step: preflight, netdev_add + device_add (pipelined), bridging, the final confirmation */
  preflight: number;
  plug: number;
  bridging: number;
  confirm: number;
  total: number;
}

export interface AddResult extends Omit<AddPlan, 'commands' | 'ipArgv' | 'notes'> {
  notes: string[];
  timings: AddTimings;
  guestReady?: boolean;
  activeQueues?: number;
}

/** All checks and choices; throws UsageError (nothing sent, nothing changed) on bad input. */
export async function planAdd(vm: Controller, request: AddRequest, live?: LiveVm): Promise<AddPlan> {
  const notes: string[] = [];
  const queues = checkInt(request.queues, 'queue count', 1, MAX_QUEUES);
  if (request.id !== undefined) checkQemuId(request.id, 'NIC id');
  if (request.ifname !== undefined) checkIfname(request.ifname, 'tap name');
  const requestedMac = request.mac === undefined ? undefined : checkMac(request.mac);
  const vhostMode = request.vhost ?? 'auto';
  if (!['auto', 'on', 'off'].includes(vhostMode)) throw new UsageError(`invalid vhost '${vhostMode}': use auto, on or off`);

  if (!findIp()) throw new UsageError(`'${ipBinary()}' not found in PATH: the tap could not be bridged (install iproute2)`);
  const record = vm.record();
  const bridge = request.bridge === undefined ? (record?.spec.bridge ?? null) : request.bridge || null;
  if (bridge !== null) {
    checkIfname(bridge, 'bridge name');
    if (!linkExists(bridge)) throw new UsageError(`bridge '${bridge}' does not exist (create it: ip link add ${bridge} type bridge)`);
    if (!isBridge(bridge)) throw new UsageError(`'${bridge}' is not a bridge; give --bridge the name of a Linux bridge`);
  }

  let vhost: boolean;
  if (vhostMode === 'off') vhost = false;
  else if (vhostNetUsable()) vhost = true;
  else if (vhostMode === 'on') {
    // QEMU 7.2 aborts (the VM dies) on netdev_add vhost=on without /dev/vhost-net: never send it.
    throw new UsageError(`vhost 'on' needs /dev/vhost-net, which is missing or not accessible here; use --vhost auto or off`);
  } else {
    vhost = false;
    notes.push('vhost off: /dev/vhost-net is not available on this host');
  }

  live ??= await inspectVm(vm.qmp, { askCpus: !record });
  if (!live.running) throw new UsageError(`VM '${vm.name}' is ${live.status}, not running; hot-plug needs a running VM`);
  const cpus = record?.spec.cpus ?? live.cpus ?? 1;
  if (queues > cpus) notes.push(`${queues} queues for ${cpus} vCPUs: the guest enables ${cpus} pairs until 'ethtool -L <if> combined ${queues}'`);

  const recordedIds = new Set(record?.nics.map((n) => n.id));
  const id = request.id ?? firstFree('nic', (c) => live.deviceIds.has(c) || recordedIds.has(c));
  if (live.deviceIds.has(id) || recordedIds.has(id)) throw new UsageError(`NIC id '${id}' is already used in VM '${vm.name}'; pick another --id`);
  const netdev = `nd-${id}`;

  // MACs: ours from the record (a device's MAC cannot change), others asked of QEMU
  const unrecorded = live.nicIds.filter((nicId) => !recordedIds.has(nicId));
  const macs = new Set([...(record?.nics.map((n) => n.mac) ?? []), ...(await nicMacs(vm.qmp, unrecorded))]);
  let mac: string;
  if (requestedMac !== undefined) {
    if (macs.has(requestedMac)) throw new UsageError(`MAC '${requestedMac}' is already used in VM '${vm.name}'; pick another --mac`);
    mac = requestedMac;
  } else {
    do mac = `52:54:00:${[...randomBytes(3)].map((b) => b.toString(16).padStart(2, '0')).join(':')}`;
    while (macs.has(mac));
  }

  const tap = request.ifname ?? defaultTapName(vm.name, id);
  if (linkExists(tap)) throw new UsageError(`tap name '${tap}' is already taken by a host interface; pick another --ifname`);

  if (!live.freeBus) {
    throw new UsageError(
      live.q35
        ? `VM '${vm.name}' has no free hot-plug slot: every pcie-root-port is taken (start it with more --hotplug-slots)`
        : `VM '${vm.name}' has no free slot on pci.0`,
    );
  }

  const vectors = 2 * queues + 2; // one per rx and tx queue, one for config, one for control
  const commands = [
    { execute: 'netdev_add', arguments: { type: 'tap', id: netdev, ifname: tap, script: 'no', downscript: 'no', vhost, queues } },
    {
      execute: 'device_add',
      // On a root port the device must sit at 0.0: QEMU would put a second one at 1.0, where the guest never looks.
      arguments: { driver: 'virtio-net-pci', id, netdev, mac, mq: true, vectors, bus: live.freeBus, ...(live.q35 ? { addr: '0' } : {}) },
    },
  ];
  return { id, netdev, tap, mac, queues, vectors, vhost, bridge, bus: live.freeBus, notes, commands, ipArgv: [ipBinary(), ...attachArgs(tap, bridge ?? undefined)] };
}

export async function addNic(vm: Controller, request: AddRequest): Promise<AddResult | AddPlan> {
  if (!request.dryRun) vm.ip.start(); // its start-up overlaps the lock and the preflight
  return vm.locked(async () => {
    const started = performance.now();
    const plan = await planAdd(vm, request);
    if (request.dryRun) return plan;
    const result = await executeAdd(vm, plan, request.waitGuestMs);
    result.timings.preflight = performance.now() - started - result.timings.total;
    result.timings.total += result.timings.preflight;
    return result;
  });
}

export async function executeAdd(vm: Controller, plan: AddPlan, waitGuestMs?: number): Promise<AddResult> {
  const { id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, notes } = plan;
  const [netdevCmd, deviceCmd] = plan.commands as [AddPlan['commands'][0], AddPlan['commands'][0]];
  // Subscribed before device_add: the guest may take the NIC before device_add's answer is read.
  const guestTook =
    waitGuestMs !== undefined
      ? nextEvent(vm.events$, 'NIC_RX_FILTER_CHANGED', (e) => e.data.name === id, waitGuestMs)
      : undefined;
  const bridged = nextEvent(vm.events$, ['NIC_BRIDGED', 'NIC_BRIDGE_FAILED'], forDevice(id), BRIDGING_TIMEOUT_MS);

  const t0 = performance.now();
  // Pipelined: if netdev_add fails, device_add fails too (no such netdev) and nothing exists.
  const [n, d] = await Promise.allSettled([
    vm.qmp.execute(netdevCmd.execute, netdevCmd.arguments),
    vm.qmp.execute(deviceCmd.execute, deviceCmd.arguments),
  ]);
  if (n.status === 'rejected') throw await failure(vm, 'netdev_add', n.reason as Error);
  if (d.status === 'rejected') throw await undo(vm, 'device_add', d.reason as Error, plan, false);

  const t1 = performance.now();
  vm.publish('DEVICE_ADDED', { device: id, netdev, tap, mac, queues, vectors, vhost, bridge, bus });
  const outcome = await bridged.catch((e: Error) => ({ event: 'NIC_BRIDGE_FAILED', data: { error: e.message } }));
  const t2 = performance.now();
  if (outcome.event === 'NIC_BRIDGE_FAILED') {
    throw await undo(vm, bridge ? `attaching ${tap} to ${bridge}` : `setting ${tap} up`, new Error(String(outcome.data.error)), plan, true);
  }
  // Last, QEMU confirms the device is there with our netdev: proof that the VM outlived the whole
  // add. The record is written while QEMU answers, and taken back if the answer is wrong.
  const nic: NicRecord = { id, netdev, tap, mac, queues, vectors, vhost, bus, state: 'active', addedAt: new Date().toISOString() };
  if (bridge) nic.bridge = bridge;
  const confirming = vm.qmp.execute<string>('qom-get', { path: `/machine/peripheral/${id}`, property: 'netdev' });
  vm.updateRecord((r) => r.nics.push(nic));
  try {
    const backend = await confirming;
    if (backend !== netdev) throw new Error(`device ${id} has netdev '${backend}', expected '${netdev}'`);
  } catch (e) {
    vm.updateRecord((r) => (r.nics = r.nics.filter((n) => n.id !== id)));
    throw await undo(vm, `confirming ${id}`, e as Error, plan, true);
  }
  const t3 = performance.now();

  const timings = { preflight: 0, plug: t1 - t0, bridging: t2 - t1, confirm: t3 - t2, total: t3 - t0 };
  const result: AddResult = { id, netdev, tap, mac, queues, vectors, vhost, bridge, bus, notes, timings };
  if (guestTook) {
    result.guestReady = await guestTook.then(() => true, () => false);
    result.activeQueues = (await showLink(tap))?.numQueues;
  }
  return result;
}

/**
 * The error for a failed step. With the QMP connection lost nothing more can be undone: if QEMU's
 * process is gone, its tap, netdev and device went with it; otherwise they are reported pending.
 */
async function failure(vm: Controller, step: string, cause: Error, plan?: AddPlan, undone: string[] = [], pending: string[] = []): Promise<HotplugError> {
  if (!vm.qmp.isReady) {
    if (await qemuExited(vm)) {
      return new HotplugError(step, new Error(`QEMU of VM '${vm.name}' exited during the hot-plug (${cause.message}); its tap, netdev and device went with it`));
    }
    const left = plan ? [`netdev ${plan.netdev} and tap ${plan.tap}`, `device ${plan.id} if QEMU made it`] : [];
    return new HotplugError(step, new Error(`the QMP connection was lost (${cause.message}); check with 'mq-hotplug nics ${vm.name}'`), undone, left);
  }
  return new HotplugError(step, cause, undone, pending);
}

/** Rolls back a half-made NIC and returns the error that says what was undone. */
async function undo(vm: Controller, step: string, cause: Error, plan: AddPlan, deviceExists: boolean): Promise<HotplugError> {
  if (!vm.qmp.isReady) return failure(vm, step, cause, plan);
  const { undone, pending } = await rollbackNic(vm, plan, deviceExists);
  return failure(vm, step, cause, plan, undone, pending);
}

/** True when the VM's QEMU process is gone (waiting briefly: a killed QEMU closes its sockets before it is reaped). */
async function qemuExited(vm: Controller): Promise<boolean> {
  const record = vm.record();
  if (!record) return false; // a VM given by --qmp: its process is not ours to judge
  for (let i = 0; i < 50 && qemuAlive(record); i++) await new Promise((r) => setTimeout(r, 20));
  return !qemuAlive(record);
}

function firstFree(prefix: string, taken: (candidate: string) => boolean): string {
  for (let i = 0; ; i++) if (!taken(`${prefix}${i}`)) return `${prefix}${i}`;
}

/** "<vm>-<id>" when it fits in 15 characters and is free, else "mqh" and 6 random hex digits. */
function defaultTapName(vmName: string, id: string): string {
  const readable = `${vmName}-${id}`;
  if (readable.length <= 15 && /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/.test(readable) && !linkExists(readable)) return readable;
  for (;;) {
    const random = `mqh${randomBytes(3).toString('hex')}`;
    if (!linkExists(random)) return random;
  }
}
