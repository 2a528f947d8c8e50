/**
 * The checks of an add request that need only the host: values, names, the bridge, the tools.
 * Shared by `add` and `apply` (which checks every NIC before it changes anything). Nothing is
 * sent and nothing changes; a bad value is a UsageError naming it and what would be valid.
 */
import { UsageError } from '../../errors.js';
import {
  checkChoice,
  checkIfname,
  checkInt,
  checkMac,
  checkQemuId,
  checkTrunks,
  checkVlan,
} from '../../host/validate.js';
import { type NicRequest, type VhostMode, withoutUndefined } from '../../model/nic.js';
import type { HostPort } from '../context.js';
import type { NetworkBackend } from '../network/backend.js';

export const MAX_QUEUES = 256; // MAX_TAP_QUEUES in the kernel's tun driver

/** A request's values, checked. */
export interface CheckedRequest {
  queues: number;
  mac?: string;
  vhostMode: VhostMode;
  guestMtu?: number;
  rate?: number;
  /** null: no bridge */
  bridge: string | null;
  /** the bridge is Open vSwitch's */
  bridgeKind?: 'ovs';
  vlan?: number;
  trunks?: number[];
}

/** `defaultBridge` is the VM's, taken when the request names none; `cpus` resolves 'auto' queues. */
export async function checkRequest(
  ports: { host: HostPort; network: NetworkBackend },
  request: NicRequest,
  defaultBridge: string | null,
  cpus?: number,
): Promise<CheckedRequest> {
  const { host, network } = ports;
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
  const guestMtu = request.guestMtu === undefined ? undefined : checkInt(request.guestMtu, 'MTU', 68, 65535);
  const rate = request.rate === undefined ? undefined : checkInt(request.rate, 'rate', 1, 100_000, 'Mbit/s');

  if (!host.findIp())
    throw new UsageError(`'${host.ipArgv([])[0]}' not found in PATH: the tap could not be bridged (install iproute2)`);
  if (rate !== undefined && !host.findTc())
    throw new UsageError(`'${host.tcArgv([])[0]}' not found in PATH: --rate needs it (install iproute2)`);
  const vlan = request.vlan === undefined ? undefined : checkVlan(request.vlan);
  const trunks = request.trunks === undefined ? undefined : checkTrunks(request.trunks);
  if (trunks && vlan !== undefined && trunks.includes(vlan))
    throw new UsageError(
      `invalid VLAN '${vlan}': with trunks it is the native VLAN (untagged), so it cannot be among the trunks '${request.trunks}' too`,
    );
  if (request.ifaceId !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(request.ifaceId))
    throw new UsageError(`invalid iface id '${request.ifaceId}': use up to 128 of A-Z a-z 0-9 _ . : - (a UUID, say)`);
  const bridge = request.bridge === undefined ? defaultBridge : request.bridge || null;
  const vlanOption = vlan !== undefined ? '--vlan' : trunks ? '--trunks' : undefined;
  if (bridge === null) {
    if (vlanOption) throw new UsageError(`${vlanOption} needs a bridge: give --bridge an Open vSwitch bridge`);
    return { queues, mac, vhostMode, guestMtu, rate, bridge };
  }
  checkIfname(bridge, 'bridge name');
  const kind = await network.checkBridge(bridge);
  if (kind === 'linux' && vlanOption)
    throw new UsageError(
      `${vlanOption} needs an Open vSwitch bridge: '${bridge}' is a Linux bridge, and mq-hotplug does VLANs only on OVS (a Linux bridge needs VLAN filtering, which the kernel of these hosts lacks); put the NIC on an OVS bridge`,
    );
  // the guest's transmit limit on OVS is an OpenFlow meter (host/openflow.ts)
  if (kind === 'ovs' && rate !== undefined && !host.findOfctl())
    throw new UsageError(
      `'ovs-ofctl' not found in PATH: --rate on Open vSwitch bridge '${bridge}' needs it (install openvswitch-switch)`,
    );
  return withoutUndefined({
    ...{ queues, mac, vhostMode, guestMtu, rate, bridge, vlan, trunks },
    bridgeKind: kind === 'ovs' ? ('ovs' as const) : undefined,
  });
}

/** A queue count, or 'auto': one pair per vCPU (at most the tap's 256). */
export function resolveQueues(value: number | string, cpus?: number): number {
  if (value === 'auto') {
    if (cpus === undefined) throw new UsageError(`queues 'auto' needs the VM's vCPU count, which is not known here`);
    return Math.min(cpus, MAX_QUEUES);
  }
  return checkInt(value, 'queue count', 1, MAX_QUEUES);
}
