/**
 * The host side of a NIC: its tap as a good citizen of the bridge, as libvirt and Proxmox make it.
 *  - MAC: fe + the guest MAC's last five bytes. A Linux bridge without a fixed address takes the
 *    lowest MAC of its ports; fe:... is never the lowest, so the bridge's MAC (and the host's
 *    address on the LAN) stays put as taps come and go.
 *  - MTU: the bridge's. A bridge follows the smallest MTU of its ports, so a 1500 tap would shrink
 *    a jumbo bridge under every other port.
 *  - rate: tc shaping both ways (src/host/tc.ts).
 * MAC, MTU, master and up go in one ip line, set before the tap joins; the shaping is set up
 * before that line, while the tap is still down. add, rollback, remove, nics and reconcile all use
 * the functions here, so what is set, checked and restored is the same.
 */
import { attachArgs, type LinkInfo } from '../host/ip.js';
import { type Qdisc, shapingLines } from '../host/tc.js';
import type { NicSpec } from '../qemu/state.js';
import type { HostPort } from './context.js';

export type Port = Pick<NicSpec, 'tap' | 'mac' | 'tapMac' | 'mtu' | 'rate' | 'ifb'> & { bridge?: string | null };

/** The tap's MAC for a guest MAC: libvirt's rule (the guest's with the first byte fe). */
export const tapMacOf = (guestMac: string) => `fe${guestMac.slice(2)}`;

/** The ip line that readies and attaches the tap. */
export function attachLine(p: Port): string[] {
  return attachArgs(p.tap, p.bridge ?? undefined, { address: p.tapMac, mtu: p.mtu });
}

const ifbLines = (ifb: string) => [
  ['link', 'add', 'name', ifb, 'type', 'ifb'],
  ['link', 'set', 'dev', ifb, 'up'],
];

/** Every host command of the port, in order, as argv without the program: for the dry run. */
export function portCommands(p: Port): { program: 'ip' | 'tc'; argv: string[] }[] {
  const shaping = p.rate && p.ifb ? shapingLines(p.tap, p.ifb, p.rate, p.mtu) : [];
  return [
    ...(shaping.length ? ifbLines(p.ifb!).map((argv) => ({ program: 'ip' as const, argv })) : []),
    ...shaping.map((argv) => ({ program: 'tc' as const, argv })),
    { program: 'ip', argv: attachLine(p) },
  ];
}

/** Sets the port up: the ifb and the shaping first (the tap is still down), then the one ip line. */
export async function setUpPort(host: HostPort, p: Port): Promise<void> {
  if (p.rate && p.ifb) {
    await Promise.all(ifbLines(p.ifb).map((line) => host.ip(line))); // pipelined into the batch ip
    await host.tc(shapingLines(p.tap, p.ifb, p.rate, p.mtu));
  }
  await host.ip(attachLine(p));
}

/** Deletes the NIC's ifb if it exists (the tap's own qdiscs go with the tap); true when it did. */
export async function removeIfb(host: HostPort, p: { ifb?: string }): Promise<boolean> {
  if (!p.ifb || !host.linkExists(p.ifb)) return false;
  await host.ip(['link', 'del', 'dev', p.ifb]);
  return true;
}

/** Takes a NIC's shaping away: the tap's root and ingress qdiscs (where there are any) and its ifb. */
export async function removeShaping(host: HostPort, p: Port): Promise<void> {
  const qdiscs = [
    ['qdisc', 'del', 'dev', p.tap, 'root'],
    ['qdisc', 'del', 'dev', p.tap, 'ingress'],
  ];
  await host.tc(qdiscs, { force: true }).catch(() => {}); // either may be gone already: that is the point
  await removeIfb(host, p);
}

/** Puts the shaping back from scratch: the tap's qdiscs and the ifb are replaced. */
export async function resetShaping(host: HostPort, p: Port): Promise<void> {
  if (!p.rate || !p.ifb) return;
  await removeShaping(host, p);
  await Promise.all(ifbLines(p.ifb).map((line) => host.ip(line)));
  await host.tc(shapingLines(p.tap, p.ifb, p.rate, p.mtu));
}

export interface PortDrift {
  /** MAC, MTU, bridge or link state: the one ip line restores them. */
  link: string[];
  /** the rate limit: resetShaping restores it. */
  shaping: string[];
}

/** How the live tap differs from what the record says it should be. */
export function portDrift(p: Port, link: LinkInfo | undefined, qdiscs?: Map<string, Qdisc[]>): PortDrift {
  const drift: PortDrift = { link: [], shaping: [] };
  if (!link) return drift;
  if (p.tapMac && link.address !== p.tapMac) drift.link.push(`tap MAC ${link.address}, expected ${p.tapMac}`);
  if (p.mtu && link.mtu !== p.mtu) drift.link.push(`tap MTU ${link.mtu}, expected ${p.mtu}`);
  if (p.bridge && link.master !== p.bridge)
    drift.link.push(`tap not on bridge ${p.bridge}${link.master ? ` (on ${link.master})` : ''}`);
  if (!link.up) drift.link.push('tap is down');
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
