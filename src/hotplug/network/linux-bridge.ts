/**
 * The Linux bridge backend: the tap as a good citizen of the bridge, as libvirt and Proxmox make it.
 *  - MAC: fe + the guest MAC's last five bytes. A Linux bridge without a fixed address takes the
 *    lowest MAC of its ports; fe:... is never the lowest, so the bridge's MAC (and the host's
 *    address on the LAN) stays put as taps come and go.
 *  - MTU: the bridge's. A bridge follows the smallest MTU of its ports, so a 1500 tap would shrink
 *    a jumbo bridge under every other port.
 *  - rate: tc shaping both ways (src/host/tc.ts), the guest's transmit side through an ifb.
 * MAC, MTU, master and up go in one ip line, set before the tap joins; the shaping is set up
 * before that line, while the tap is still down. With no bridge the same line only sets the tap up.
 */
import { UsageError } from '../../errors.js';
import { attachArgs, type LinkInfo } from '../../host/ip.js';
import { type Qdisc, shapingLines } from '../../host/tc.js';
import type { Port } from '../../model/nic.js';
import type { HostPort } from '../context.js';
import { type NetworkBackend, type Observation, linkDrift } from './backend.js';

interface Seen extends Observation {
  /** qdiscs by device, read only where a port has a rate limit */
  qdiscs?: Map<string, Qdisc[]>;
}

const ifbLines = (ifb: string) => [
  ['link', 'add', 'name', ifb, 'type', 'ifb'],
  ['link', 'set', 'dev', ifb, 'up'],
];

export class LinuxBridge implements NetworkBackend {
  readonly kind = 'Linux bridge';

  constructor(private readonly host: HostPort) {}

  checkBridge(bridge: string): Promise<'linux'> {
    if (!this.host.linkExists(bridge))
      throw new UsageError(`bridge '${bridge}' does not exist (create it: ip link add ${bridge} type bridge)`);
    if (!this.host.isBridge(bridge))
      throw new UsageError(`'${bridge}' is not a bridge; give --bridge the name of a Linux bridge`);
    return Promise.resolve('linux');
  }

  bridgeMtu(bridge: string): number | undefined {
    return this.host.linkMtu(bridge);
  }

  commands(p: Port): string[][] {
    const shaping = shapingOf(p);
    return [
      ...(shaping.length ? ifbLines(p.ifb!).map((argv) => this.host.ipArgv(argv)) : []),
      ...shaping.map((argv) => this.host.tcArgv(argv)),
      this.host.ipArgv(attachLine(p)),
    ];
  }

  async attach(p: Port): Promise<void> {
    await this.shape(p);
    await this.host.ip(attachLine(p));
  }

  async detach(p: Port): Promise<string[]> {
    // a tap that is still there (a recovery, a rate changed in place) keeps its qdiscs until told
    if (p.rate && this.host.linkExists(p.tap)) await this.removeTapQdiscs(p);
    if (!p.ifb || !this.host.linkExists(p.ifb)) return [];
    await this.host.ip(['link', 'del', 'dev', p.ifb]);
    return [`ifb ${p.ifb} deleted`];
  }

  async observe(ports: Port[]): Promise<Seen> {
    // one tc exec, only where a limit is kept
    return { backend: this.kind, qdiscs: ports.some((p) => p.rate) ? await this.host.qdiscs() : undefined };
  }

  drift(p: Port, link: LinkInfo | undefined, seen: Seen): string[] {
    const { link: linkDrift, shaping } = portDrift(p, link, seen.qdiscs);
    return [...linkDrift, ...shaping];
  }

  bridgeOf(_p: Port, link: LinkInfo | undefined): string | null {
    return link?.master ?? null;
  }

  async repair(p: Port, link: LinkInfo | undefined, seen: Seen): Promise<void> {
    const drift = portDrift(p, link, seen.qdiscs);
    if (drift.shaping.length) {
      await this.detach(p); // from scratch: the tap's qdiscs and the ifb are replaced
      await this.shape(p);
    }
    if (drift.link.length) await this.host.ip(attachLine(p));
  }

  /** The rate in place: the shaping replaced (the tap stays on its bridge). */
  async update(before: Port, after: Port): Promise<void> {
    if (before.rate) await this.detach(before);
    if (after.rate) await this.shape(after);
  }

  close(): void {}

  /** The ifb and the shaping, where the port has a rate limit. */
  private async shape(p: Port): Promise<void> {
    if (!p.rate || !p.ifb) return;
    await Promise.all(ifbLines(p.ifb).map((line) => this.host.ip(line))); // pipelined into the batch ip
    await this.host.tc(shapingOf(p));
  }

  private async removeTapQdiscs(p: Port): Promise<void> {
    const lines = [
      ['qdisc', 'del', 'dev', p.tap, 'root'],
      ['qdisc', 'del', 'dev', p.tap, 'ingress'],
    ];
    await this.host.tc(lines, { force: true }).catch(() => {}); // either may be gone already: that is the point
  }
}

/** The ip line that readies and attaches the tap. */
export function attachLine(p: Port): string[] {
  return attachArgs(p.tap, p.bridge ?? undefined, { address: p.tapMac, mtu: p.tapMtu });
}

const shapingOf = (p: Port) => (p.rate && p.ifb ? shapingLines(p.tap, p.ifb, p.rate, p.tapMtu) : []);

/** How the live tap differs from the port: its link (one ip line restores it) and its shaping. */
function portDrift(
  p: Port,
  link: LinkInfo | undefined,
  qdiscs?: Map<string, Qdisc[]>,
): { link: string[]; shaping: string[] } {
  const drift = { link: linkDrift(p, link, { master: true }), shaping: [] as string[] };
  if (!link) return drift;
  if (p.rate && p.ifb && qdiscs) {
    const bytes = p.rate * 125_000;
    const tapQ = qdiscs.get(p.tap) ?? [];
    const ifbQ = qdiscs.get(p.ifb);
    if (!tapQ.some((q) => q.root && q.kind === 'tbf' && q.rate === bytes))
      drift.shaping.push(`no ${p.rate} Mbit/s limit on the tap's egress (guest receive)`);
    if (!tapQ.some((q) => q.kind === 'ingress')) drift.shaping.push(`no ingress redirect on the tap (guest transmit)`);
    if (!ifbQ) drift.shaping.push(`ifb ${p.ifb} missing`);
    else if (!ifbQ.some((q) => q.root && q.kind === 'tbf' && q.rate === bytes))
      drift.shaping.push(`no ${p.rate} Mbit/s limit on ifb ${p.ifb} (guest transmit)`);
  }
  return drift;
}
