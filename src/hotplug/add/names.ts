/** The names an add chooses when the request gives none: NIC ids, MACs, tap and ifb names. */
import { randomBytes } from 'node:crypto';

/** The first of prefix0, prefix1, ... that is not taken. */
export function firstFree(prefix: string, taken: (candidate: string) => boolean): string {
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
