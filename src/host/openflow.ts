/**
 * The guest's transmit limit on an Open vSwitch port: an OpenFlow meter and one flow that sends
 * the port's frames through it before the bridge's NORMAL switching. Measured here (userspace
 * datapath, 4 Mbit/s asked, frames written into the tap at ~1000 Mbit/s): the tc way (ingress
 * redirect to an ifb) let 973 Mbit/s through, because OVS reads the tap through a packet socket,
 * which takes frames before the ingress qdisc (and OVS deleted that qdisc at its next look at the
 * tap); OVS's own ingress_policing_rate let 967 through (it needs tc's police action, which this
 * kernel lacks); a meter let 4.1 through. OVSDB has no meters: they are OpenFlow, so `ovs-ofctl`.
 *
 * The meter's id is the port's OpenFlow port number in a range of mq-hotplug's own, so one port
 * never has two and another port's meter is never touched; the port keeps the id in its
 * external-ids (METER_KEY), so it is found after the tap and its number are gone. Deleting the
 * meter deletes its flow.
 */
import { trace } from '../util/trace.js';
import { type HostCommandError, runProgram } from './exec.js';
import { findBinary } from './ip.js';
import { checkIfname } from './validate.js';

export function ofctlBinary(): string {
  return process.env.MQ_HOTPLUG_OVS_OFCTL ?? 'ovs-ofctl';
}

export const findOfctl = () => findBinary(ofctlBinary());

/** mq-hotplug's meter ids: 0x6d710000 ("mq") + the OpenFlow port number (at most 0xfeff). */
const METER_BASE = 0x6d71_0000;
/** The Port's external-ids key that keeps its meter's id. */
export const METER_KEY = 'mq-hotplug-meter';
/** Above NORMAL's priority 0, below what a controller's own pipeline would use. */
const FLOW_PRIORITY = 1000;

export function meterId(ofport: number): number {
  if (!Number.isInteger(ofport) || ofport < 1 || ofport > 0xfeff) throw new Error(`invalid OpenFlow port ${ofport}`);
  return METER_BASE + ofport;
}

/** The ovs-ofctl argv (without the program) that limit what comes in on `ofport` to `mbit`. */
export function meterLines(bridge: string, ofport: number | 'OFPORT', mbit: number): string[][] {
  checkIfname(bridge, 'bridge name');
  const id = ofport === 'OFPORT' ? `${METER_BASE}+OFPORT` : meterId(ofport);
  const kbps = mbit * 1000;
  // burst: 100 ms at the rate (OVS's advice for policing: a tenth of the rate), and at least two
  // 64 KiB frames: with userspace TSO a guest's TCP segment reaches the meter whole, and one larger
  // than the bucket is always dropped (1.8 Mbit/s of 4 measured with a 400 kbit burst). A meter
  // drops what is over where tbf queues it, and TCP backs off at each drop: it got 2.6-4.1 of 4
  // Mbit/s here (the burst lets a transfer of a few seconds pass the rate a little)
  const burst = Math.max(Math.ceil(kbps / 10), 2 * 64 * 8 + 64);
  return [
    ['-O', 'OpenFlow13', 'add-meter', bridge, `meter=${id},kbps,burst,band=type=drop,rate=${kbps},burst_size=${burst}`],
    [
      ...['-O', 'OpenFlow13', 'add-flow', bridge],
      `cookie=${id},priority=${FLOW_PRIORITY},in_port=${ofport},actions=meter:${id},NORMAL`,
    ],
  ];
}

async function ofctl(argv: string[]): Promise<void> {
  trace('ovs', '>', `ovs-ofctl ${argv.join(' ')}`);
  try {
    await runProgram([ofctlBinary(), ...argv]);
  } catch (e) {
    trace('ovs', '!', (e as HostCommandError).detail ?? String(e));
    throw e;
  }
}

/** The meter and its flow; a meter of the same id left from before is replaced. */
export async function addMeter(bridge: string, ofport: number, mbit: number): Promise<void> {
  const [meter, flow] = meterLines(bridge, ofport, mbit);
  try {
    await ofctl(meter!);
  } catch {
    await deleteMeter(bridge, meterId(ofport)); // a port that had this number before, gone without its meter
    await ofctl(meter!);
  }
  await ofctl(flow!);
}

/** A meter of ours, and with it its flow; none there is fine. */
export async function deleteMeter(bridge: string, id: number): Promise<void> {
  checkIfname(bridge, 'bridge name');
  if (!Number.isInteger(id) || id <= METER_BASE || id > METER_BASE + 0xfeff) return; // not one of ours
  await ofctl(['-O', 'OpenFlow13', 'del-meter', bridge, `meter=${id}`]);
}

/** Whether the port's meter and flow are there (one ovs-ofctl). */
export async function hasMeterFlow(bridge: string, ofport: number): Promise<boolean> {
  checkIfname(bridge, 'bridge name');
  const id = meterId(ofport);
  const out = await runProgram([ofctlBinary(), '-O', 'OpenFlow13', 'dump-flows', bridge, `cookie=${id}/-1`]);
  return out.includes(`meter:${id}`);
}
