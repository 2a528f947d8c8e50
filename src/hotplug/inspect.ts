/**
 * The live VM as QEMU sees it, fetched with one pipelined burst of QMP commands (one round trip):
 * machine type, run state, vCPUs, device ids, NIC MACs and the free hot-plug buses.
 */
import type { Slot } from '../model/nic.js';
import type { QmpPort } from './context.js';

export type { Slot };

interface PciDevice {
  slot: number;
  id?: { device: number; vendor: number };
  qdev_id: string;
  class_info: { class: number; desc?: string };
  pci_bridge?: { bus: { number: number }; devices?: PciDevice[] };
}

export interface LiveVm {
  q35: boolean;
  status: string;
  running: boolean;
  /** vCPUs; undefined unless asked for (the record knows them for VMs mq-hotplug started). */
  cpus?: number;
  /** Every id under /machine/peripheral (devices with an id). */
  deviceIds: Set<string>;
  /** Ids of the virtio-net NICs in the VM, ours or not. */
  nicIds: string[];
  /** Where NICs can go, first choice first: empty root ports (q35, at addr 0), or free pci.0 slots (pc). */
  free: Slot[];
  /** Spare slots: free root ports (q35) or free pci.0 slots (pc). */
  freeSlots: number;
}

const PCI_SLOTS = 32;

/** Q35's host bridge (82G33 DRAM controller); i440fx's is 0x1237. */
const Q35_HOST_BRIDGE = 0x29c0;

/** Each QMP command costs QEMU about 0.3 ms even pipelined (it runs them one by one): ask only what is needed. */
export async function inspectVm(qmp: QmpPort, { askCpus = true } = {}): Promise<LiveVm> {
  const [status, peripherals, pci, cpus] = await Promise.all([
    qmp.execute<{ running: boolean; status: string }>('query-status'),
    qmp.execute<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' }),
    qmp.execute<{ bus: number; devices: PciDevice[] }[]>('query-pci'),
    askCpus ? qmp.execute<unknown[]>('query-cpus-fast') : undefined,
  ]);
  const root = pci.find((b) => b.bus === 0)?.devices ?? [];
  const q35 = root.some((d) => d.slot === 0 && d.id?.device === Q35_HOST_BRIDGE);
  let free: Slot[];
  if (q35) {
    // Our spare root ports first, in order; any other empty root port after them.
    free = root
      .filter((d) => d.pci_bridge && d.qdev_id && (d.pci_bridge.devices ?? []).length === 0)
      .map((d) => d.qdev_id)
      .sort((a, b) => portOrder(a) - portOrder(b))
      .map((bus) => ({ bus, addr: '0' }));
  } else {
    // pinned, not left to QEMU: a NIC that is saved comes back at the same slot (the guest's name for it)
    const used = new Set(root.map((d) => d.slot));
    free = [];
    for (let slot = 1; slot < PCI_SLOTS; slot++)
      if (!used.has(slot)) free.push({ bus: 'pci.0', addr: `0x${slot.toString(16)}` });
  }
  return {
    q35,
    status: status.status,
    running: status.running,
    cpus: cpus?.length,
    deviceIds: new Set(peripherals.filter((p) => p.type.startsWith('child<')).map((p) => p.name)),
    nicIds: peripherals.filter((p) => p.type === 'child<virtio-net-pci>').map((p) => p.name),
    free,
    freeSlots: free.length,
  };
}

function portOrder(id: string): number {
  const m = /^mqh-port(\d+)$/.exec(id);
  return m ? Number(m[1]) : 1e6;
}

export interface LiveNic {
  id: string;
  mac: string;
  mq: boolean;
  vectors: number;
  netdev: string;
  /** From QEMU's `info network` (QEMU 7.2 has no QMP query for a tap's ifname). */
  tap?: string;
}

/**
 * MACs of the given NICs. query-rx-filter would give them in one command, but it carries each NIC's
 * whole VLAN table (4096 entries): its cost grew with every NIC. qom-get is small, and pipelined.
 */
export function nicProps(qmp: QmpPort, ids: string[]): Promise<{ id: string; mac: string; vectors: number }[]> {
  const get = <T>(id: string, property: string) =>
    qmp.execute<T>('qom-get', { path: `/machine/peripheral/${id}`, property });
  return Promise.all(
    ids.map(async (id) => {
      const [mac, vectors] = await Promise.all([get<string>(id, 'mac'), get<number>(id, 'vectors')]);
      return { id, mac: mac.toLowerCase(), vectors };
    }),
  );
}

/** Every virtio-net-pci NIC under /machine/peripheral with its QOM properties (pipelined). */
export async function liveNics(qmp: QmpPort): Promise<LiveNic[]> {
  const [peripherals, network] = await Promise.all([
    qmp.execute<{ name: string; type: string }[]>('qom-list', { path: '/machine/peripheral' }),
    qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' }),
  ]);
  const ids = peripherals.filter((p) => p.type === 'child<virtio-net-pci>').map((p) => p.name);
  const get = <T>(id: string, property: string) =>
    qmp.execute<T>('qom-get', { path: `/machine/peripheral/${id}`, property });
  const taps = tapsOfNetdevs(network);
  return Promise.all(
    ids.map(async (id) => {
      const [mac, mq, vectors, netdev] = await Promise.all([
        get<string>(id, 'mac'),
        get<boolean>(id, 'mq'),
        get<number>(id, 'vectors'),
        get<string>(id, 'netdev'),
      ]);
      return { id, mac: mac.toLowerCase(), mq, vectors, netdev, tap: taps.get(netdev) };
    }),
  );
}

/** netdev id -> tap ifname, from `info network` lines like " \ nd0: index=0,type=tap,ifname=tap0,...". */
export function tapsOfNetdevs(infoNetwork: string): Map<string, string> {
  const taps = new Map<string, string>();
  for (const m of infoNetwork.matchAll(/^[\s\\]*([^\s:]+): index=\d+,type=tap,ifname=([^,\s]+)/gm)) {
    taps.set(m[1]!, m[2]!);
  }
  return taps;
}
