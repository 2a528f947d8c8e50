/**
 * Where a NIC's tap comes from. Today QEMU makes it from `ifname` at netdev_add, and it goes with
 * the netdev (QemuMadeTap). A QEMU that is not root cannot make one: the tap must then be made by
 * mq-hotplug before netdev_add (owned by QEMU's uid, persistent) and deleted by it after netdev_del;
 * that is a second TapSource, and the transaction already calls both ends of it.
 */
import type { Nic } from '../../model/nic.js';

export interface TapSource {
  readonly kind: string;
  /** Host commands run before netdev_add (a dry run shows them). */
  commands(nic: Pick<Nic, 'tap' | 'queues'>): string[][];
  /** Before netdev_add: make the tap, where this source makes it. */
  prepare(nic: Pick<Nic, 'tap' | 'queues'>): Promise<void>;
  /** After netdev_del (or a failed netdev_add): delete the tap, where this source made it. Returns what it removed. */
  release(nic: Pick<Nic, 'tap'>): Promise<string[]>;
}

/** QEMU makes the multiqueue tap from ifname, and it goes with the netdev: nothing to make or delete. */
export const qemuMadeTap: TapSource = {
  kind: 'made by QEMU',
  commands: () => [],
  prepare: async () => {},
  release: async () => [],
};
