/**
 * The host side of a NIC, behind one interface: what a tap is attached to and how it is set up.
 * The add transaction, remove, rollback, recovery, apply, nics and reconcile reach the host's
 * network only through a NetworkBackend, so a second kind of bridge (Open vSwitch) is a second
 * implementation, not a branch in each of them: the Linux bridge (linux-bridge.ts) and Open vSwitch
 * (ovs-bridge.ts); host-network.ts routes each port to the one its bridge is.
 *
 * Where the tap itself comes from is a seam of its own (tap-source.ts).
 */
import type { LinkInfo } from '../../host/ip.js';
import type { BridgeKind, Port } from '../../model/nic.js';

export interface NetworkBackend {
  /** For messages: "Linux bridge". */
  readonly kind: string;
  /** Checks a bridge named for a NIC before anything changes (it exists, and what kind it is); throws UsageError. */
  checkBridge(bridge: string): Promise<BridgeKind>;
  /** The bridge's MTU, which the tap takes (a smaller tap would shrink the bridge under its other ports). */
  bridgeMtu(bridge: string): number | undefined;
  /** Every host command `attach` runs, in order, as argv with the program: what a dry run shows. */
  commands(port: Port): string[][];
  /** Sets the tap up and attaches it (with a rate limit, the shaping first, while the tap is down). */
  attach(port: Port): Promise<void>;
  /**
   * Takes away what `attach` made beyond the tap (the tap goes with its netdev); safe to call when
   * some or all of it is gone already. Returns what it removed, for a rollback's report.
   */
  detach(port: Port): Promise<string[]>;
  /** Reads, in as few execs as it can, what `drift` needs for these ports. */
  observe(ports: Port[]): Promise<Observation>;
  /** How the live port differs from what it should be (empty: no drift). `link` is the tap as read. */
  drift(port: Port, link: LinkInfo | undefined, seen: Observation): string[];
  /** The bridge the tap is on now, as the host shows it (null: on none). */
  bridgeOf(port: Port, link: LinkInfo | undefined, seen: Observation): string | null;
  /** Puts a drifted port right again. */
  repair(port: Port, link: LinkInfo | undefined, seen: Observation): Promise<void>;
  /** Changes in place what can change without a replug: the rate (Linux bridge), the VLAN (OVS). */
  update(before: Port, after: Port): Promise<void>;
  /** Lets go of what the backend holds open (a database connection). */
  close(): void;
}

/** What a backend read about the host for drift (opaque to callers). */
export type Observation = { readonly backend: string } & Record<string, unknown>;

/**
 * How the tap's own link differs from the port: MAC, MTU, up, and with `master` its Linux bridge
 * (an OVS port has no kernel master).
 */
export function linkDrift(p: Port, link: LinkInfo | undefined, { master = false } = {}): string[] {
  if (!link) return [];
  const out: string[] = [];
  if (p.tapMac && link.address !== p.tapMac) out.push(`tap MAC ${link.address}, expected ${p.tapMac}`);
  if (p.tapMtu && link.mtu !== p.tapMtu) out.push(`tap MTU ${link.mtu}, expected ${p.tapMtu}`);
  if (master && p.bridge && link.master !== p.bridge)
    out.push(`tap not on bridge ${p.bridge}${link.master ? ` (on ${link.master})` : ''}`);
  if (!link.up) out.push('tap is down');
  return out;
}
