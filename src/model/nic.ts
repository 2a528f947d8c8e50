/**
 * The NIC: one model for every layer, and every conversion between its shapes.
 *
 * A NIC is first *asked for* (NicRequest: add's options, an apply spec's entry, a saved NIC coming
 * back), then *placed* (Nic: the id, netdev, tap, MAC, slot and host settings it got). The running
 * VM's record keeps each Nic with its state (NicRecord, in /run); the definition keeps what must
 * last (NicDefinition, in the config directory). Outputs (AddResult, NicView) use the same names.
 *
 * Two MTUs, never one name for both: `tapMtu` is the host tap's (its bridge's, so the bridge never
 * shrinks), `guestMtu` is what virtio-net tells the guest (host_mtu, from --mtu). Files written
 * before this model said `mtu` for either; `recordNicFromJson` and `definitionNicFromJson` read them.
 *
 *   const nic: Nic = ...;                      // what planNic placed
 *   recordOf(nic, 'adding')                    // the record line, before netdev_add
 *   definitionOf(nic)                          // what the definition keeps
 *   requestOfDefinition(definitionOf(nic))     // and how it comes back at the next start
 */

export type VhostMode = 'auto' | 'on' | 'off';

/** A place for a device: a bus and the address on it ('0' on a root port, '0x5' for slot 5 of pci.0). */
export interface Slot {
  bus: string;
  addr: string;
}

/** What is asked for a NIC. Values may still be strings (a CLI option); planning checks them. */
export interface NicRequest {
  /** queue pairs, or 'auto': one per vCPU (as Incus does) */
  queues: number | string;
  id?: string;
  /** undefined: the VM's default bridge; null or '': no bridge, only set the tap up */
  bridge?: string | null;
  /** the tap's name */
  ifname?: string;
  mac?: string;
  vhost?: VhostMode;
  /** MTU told to the guest (virtio-net host_mtu), 68..65535, at most the bridge's; without a bridge also the tap's */
  guestMtu?: number | string;
  /** rate limit in Mbit/s, both directions (tc, see src/host/tc.ts) */
  rate?: number | string;
  /** where the NIC must go (a saved NIC coming back); default: the first free slot */
  slot?: Slot;
  /** an access port on this VLAN (1-4094); with trunks, the native VLAN, untagged (Open vSwitch only) */
  vlan?: number | string;
  /** a trunk carrying these VLANs tagged: "10,20,30-40" or a list (Open vSwitch only) */
  trunks?: string | readonly (number | string)[];
  /** the port's stable id for an OVN/Neutron agent (external-ids:iface-id); default: a new UUID */
  ifaceId?: string;
}

/** What a NIC's bridge is: a Linux bridge, or an Open vSwitch bridge. */
export type BridgeKind = 'linux' | 'ovs';

/** A NIC as placed: everything that makes it, in QEMU and on the host. */
export interface Nic {
  id: string;
  netdev: string;
  tap: string;
  /** the guest's MAC */
  mac: string;
  queues: number;
  /** MSI-X vectors, 2N+2 */
  vectors: number;
  /** vhost as used on this host, and as asked ('auto' follows the host it runs on) */
  vhost: boolean;
  vhostMode: VhostMode;
  /** null: no bridge (the tap is only set up) */
  bridge: string | null;
  bus: string;
  /** the slot on the bus ('0x5', or '0' on a root port) */
  addr: string;
  /** the tap's own MAC: fe and the guest MAC's last five bytes, so no bridge ever takes it */
  tapMac: string;
  /** the tap's MTU as set: its bridge's, or guestMtu without a bridge (absent: as QEMU made it) */
  tapMtu?: number;
  guestMtu?: number;
  /** Mbit/s both ways, and the ifb device that shapes the guest's transmit side */
  rate?: number;
  ifb?: string;
  /** the bridge is an Open vSwitch bridge (absent: a Linux bridge, or none) */
  bridgeKind?: 'ovs';
  /** access VLAN, or with trunks the native one */
  vlan?: number;
  /** trunked VLANs, sorted */
  trunks?: number[];
  /** the OVS port's external-ids:iface-id, kept for the NIC's life (OVS only) */
  ifaceId?: string;
}

/**
 * 'adding': written before netdev_add, so that an add whose process died midway is found and
 * finished or undone by the next operation; 'unplug-pending': device_del was sent but the guest
 * has not released the device yet.
 */
export type NicState = 'adding' | 'active' | 'unplug-pending';

export interface NicRecord extends Nic {
  state: NicState;
  /** added with --transient: not kept in the definition */
  transient?: boolean;
  addedAt: string;
}

/** A NIC as the definition keeps it: what was asked, with the MAC, tap and slot it got. */
export interface NicDefinition {
  id: string;
  mac: string;
  tap: string;
  queues: number;
  bridge: string | null;
  vhost: VhostMode;
  guestMtu?: number;
  rate?: number;
  vlan?: number;
  trunks?: number[];
  ifaceId?: string;
  /** absent until first plugged */
  bus?: string;
  addr?: string;
}

/** The host side of a NIC: what a network backend sets up and checks (src/hotplug/network/). */
export type Port = Pick<
  Nic,
  'tap' | 'mac' | 'tapMac' | 'bridge' | 'tapMtu' | 'rate' | 'ifb' | 'bridgeKind' | 'vlan' | 'trunks' | 'ifaceId'
>;

/** The tap's MAC for a guest MAC: libvirt's rule (the guest's with the first byte fe). */
export const tapMacOf = (guestMac: string) => `fe${guestMac.slice(2)}`;

/** The object without its undefined fields (so records and JSON show only what was set). */
export function withoutUndefined<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/** Only the Nic's own fields of a wider object (a plan, a record). */
export function nicOf(n: Nic): Nic {
  const { id, netdev, tap, mac, queues, vectors, vhost, vhostMode, bridge, bus, addr, tapMac } = n;
  const { tapMtu, guestMtu, rate, ifb, bridgeKind, vlan, trunks, ifaceId } = n;
  return withoutUndefined({
    ...{ id, netdev, tap, mac, queues, vectors, vhost, vhostMode, bridge, bus, addr, tapMac },
    ...{ tapMtu, guestMtu, rate, ifb, bridgeKind, vlan, trunks, ifaceId },
  });
}

/** The one builder of a NIC's record line. */
export function recordOf(nic: Nic, state: NicState, { transient = false } = {}): NicRecord {
  return { ...nicOf(nic), state, ...(transient ? { transient: true } : {}), addedAt: new Date().toISOString() };
}

/** What the VM's definition keeps of a NIC. */
export function definitionOf(nic: Nic): NicDefinition {
  const { id, mac, tap, queues, bridge, vhostMode, guestMtu, rate, vlan, trunks, ifaceId, bus, addr } = nic;
  return withoutUndefined({
    ...{ id, mac, tap, queues, bridge, vhost: vhostMode, guestMtu, rate },
    ...{ vlan, trunks, ifaceId, bus, addr },
  });
}

/** The request that brings a saved NIC back as it was: same id, MAC, tap and slot. */
export function requestOfDefinition(n: NicDefinition): NicRequest & { id: string } {
  return withoutUndefined({
    id: n.id,
    queues: n.queues,
    mac: n.mac,
    ifname: n.tap,
    bridge: n.bridge,
    vhost: n.vhost,
    guestMtu: n.guestMtu,
    rate: n.rate,
    vlan: n.vlan,
    trunks: n.trunks,
    ifaceId: n.ifaceId,
    slot: n.bus ? { bus: n.bus, addr: n.addr ?? '0' } : undefined,
  });
}

type Legacy<T> = Partial<T> & { mtu?: number };

/**
 * A record's NIC as read from vm.json. Before this model a record said `mtu` for the tap's MTU and
 * could lack bridge (no bridge), vhostMode and addr. (A record older still has no tapMac; its tap's
 * MAC is then not checked, as before.)
 */
export function recordNicFromJson(raw: Legacy<NicRecord>): NicRecord {
  const { mtu, ...rest } = raw;
  const nic = rest as NicRecord;
  return withoutUndefined({
    ...nic,
    bridge: nic.bridge ?? null,
    vhostMode: nic.vhostMode ?? 'auto',
    addr: nic.addr ?? '0',
    tapMtu: nic.tapMtu ?? mtu,
  });
}

/** A definition's NIC as read from its file. Before this model a definition said `mtu` for the guest's MTU. */
export function definitionNicFromJson(raw: Legacy<NicDefinition>): NicDefinition {
  const { mtu, ...rest } = raw;
  const nic = rest as NicDefinition;
  return withoutUndefined({
    ...nic,
    bridge: nic.bridge ?? null,
    vhost: nic.vhost ?? 'auto',
    guestMtu: nic.guestMtu ?? mtu,
  });
}
