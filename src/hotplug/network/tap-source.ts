/**
 * Where a NIC's tap comes from: mq-hotplug makes it before netdev_add, persistent and owned by
 * the uid of the VM's QEMU (host/tap.ts), so no other uid can attach a queue to it, and a QEMU
 * that is not root can open it at all. QEMU's netdev_del leaves such a tap: `release` deletes it,
 * in remove, every rollback and recovery. A tap without this VM's mark is never touched.
 */
import { type OwnedTapSpec, ownedTapLines, tapIsOurs, tapMark } from '../../host/tap.js';
import type { Nic } from '../../model/nic.js';
import type { HostPort } from '../context.js';

type TapOf = Pick<Nic, 'tap' | 'queues'> & Partial<Pick<Nic, 'tapMac' | 'tapMtu'>>;

export interface TapSource {
  readonly kind: string;
  /** The uid that owns the taps this source makes (QEMU's). */
  readonly owner: number;
  /** Host commands run before netdev_add (a dry run shows them). */
  commands(nic: TapOf): string[][];
  /** Before netdev_add: make the tap. */
  prepare(nic: TapOf): Promise<void>;
  /**
   * After netdev_del (or a failed netdev_add): delete the tap, where this source made it. Returns
   * what it removed. `unfinished`: the NIC's add died midway (recovery), so a tap it made but had
   * not marked yet is taken too.
   */
  release(nic: Pick<Nic, 'tap'>, options?: { unfinished?: boolean }): Promise<string[]>;
}

export class OwnedTap implements TapSource {
  readonly kind = 'owned tap';
  private readonly mark: string;

  /** `vmKey` names the VM on this host (its state directory, or its socket for a --qmp VM). */
  constructor(
    private readonly host: HostPort,
    readonly owner: number,
    vmKey: string,
  ) {
    this.mark = tapMark(vmKey);
  }

  private spec(nic: TapOf): OwnedTapSpec {
    return { ...nic, owner: this.owner, mark: this.mark };
  }

  commands(nic: TapOf): string[][] {
    return ownedTapLines(this.spec(nic)).map((line) => this.host.ipArgv(line));
  }

  async prepare(nic: TapOf): Promise<void> {
    const [make, mark] = ownedTapLines(this.spec(nic));
    await this.host.ip(make);
    try {
      await this.host.ip(mark);
    } catch (e) {
      await this.host.ip(['link', 'del', 'dev', nic.tap]).catch(() => {}); // made just now, not marked yet
      throw e;
    }
  }

  async release({ tap }: Pick<Nic, 'tap'>, { unfinished = false } = {}): Promise<string[]> {
    if (!tapIsOurs(this.host.readTap(tap), this.mark, unfinished ? { owner: this.owner } : undefined)) return [];
    await this.host.ip(['link', 'del', 'dev', tap]);
    return [`tap ${tap} deleted`];
  }
}
