/**
 * The QMP commands that plug a NIC, built from the placed NIC alone (as libvirt's
 * qemuBuildHostNetProps and qemuBuildNicDevProps): one place says what QEMU is sent. Values are
 * JSON numbers and booleans, never strings: QEMU 9.2 and later type device_add strictly.
 */
import type { Nic } from '../../model/nic.js';

export interface QmpCommand {
  execute: string;
  arguments: Record<string, unknown>;
}

/** netdev_add of a multiqueue tap opened by name (QEMU makes it, or opens the one made for it). */
export function netdevAddCommand(nic: Pick<Nic, 'netdev' | 'tap' | 'vhost' | 'queues'>): QmpCommand {
  const { netdev, tap, vhost, queues } = nic;
  return {
    execute: 'netdev_add',
    arguments: { type: 'tap', id: netdev, ifname: tap, script: 'no', downscript: 'no', vhost, queues },
  };
}

/**
 * device_add of the virtio-net-pci. addr: on a root port the device must sit at 0.0 (QEMU would put
 * a second one at 1.0, where the guest never looks); on pci.0 the slot is pinned, so that a saved
 * NIC comes back where it was.
 */
export function deviceAddCommand(
  nic: Pick<Nic, 'id' | 'netdev' | 'mac' | 'vectors' | 'bus' | 'addr' | 'guestMtu'>,
): QmpCommand {
  const { id, netdev, mac, vectors, bus, addr, guestMtu } = nic;
  const args: Record<string, unknown> = { driver: 'virtio-net-pci', id, netdev, mac, mq: true, vectors, bus, addr };
  if (guestMtu !== undefined) args.host_mtu = guestMtu;
  return { execute: 'device_add', arguments: args };
}

/**
 * The same NIC on QEMU's command line (a VM started with its saved NICs, as libvirt starts one):
 * `-netdev` and `-device` options from the very commands above, so both ways plug the same NIC.
 */
export function commandLineOf(commands: readonly [netdevAdd: QmpCommand, deviceAdd: QmpCommand]): string[] {
  const [{ arguments: netdev }, { arguments: device }] = commands;
  const { type, ...netdevRest } = netdev;
  const { driver, ...deviceRest } = device;
  return ['-netdev', optionString(String(type), netdevRest), '-device', optionString(String(driver), deviceRest)];
}

/** QEMU's key=value option syntax: booleans on/off, a comma in a value doubled. */
function optionString(first: string, props: Record<string, unknown>): string {
  const value = (v: unknown) => (typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v).replaceAll(',', ',,'));
  return [first, ...Object.entries(props).map(([k, v]) => `${k}=${value(v)}`)].join(',');
}
