/**
 * The host's network links: reads from sysfs where a read is enough (no exec on the hot path), and
 * `ip` with an argv array (never a shell) where something must change.
 */
import { closeSync, constants, accessSync, existsSync, openSync, readFileSync } from 'node:fs';
import { HostCommandError, runProgram } from './exec.js';
import { UsageError } from '../errors.js';
import { trace } from '../util/trace.js';
import { checkIfname } from './validate.js';

const SYS_NET = '/sys/class/net';

export { HostCommandError };

/** The `ip` binary; overridable for tests (MQ_HOTPLUG_IP). */
export function ipBinary(): string {
  return process.env.MQ_HOTPLUG_IP ?? 'ip';
}

/** Where `ip` would be run from, or undefined: preflight checks this before anything changes. */
export function findIp(): string | undefined {
  return findBinary(ipBinary());
}

/** Where a program would be run from (PATH, or the path itself), or undefined. */
export function findBinary(bin: string): string | undefined {
  const candidates = bin.includes('/')
    ? [bin]
    : (process.env.PATH ?? '')
        .split(':')
        .filter(Boolean)
        .map((d) => `${d}/${bin}`);
  return candidates.find((c) => {
    try {
      accessSync(c, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

export async function ip(args: string[]): Promise<string> {
  trace('ip', '>', args.join(' '));
  return runProgram([ipBinary(), ...args]);
}

export function linkExists(name: string): boolean {
  return existsSync(`${SYS_NET}/${checkIfname(name)}`);
}

export function isBridge(name: string): boolean {
  return existsSync(`${SYS_NET}/${checkIfname(name)}/bridge`);
}

export const VHOST_NET = '/dev/vhost-net';

/**
 * /dev/vhost-net (or `path`) opens read-write, as QEMU will open it. Opening, not access(): a node
 * with no driver behind it (made by hand, or in a container) passes access() but fails open()
 * with ENODEV, and QEMU 7.2 would then abort the VM.
 */
export function vhostNetUsable(path = VHOST_NET): boolean {
  try {
    closeSync(openSync(path, constants.O_RDWR | constants.O_NONBLOCK));
    return true;
  } catch {
    return false;
  }
}

import type { VhostMode } from '../model/nic.js';
export type { VhostMode };

/**
 * Whether a NIC gets vhost: 'off' never, 'on' only where vhost-net is usable (QEMU 7.2 aborts the
 * whole VM on netdev_add vhost=on without it, so it is refused, never sent), 'auto' where usable.
 * `note` says why auto turned it off.
 */
export function decideVhost(
  mode: VhostMode,
  usable: () => boolean = vhostNetUsable,
  /** why 'on' without the device is refused before QEMU is asked (see qemu/capabilities.ts) */
  why = 'QEMU would refuse it',
): { vhost: boolean; note?: string } {
  if (mode === 'off') return { vhost: false };
  if (usable()) return { vhost: true };
  if (mode === 'on') {
    throw new UsageError(
      `vhost 'on' needs ${VHOST_NET}, which is missing or QEMU's user cannot open it (${why}); use --vhost auto or off`,
    );
  }
  return { vhost: false, note: `vhost off: ${VHOST_NET} is missing or QEMU's user cannot open it` };
}

/** The bridge a link is enslaved to, from sysfs (`master` link), or undefined. */
export function masterOf(name: string): string | undefined {
  try {
    return readFileSync(`${SYS_NET}/${checkIfname(name)}/master/uevent`, 'utf8').match(/^INTERFACE=(.+)$/m)?.[1];
  } catch {
    return undefined;
  }
}

/**
 * The one ip command that readies a tap and attaches it (without a bridge: only up). The kernel
 * applies address and MTU before the master in one request, so the bridge never sees the tap with
 * another MAC or MTU.
 */
export function attachArgs(tap: string, bridge?: string, port: { address?: string; mtu?: number } = {}): string[] {
  return [
    ...['link', 'set', 'dev', checkIfname(tap)],
    ...(port.address ? ['address', port.address] : []),
    ...(port.mtu ? ['mtu', String(port.mtu)] : []),
    ...(bridge ? ['master', checkIfname(bridge, 'bridge name')] : []),
    'up',
  ];
}

/** What sysfs tells of a link (MAC, MTU, master, up), with no exec; undefined when it does not exist. */
export function readLink(name: string): LinkInfo | undefined {
  const dir = `${SYS_NET}/${checkIfname(name)}`;
  try {
    const read = (file: string) => readFileSync(`${dir}/${file}`, 'utf8').trim();
    return {
      ifname: name,
      address: read('address'),
      mtu: Number.parseInt(read('mtu'), 10),
      up: (Number.parseInt(read('flags'), 16) & 1) === 1,
      master: masterOf(name),
      multiQueue: false, // sysfs does not say; showLink does
    };
  } catch {
    return undefined;
  }
}

/** A tun/tap device's flags from sysfs (tun_flags, e.g. 0x1102), or undefined when it is not one. */
export function tunFlags(name: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(`${SYS_NET}/${checkIfname(name)}/tun_flags`, 'utf8'), 16);
  } catch {
    return undefined;
  }
}

/** A link's MTU, from sysfs; undefined when it does not exist. */
export function linkMtu(name: string): number | undefined {
  try {
    return Number.parseInt(readFileSync(`${SYS_NET}/${checkIfname(name)}/mtu`, 'utf8'), 10);
  } catch {
    return undefined;
  }
}

export interface LinkInfo {
  ifname: string;
  master?: string;
  up: boolean;
  operstate?: string;
  address?: string;
  mtu?: number;
  multiQueue: boolean;
  /** Queue pairs the guest has enabled (tun's numqueues). */
  numQueues?: number;
  numDisabled?: number;
  kind?: string;
}

interface IpLinkJson {
  ifname: string;
  master?: string;
  flags?: string[];
  operstate?: string;
  address?: string;
  mtu?: number;
  linkinfo?: { info_kind?: string; info_data?: { multi_queue?: boolean; numqueues?: number; numdisabled?: number } };
}

function toLinkInfo(j: IpLinkJson): LinkInfo {
  const data = j.linkinfo?.info_data;
  return {
    ifname: j.ifname,
    master: j.master,
    up: j.flags?.includes('UP') ?? false,
    operstate: j.operstate,
    address: j.address,
    mtu: j.mtu,
    multiQueue: data?.multi_queue ?? false,
    numQueues: data?.numqueues,
    numDisabled: data?.numdisabled,
    kind: j.linkinfo?.info_kind,
  };
}

/** Details of all links (one exec), keyed by name. */
export async function showLinks(): Promise<Map<string, LinkInfo>> {
  const parsed = JSON.parse(await ip(['-j', '-d', 'link', 'show'])) as IpLinkJson[];
  return new Map(parsed.map((j) => [j.ifname, toLinkInfo(j)]));
}

/** Details of one link, or undefined when it does not exist. */
export async function showLink(name: string): Promise<LinkInfo | undefined> {
  if (!linkExists(name)) return undefined;
  try {
    const [j] = JSON.parse(await ip(['-j', '-d', 'link', 'show', 'dev', name])) as IpLinkJson[];
    return j ? toLinkInfo(j) : undefined;
  } catch (e) {
    if (!linkExists(name)) return undefined;
    throw e;
  }
}

export async function deleteLink(name: string): Promise<void> {
  await ip(['link', 'del', 'dev', checkIfname(name)]);
}
