/**
 * Planning an add (its preflight): every check and every choice before anything is sent. First the
 * facts are read (the record, one pipelined QMP burst, sysfs); then `placeNic` decides from them
 * alone, sending nothing: the id, MAC, tap, slot, vectors, vhost and host settings, and the exact
 * QMP and host commands the transaction will run. `planNic` alone is the dry run.
 */
import { randomUUID } from 'node:crypto';
import { decideVhost } from '../../host/ip.js';
import { UsageError } from '../../errors.js';
import { type Nic, type NicRequest, type Slot, tapMacOf, withoutUndefined } from '../../model/nic.js';
import type { VmRecord } from '../../qemu/state.js';
import type { HotplugContext } from '../context.js';
import { type LiveVm, inspectVm, nicProps } from '../inspect.js';
import { type CheckedRequest, checkRequest } from './checks.js';
import { defaultTapName, firstFree, freeLinkName, randomMac } from './names.js';
import { type QmpCommand, deviceAddCommand, netdevAddCommand } from './qemu-args.js';

/**
 * MSI-X vectors the NICs of one VM may take in all. Under KVM every vector a guest enables takes
 * an interrupt route, and KVM gives a VM at most KVM_MAX_IRQ_ROUTES = 4096 (include/linux/kvm_host.h);
 * QEMU dies when it runs out (seen around the 20th multiqueue NIC of a 100-vCPU VM). 256 routes are
 * kept for the VM's other devices and the IOAPIC's pins.
 */
export const MSIX_BUDGET = 4096 - 256;
/** tun's IFF_MULTI_QUEUE flag (include/uapi/linux/if_tun.h), as sysfs shows it in tun_flags. */
const IFF_MULTI_QUEUE = 0x0100;

/** How an add runs, beside the NIC it asks for. */
export interface AddOptions {
  /** Wait this long for the guest driver to take the NIC (DRIVER_OK). */
  waitGuestMs?: number;
  /** Plug into a VM whose CPUs have not started yet (started with -S, status prelaunch). */
  beforeBoot?: boolean;
  /** Keep the NIC in the VM's definition, where it has one (default true); false: only as long as the VM runs. */
  persist?: boolean;
}

export type AddRequest = NicRequest & AddOptions;

/** What an add will do: the NIC as placed, and the exact QMP commands and host commands. */
export interface AddPlan extends Nic {
  persist: boolean;
  notes: string[];
  commands: [netdevAdd: QmpCommand, deviceAdd: QmpCommand];
  /** Every host command, in order: the tap source's, then the network backend's. */
  hostCommands: string[][];
}

/** What placing a NIC needs to know, read before any decision. */
interface Facts {
  record: VmRecord | undefined;
  live: LiveVm;
  /** MACs and MSI-X vectors of the VM's NICs that the record does not know */
  unrecorded: { id: string; mac: string; vectors: number }[];
}

/** All checks and choices; throws UsageError (nothing sent, nothing changed) on bad input. */
export async function planNic(ctx: HotplugContext, request: AddRequest, live?: LiveVm): Promise<AddPlan> {
  const record = ctx.record.read();
  // QEMU's facts are asked first and awaited last: QEMU answers while the checks run and while the
  // add starts its batch ip (a fork that blocks this thread for several ms, see transaction.ts)
  const inspecting = live ? Promise.resolve(live) : inspectVm(ctx.qmp, { askCpus: !record });
  inspecting.catch(() => {}); // a request refused below does not wait for the answers
  // 'auto' queues need the vCPUs: the record knows them for our VMs, QEMU for the others
  if (request.queues === 'auto' && !record) live = await inspecting;
  const checked = await checkRequest(ctx, request, record?.spec.bridge ?? null, record?.spec.cpus ?? live?.cpus);
  const hostSide = chooseHostSide(ctx, request, checked);
  live = await inspecting;
  if (!live.running && !(request.beforeBoot && live.status === 'prelaunch')) {
    throw new UsageError(`VM '${ctx.vm}' is ${live.status}, not running; hot-plug needs a running VM`);
  }
  // MACs and MSI-X vectors: ours from the record (a device cannot change them), others asked of QEMU
  const recordedIds = new Set(record?.nics.map((n) => n.id));
  const unrecorded = await nicProps(
    ctx.qmp,
    live.nicIds.filter((id) => !recordedIds.has(id)),
  );
  return placeNic(ctx, request, checked, hostSide, { record, live, unrecorded });
}

/** The tap's MTU and vhost: what this host allows for the request (before QEMU is asked anything). */
function chooseHostSide(ctx: HotplugContext, request: AddRequest, checked: CheckedRequest) {
  const { bridge, guestMtu, vhostMode } = checked;
  // The tap takes its bridge's MTU (a smaller one would shrink the bridge); --mtu tells the guest.
  const bridgeMtu = bridge === null ? undefined : ctx.network.bridgeMtu(bridge);
  if (guestMtu !== undefined && bridgeMtu !== undefined && guestMtu > bridgeMtu) {
    throw new UsageError(
      `invalid MTU '${request.guestMtu}': bridge '${bridge}' has MTU ${bridgeMtu}; use at most ${bridgeMtu}, or raise the bridge's MTU first`,
    );
  }
  const why = ctx.qemu.vhostWithoutDeviceAborts
    ? `QEMU ${ctx.qemu.version} would abort the whole VM on it`
    : `QEMU ${ctx.qemu.version} would refuse it`;
  const { vhost, note } = decideVhost(vhostMode, () => ctx.host.vhostNetUsable(ctx.qemuUser), why);
  return { tapMtu: bridgeMtu ?? guestMtu, vhost, notes: note ? [note] : [] };
}

/** The decisions, from the facts; sends nothing (reads only sysfs, through the host port). */
function placeNic(
  ctx: HotplugContext,
  request: AddRequest,
  checked: CheckedRequest,
  hostSide: ReturnType<typeof chooseHostSide>,
  facts: Facts,
): AddPlan {
  const { host, network } = ctx;
  const { record, live, unrecorded } = facts;
  const { queues, vhostMode, guestMtu, rate, bridge, bridgeKind, vlan, trunks } = checked;
  const { tapMtu, vhost } = hostSide;
  const notes = [...hostSide.notes];
  const cpus = record?.spec.cpus ?? live.cpus ?? 1;
  if (queues > cpus)
    notes.push(
      `${queues} queues for ${cpus} vCPUs: the guest enables ${cpus} pairs until 'ethtool -L <if> combined ${queues}'`,
    );

  const recordedIds = new Set(record?.nics.map((n) => n.id));
  const taken = (candidate: string) => live.deviceIds.has(candidate) || recordedIds.has(candidate);
  const id = request.id ?? firstFree('nic', taken);
  if (taken(id)) throw new UsageError(`NIC id '${id}' is already used in VM '${ctx.vm}'; pick another --id`);

  const vectors = 2 * queues + 2; // one per rx and tx queue, one for config, one for control
  const used = [...(record?.nics ?? []), ...unrecorded].reduce((sum, n) => sum + n.vectors, 0);
  if (used + vectors > MSIX_BUDGET) {
    throw new UsageError(
      `a ${queues}-queue NIC needs ${vectors} MSI-X vectors (2N+2); the NICs of VM '${ctx.vm}' have ${used}, and ` +
        `${used + vectors} would pass the budget of ${MSIX_BUDGET} (KVM routes at most 4096 interrupts per VM; ` +
        `256 are kept for its other devices); use fewer queues`,
    );
  }
  const macs = new Set([...(record?.nics.map((n) => n.mac) ?? []), ...unrecorded.map((n) => n.mac)]);
  if (checked.mac !== undefined && macs.has(checked.mac))
    throw new UsageError(`MAC '${checked.mac}' is already used in VM '${ctx.vm}'; pick another --mac`);
  const mac = checked.mac ?? randomMac(macs);

  const tap = request.ifname ?? defaultTapName(ctx.vm, id, host.linkExists);
  if (host.linkExists(tap)) {
    const flags = host.tunFlags(tap);
    if (flags !== undefined && !(flags & IFF_MULTI_QUEUE)) {
      // the trap that brings people here: a tap made by hand cannot carry queues=N
      throw new UsageError(
        `tap name '${tap}' is taken by a tap made without multi_queue (tunctl, or 'ip tuntap add' without ` +
          `multi_queue), which QEMU cannot open with ${queues} queues; mq-hotplug makes its own tap for each NIC: ` +
          `delete it ('ip link del ${tap}') or pick another --ifname`,
      );
    }
    throw new UsageError(`tap name '${tap}' is already taken by a host interface; pick another --ifname`);
  }

  const { bus, addr } = chooseSlot(ctx.vm, live, request.slot, id);
  const nic: Nic = withoutUndefined({
    ...{ id, netdev: `nd-${id}`, tap, mac, queues, vectors, vhost, vhostMode, bridge, bus, addr },
    tapMac: tapMacOf(mac),
    tapMtu,
    guestMtu,
    rate,
    // the ifb shapes the guest's transmit on a Linux bridge; OVS meters it (network/ovs-bridge.ts)
    ifb: rate === undefined || bridgeKind === 'ovs' ? undefined : freeLinkName('mqi', host.linkExists),
    ...{ bridgeKind, vlan, trunks },
    // the port's id for OVN/Neutron, kept in the definition for the NIC's life (as libvirt's interfaceid)
    ifaceId: bridgeKind === 'ovs' ? (request.ifaceId ?? randomUUID()) : undefined,
  });
  return {
    ...nic,
    persist: request.persist !== false,
    notes,
    commands: [netdevAddCommand(nic), deviceAddCommand(nic)],
    hostCommands: [...ctx.taps.commands(nic), ...network.commands(nic)],
  };
}

/** The slot asked for, or the first free one. */
function chooseSlot(vm: string, live: LiveVm, wanted: Slot | undefined, id: string): Slot {
  const slot = wanted ? live.free.find((f) => sameSlot(f, wanted)) : live.free[0];
  if (wanted && !slot)
    throw new UsageError(`slot ${wanted.bus} addr ${wanted.addr} for NIC '${id}' is taken in VM '${vm}'`);
  if (!slot) {
    throw new UsageError(
      live.q35
        ? `VM '${vm}' has no free hot-plug slot: every pcie-root-port is taken (start it with more --hotplug-slots)`
        : `VM '${vm}' has no free slot on pci.0`,
    );
  }
  return slot;
}

/** Slots compare by bus and the number the address means ('0x5' is '5'). */
const sameSlot = (a: Slot, b: Slot) => a.bus === b.bus && Number(a.addr) === Number(b.addr);
