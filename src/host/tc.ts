/**
 * Rate limits with `tc`, in both directions of a tap:
 *  - the guest's receive side is the tap's egress: a `tbf` root qdisc on the tap shapes it;
 *  - the guest's transmit side is the tap's ingress. Ingress cannot be shaped in place, so an
 *    `ingress` qdisc with a match-all `u32` filter redirects it (`mirred`) to an `ifb` device, and
 *    a `tbf` on the ifb shapes it there.
 * libvirt and Proxmox police the ingress instead (`police` drops what is over the rate); this
 * kernel has no `police` action, and shaping treats TCP better than dropping, so the ifb way is
 * used on every kernel: one mechanism, tested here. It costs one ifb device per limited NIC.
 *
 * All lines of one NIC go to one `tc -batch -` (one fork), only for a NIC that has a rate.
 */
import { trace } from '../util/trace.js';
import { type HostCommandError, runProgram } from './exec.js';
import { checkIfname } from './validate.js';

export function tcBinary(): string {
  return process.env.MQ_HOTPLUG_TC ?? 'tc';
}

/** tbf's burst: 20 ms at the rate, at least 32 KiB and two frames of the MTU (tbf needs burst > MTU). */
export function burstBytes(mbit: number, mtu = 1500): number {
  return Math.max(Math.ceil((mbit * 125_000) / 50), 32 * 1024, 2 * (mtu + 18));
}

/** The tc lines (argv without "tc") that limit `tap` to `mbit` both ways, through `ifb`. */
export function shapingLines(tap: string, ifb: string, mbit: number, mtu?: number): string[][] {
  checkIfname(tap);
  checkIfname(ifb);
  const tbf = ['tbf', 'rate', `${mbit}mbit`, 'burst', String(burstBytes(mbit, mtu)), 'latency', '50ms'];
  return [
    ['qdisc', 'add', 'dev', tap, 'root', ...tbf],
    ['qdisc', 'add', 'dev', tap, 'handle', 'ffff:', 'ingress'],
    // protocol all + match u32 0 0: every frame, whatever it carries
    [
      'filter',
      'add',
      'dev',
      tap,
      'parent',
      'ffff:',
      'protocol',
      'all',
      'u32',
      'match',
      'u32',
      '0',
      '0',
      'action',
      'mirred',
      'egress',
      'redirect',
      'dev',
      ifb,
    ],
    ['qdisc', 'add', 'dev', ifb, 'root', ...tbf],
  ];
}

/**
 * Runs tc lines in one `tc -batch -`; the first failing line stops it and is named in the error.
 * With `force`, tc goes on past failures (for deletions of what may not exist) and still reports them.
 */
export async function tcBatch(lines: string[][], { force = false } = {}): Promise<void> {
  if (!lines.length) return;
  for (const line of lines) trace('tc', '>', line.join(' '));
  const argv = [tcBinary(), ...(force ? ['-force'] : []), '-batch', '-'];
  try {
    await runProgram(argv, { input: lines.map((l) => l.join(' ')).join('\n') + '\n' });
  } catch (e) {
    trace('tc', '!', (e as HostCommandError).detail ?? String(e));
    throw e;
  }
}

export interface Qdisc {
  kind: string;
  dev: string;
  root: boolean;
  /** tbf's rate in bytes per second */
  rate?: number;
}

/** Every qdisc on the host, by device (one exec). */
export async function showQdiscs(): Promise<Map<string, Qdisc[]>> {
  const stdout = await runProgram([tcBinary(), '-j', 'qdisc', 'show']);
  const all = JSON.parse(stdout) as { kind: string; dev: string; root?: boolean; options?: { rate?: number } }[];
  const byDev = new Map<string, Qdisc[]>();
  for (const q of all) {
    const list = byDev.get(q.dev) ?? [];
    list.push({ kind: q.kind, dev: q.dev, root: q.root === true, rate: q.options?.rate });
    byDev.set(q.dev, list);
  }
  return byDev;
}
