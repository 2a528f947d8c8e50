/**
 * Validation of every name that reaches `ip` or QMP. Each check throws a UsageError whose one-line
 * message names the bad value and what would be valid.
 */
import { UsageError } from '../errors.js';

/** Linux interface names: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or white space; we allow a safe subset. */
const IFNAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,14}$/;
/** QEMU ids: a letter, then letters, digits, '-', '.', '_' (id_wellformed() in util/id.c), bounded. */
const QEMU_ID = /^[A-Za-z][A-Za-z0-9_.-]{0,63}$/;
/** VM names become a directory name and part of socket paths (which must stay under 108 bytes). */
const VM_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function checkIfname(name: string, what = 'interface name'): string {
  if (!IFNAME.test(name) || name === '.' || name === '..') {
    throw new UsageError(
      `invalid ${what} '${name}': use 1-15 characters of A-Z a-z 0-9 _ . - (not starting with . or -)`,
    );
  }
  return name;
}

export function checkQemuId(id: string, what = 'id'): string {
  if (!QEMU_ID.test(id)) {
    throw new UsageError(`invalid ${what} '${id}': use a letter, then up to 63 of A-Z a-z 0-9 _ . -`);
  }
  return id;
}

export function checkVmName(name: string): string {
  if (!VM_NAME.test(name)) {
    throw new UsageError(
      `invalid VM name '${name}': use 1-32 characters of A-Z a-z 0-9 _ . - (not starting with . _ -)`,
    );
  }
  return name;
}

/** A unicast MAC in lower case; rejects multicast/broadcast (low bit of the first octet). */
export function checkMac(mac: string): string {
  const lower = mac.toLowerCase();
  if (!MAC.test(lower)) throw new UsageError(`invalid MAC '${mac}': use six hex pairs like 52:54:00:12:34:56`);
  if (parseInt(lower.slice(0, 2), 16) & 1) {
    throw new UsageError(
      `invalid MAC '${mac}': it is multicast (first octet odd); use a unicast MAC like 52:54:00:12:34:56`,
    );
  }
  if (lower === '00:00:00:00:00:00') throw new UsageError(`invalid MAC '${mac}': all zeros`);
  return lower;
}

/** An integer within [min, max], from a CLI string or a number. */
export function checkInt(value: string | number, what: string, min: number, max: number, unit?: string): number {
  const n = typeof value === 'number' ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new UsageError(`invalid ${what} '${value}': use an integer from ${min} to ${max}${unit ? ` (${unit})` : ''}`);
  }
  return n;
}

export function checkChoice<T extends string>(value: string, what: string, choices: readonly T[]): T {
  if (!(choices as readonly string[]).includes(value)) {
    throw new UsageError(`invalid ${what} '${value}': use one of ${choices.join(', ')}`);
  }
  return value as T;
}

/** An 802.1Q VLAN id: 1-4094 (0 means untagged, 4095 is reserved). */
export function checkVlan(value: string | number, what = 'VLAN'): number {
  return checkInt(value, what, 1, 4094, '802.1Q; 0 and 4095 are reserved');
}

/**
 * A trunk's VLANs, as Proxmox and ovs-vsctl write them: "10,20,30-40" (or an array of ids), each
 * 1-4094, none twice. Returned sorted, ranges expanded (OVSDB keeps the set).
 */
export function checkTrunks(value: string | readonly (number | string)[]): number[] {
  const text = Array.isArray(value) ? value.join(',') : String(value);
  const bad = (why: string) =>
    new UsageError(`invalid trunks '${text}': ${why}; use VLAN ids 1-4094 and ranges, like 10,20,30-40`);
  const ids: number[] = [];
  for (const part of text.split(',')) {
    const m = /^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$/.exec(part);
    if (!m) throw bad(`'${part}' is not a VLAN id or a range`);
    const [from, to] = [Number(m[1]), Number(m[2] ?? m[1])];
    for (const n of [from, to]) if (n < 1 || n > 4094) throw bad(`${n} is out of range`);
    if (to < from) throw bad(`range ${part.trim()} runs backwards`);
    for (let n = from; n <= to; n++) ids.push(n);
  }
  const sorted = [...ids].sort((a, b) => a - b);
  const dup = sorted.find((n, i) => i > 0 && sorted[i - 1] === n);
  if (dup !== undefined) throw bad(`VLAN ${dup} is given twice`);
  return sorted;
}

/** A trunk list written back compactly: [10, 20, 30, 31, 32] is "10,20,30-32". */
export function trunksText(ids: readonly number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < ids.length;) {
    let j = i;
    while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
    parts.push(j > i ? `${ids[i]}-${ids[j]}` : `${ids[i]}`);
    i = j + 1;
  }
  return parts.join(',');
}
