/**
 * The NICs of a VM as they really are: QOM under /machine/peripheral, joined with the host's view
 * of each tap (`ip -j -d link show`, one exec), the network backend's view of its port, and the
 * record, reporting any drift between them.
 */
import type { NicRecord } from '../model/nic.js';
import type { HotplugContext } from './context.js';
import { liveNics } from './inspect.js';

export interface NicView {
  id: string;
  mac: string;
  tap: string | null;
  /** Queue pairs the NIC was made with (from the record, or the tap's numqueues + numdisabled). */
  queues: number | null;
  /** Queue pairs the guest has enabled (the tap's numqueues), and the rest. */
  activeQueues: number | null;
  disabledQueues: number | null;
  vectors: number | null;
  mq: boolean | null;
  vhost: boolean | null;
  /** The bridge the tap is on (live), and what kind the record says it is. */
  bridge: string | null;
  bridgeKind: 'linux' | 'ovs' | null;
  /** The VLAN (access, or native with trunks) and the trunked VLANs, as recorded (OVS). */
  vlan: number | null;
  trunks: number[] | null;
  /** The tap's own MAC and MTU, live. */
  tapMac: string | null;
  tapMtu: number | null;
  /** The MTU told to the guest (host_mtu), and the rate limit in Mbit/s, as recorded. */
  guestMtu: number | null;
  rate: number | null;
  linkUp: boolean | null;
  /** The uid the tap lets attach (its owner): QEMU's; null where it has none (anyone may) or is gone. */
  owner: number | null;
  state: 'adding' | 'active' | 'unplug-pending' | 'unrecorded' | 'missing';
  drift: string[];
}

export async function listNics(ctx: HotplugContext): Promise<NicView[]> {
  const recordedList = ctx.record.read()?.nics ?? [];
  const [live, links, seen] = await Promise.all([
    liveNics(ctx.qmp),
    ctx.host.showLinks(),
    ctx.network.observe(recordedList),
  ]);
  const recorded = new Map(recordedList.map((n) => [n.id, n]));
  // in the order they were added (QOM lists children in hash order), unrecorded ones last
  const rank = (id: string) => {
    const i = recordedList.findIndex((n) => n.id === id);
    return i < 0 ? recordedList.length : i;
  };
  live.sort((a, b) => rank(a.id) - rank(b.id) || a.id.localeCompare(b.id));
  const views: NicView[] = [];
  for (const nic of live) {
    const rec = recorded.get(nic.id);
    recorded.delete(nic.id);
    const tapName = nic.tap ?? rec?.tap ?? null;
    const link = tapName ? links.get(tapName) : undefined;
    const drift: string[] = [];
    if (!rec && ctx.record.keeps) drift.push('not in the record (added outside mq-hotplug?)');
    if (rec && rec.mac !== nic.mac) drift.push(`MAC ${nic.mac}, record says ${rec.mac}`);
    if (rec && nic.tap && rec.tap !== nic.tap) drift.push(`tap ${nic.tap}, record says ${rec.tap}`);
    if (tapName && !link) drift.push(`tap ${tapName} missing on the host`);
    if (rec) drift.push(...ctx.network.drift(rec, link, seen));
    else if (link && !link.up) drift.push('tap is down');
    if (nic.vectors === 0) drift.push('MSI-X off (vectors 0)');
    const tapInfo = link ? ctx.host.readTap(tapName!) : undefined;
    if (tapInfo && tapInfo.owner === undefined) drift.push('tap has no owner: any user can attach a queue to it');
    else if (tapInfo?.owner !== undefined && tapInfo.owner !== ctx.qemuUser.uid)
      drift.push(`tap owned by uid ${tapInfo.owner}, not by QEMU's (uid ${ctx.qemuUser.uid})`);
    const total = link?.numQueues !== undefined ? link.numQueues + (link.numDisabled ?? 0) : undefined;
    views.push({
      id: nic.id,
      mac: nic.mac,
      tap: tapName,
      queues: rec?.queues ?? total ?? null,
      activeQueues: link?.numQueues ?? null,
      disabledQueues: link?.numDisabled ?? null,
      vectors: nic.vectors,
      mq: nic.mq,
      vhost: rec?.vhost ?? null,
      bridge: rec ? ctx.network.bridgeOf(rec, link, seen) : (link?.master ?? null),
      ...kindAndVlan(rec),
      tapMac: link?.address ?? null,
      tapMtu: link?.mtu ?? null,
      guestMtu: rec?.guestMtu ?? null,
      rate: rec?.rate ?? null,
      linkUp: link?.up ?? null,
      owner: tapInfo?.owner ?? null,
      state: rec ? rec.state : 'unrecorded',
      drift,
    });
  }
  for (const rec of recorded.values()) {
    views.push({
      id: rec.id,
      mac: rec.mac,
      tap: rec.tap,
      queues: rec.queues,
      activeQueues: null,
      disabledQueues: null,
      vectors: rec.vectors,
      mq: null,
      vhost: rec.vhost,
      bridge: null,
      ...kindAndVlan(rec),
      tapMac: null,
      tapMtu: null,
      guestMtu: rec.guestMtu ?? null,
      rate: rec.rate ?? null,
      linkUp: null,
      owner: null,
      state: 'missing',
      drift: ['recorded but not in the VM'],
    });
  }
  return views;
}

function kindAndVlan(rec: NicRecord | undefined): Pick<NicView, 'bridgeKind' | 'vlan' | 'trunks'> {
  return {
    bridgeKind: !rec?.bridge ? null : rec.bridgeKind === 'ovs' ? 'ovs' : 'linux',
    vlan: rec?.vlan ?? null,
    trunks: rec?.trunks ?? null,
  };
}
