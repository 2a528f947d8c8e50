/**
 * Taps that mq-hotplug makes for QEMU: persistent, owned by the uid of the QEMU that opens them
 * (the kernel then refuses an attach by any other uid without CAP_NET_ADMIN; a tap without an
 * owner takes anyone who can open /dev/net/tun), multi_queue when QEMU opens more than one queue
 * (a multi_queue tap with queues=1, or the other way round, is refused with EINVAL), and marked
 * in their alias with the VM they belong to: mq-hotplug deletes only a tap with its own mark.
 */
import { createHash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { checkIfname } from './validate.js';

const SYS_NET = '/sys/class/net';

/** What QEMU opens to attach its taps. */
export const TUN_DEVICE = '/dev/net/tun';

/**
 * The alias that marks a tap as one mq-hotplug made for a VM, from the VM's key (its state
 * directory, or its socket): its last name, readable, and a hash of the whole, so the VMs of two
 * state directories never share a mark. One token (the batch ip takes no spaces).
 */
export function tapMark(vmKey: string): string {
  const hash = createHash('sha256').update(path.resolve(vmKey)).digest('hex').slice(0, 12);
  return `mq-hotplug:${path.basename(vmKey).replace(/[^A-Za-z0-9_.-]/g, '_')}:${hash}`;
}

export interface OwnedTapSpec {
  tap: string;
  queues: number;
  owner: number;
  mark: string;
  tapMac?: string;
  tapMtu?: number;
}

/**
 * The ip lines that make the tap, in order; the second runs only once the first made it, so a
 * name someone else took in between is never marked as ours.
 */
export function ownedTapLines(t: OwnedTapSpec): [string[], string[]] {
  checkIfname(t.tap, 'tap name');
  return [
    [
      'tuntap',
      'add',
      'dev',
      t.tap,
      'mode',
      'tap',
      ...(t.queues > 1 ? ['multi_queue'] : []),
      'vnet_hdr',
      'user',
      String(t.owner),
    ],
    [
      ...['link', 'set', 'dev', t.tap],
      ...(t.tapMac ? ['address', t.tapMac] : []),
      ...(t.tapMtu ? ['mtu', String(t.tapMtu)] : []),
      ...['alias', t.mark],
    ],
  ];
}

export interface TapInfo {
  /** The uid that may attach to it; undefined: anyone (no owner) */
  owner?: number;
  group?: number;
  /** Its alias, where it has one */
  mark?: string;
}

/** A tun/tap device's owner, group and alias from sysfs; undefined when the link is not a tun/tap. */
export function readTap(name: string): TapInfo | undefined {
  const dir = `${SYS_NET}/${checkIfname(name)}`;
  const read = (f: string) => readFileSync(`${dir}/${f}`, 'utf8').trim();
  try {
    const owner = Number(read('owner'));
    const group = Number(read('group'));
    let mark: string | undefined;
    try {
      mark = read('ifalias') || undefined;
    } catch {
      mark = undefined;
    }
    return { ...(owner >= 0 ? { owner } : {}), ...(group >= 0 ? { group } : {}), ...(mark ? { mark } : {}) };
  } catch {
    return undefined;
  }
}

/**
 * Whether a tap is one mq-hotplug may delete for a VM: it carries the VM's mark; or, for an add
 * that died between making the tap and marking it (`unfinished`, from a record that says
 * 'adding'; preflight had found no link of that name), it has no mark and QEMU's uid as owner.
 */
export function tapIsOurs(tap: TapInfo | undefined, mark: string, unfinished?: { owner: number }): boolean {
  if (!tap) return false;
  if (tap.mark === mark) return true;
  return unfinished !== undefined && tap.mark === undefined && tap.owner === unfinished.owner;
}

/** Every tap on the host with this mark (what a dead VM's cleanup deletes, recorded or not). */
export function tapsMarked(mark: string): string[] {
  let names: string[];
  try {
    names = readdirSync(SYS_NET);
  } catch {
    return [];
  }
  return names.filter((n) => {
    try {
      return readFileSync(`${SYS_NET}/${n}/ifalias`, 'utf8').trim() === mark && readTap(n) !== undefined;
    } catch {
      return false;
    }
  });
}
