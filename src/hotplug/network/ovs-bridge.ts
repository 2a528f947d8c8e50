/**
 * The Open vSwitch backend: the tap as a port of an OVS bridge, as libvirt makes it
 * (<virtualport type='openvswitch'>): the Interface carries external-ids attached-mac (the guest's
 * MAC), iface-id (a stable id per NIC, for an OVN/Neutron agent), vm-id and iface-status=active,
 * and mtu_request = the bridge's MTU; the Port carries the VLAN (tag, trunks, vlan_mode as
 * Proxmox sets them) and mq-hotplug's mark, the same as the tap's alias: only a port with this
 * VM's mark is ever deleted.
 *
 * Spoken to OVSDB directly (host/ovsdb.ts), on one connection per context. Three traps, measured
 * (../shared/FACTS.md): an add that OVS could not open still commits (so the Interface's ofport
 * and error are read once ovs-vswitchd has applied it); a port left from an earlier tap of the
 * same name stays dead when the tap comes back, and deleting it in the add's own transaction does
 * not revive it (so it goes in a transaction of its own first); and the tap's ingress qdisc is
 * behind the packet socket that OVS reads it through, so tc cannot limit the guest's transmit.
 *
 * A rate limit, as libvirt makes it on OVS for the guest's receive side: a QoS row of type
 * linux-htb with max-rate on the port (OVS keeps the tap's htb qdisc itself). The guest's
 * transmit side: an OpenFlow meter (host/openflow.ts), where libvirt's ingress_policing_rate
 * needs tc's police action, which this kernel lacks. Both go with the port (host/ovs-ports.ts).
 */
import fs from 'node:fs';
import { UsageError } from '../../errors.js';
import { type LinkInfo, attachArgs } from '../../host/ip.js';
import { METER_KEY, addMeter, hasMeterFlow, meterId, meterLines, ofctlBinary } from '../../host/openflow.js';
import { MARK_KEY, PORT_COLUMNS, deletePorts } from '../../host/ovs-ports.js';
import {
  OvsdbClient,
  OvsdbError,
  noDatabase,
  type OvsdbOp,
  type OvsdbRow,
  appliedTarget,
  applyOps,
  ovs,
  ovsdbSocket,
} from '../../host/ovsdb.js';
import { trunksText } from '../../host/validate.js';
import type { Port } from '../../model/nic.js';
import { within } from '../../util/time.js';
import type { HostPort } from '../context.js';
import { type NetworkBackend, type Observation, linkDrift } from './backend.js';

/** Who the ports belong to: the VM's name (vm-id) and mq-hotplug's mark for it (host/tap.ts). */
export interface PortOwner {
  vm: string;
  mark: string;
}

interface PortSeen {
  uuid: string;
  bridge?: string;
  vlan?: number;
  trunks: number[];
  vlanMode?: string;
  mark?: string;
  ofport?: number;
  error?: string;
  /** max-rate of the port's QoS, bit/s */
  maxRate?: number;
  /** the guest-transmit meter's flow is there (asked only for a port with a rate) */
  meter?: boolean;
}

interface Seen extends Observation {
  ports: Map<string, PortSeen>;
}

/** How long a bridge lookup waits for OVSDB. */
const ANSWER_MS = 2000;

/** A port's VLAN columns: access (tag), trunk (trunks), or both (trunks with the tag native, untagged). */
function vlanColumns(p: Port): Record<string, unknown> {
  const mode = p.trunks?.length ? (p.vlan ? 'native-untagged' : 'trunk') : p.vlan ? 'access' : undefined;
  return {
    tag: p.vlan ?? ovs.set([]),
    trunks: ovs.set(p.trunks ?? []),
    vlan_mode: mode ?? ovs.set([]),
  };
}

export class OvsBridge implements NetworkBackend {
  readonly kind = 'Open vSwitch bridge';
  private client: Promise<OvsdbClient> | undefined;

  constructor(
    private readonly host: HostPort,
    private readonly owner: PortOwner,
    readonly socketPath = ovsdbSocket(),
  ) {}

  /** The connection, opened on first use and again after it was lost. */
  async db(): Promise<OvsdbClient> {
    const current = await this.client?.catch(() => undefined);
    if (current && !current.closed) return current;
    this.client = OvsdbClient.connect(this.socketPath);
    return this.client;
  }

  /**
   * Whether OVS has a bridge of this name; false (with why) when no database answers, within
   * ANSWER_MS (a hung ovsdb-server must not stall an add onto a Linux bridge).
   */
  async hasBridge(bridge: string): Promise<{ ovs: boolean; unreachable?: string }> {
    const silent = {
      ovs: false,
      unreachable: `the Open vSwitch database at ${this.socketPath} did not answer within ${ANSWER_MS} ms`,
    };
    // no database here at all (a host without OVS): no connection tried
    if (!fs.existsSync(this.socketPath)) return { ovs: false, unreachable: noDatabase(this.socketPath) };
    const ask = async () => {
      const db = await this.db();
      return { ovs: (await db.select('Bridge', [['name', '==', bridge]], ['name'])).length > 0 };
    };
    try {
      return await within(ask(), ANSWER_MS, silent);
    } catch (e) {
      return { ovs: false, unreachable: (e as Error).message };
    }
  }

  async checkBridge(bridge: string): Promise<'ovs'> {
    const { ovs: found, unreachable } = await this.hasBridge(bridge);
    if (!found)
      throw new UsageError(
        unreachable ?? `Open vSwitch has no bridge '${bridge}' (create it: ovs-vsctl add-br ${bridge})`,
      );
    return 'ovs';
  }

  bridgeMtu(bridge: string): number | undefined {
    return this.host.linkMtu(bridge); // the bridge's own (internal) interface
  }

  commands(p: Port): string[][] {
    const vlan = vlanColumns(p);
    const portArgs = [
      ...(p.vlan ? [`tag=${p.vlan}`] : []),
      ...(p.trunks?.length ? [`trunks=${trunksText(p.trunks)}`] : []),
      ...(typeof vlan.vlan_mode === 'string' ? [`vlan_mode=${vlan.vlan_mode}`] : []),
      `external-ids:${MARK_KEY}=${this.owner.mark}`,
    ];
    const ifaceArgs = Object.entries(this.interfaceIds(p)).map(([k, v]) => `external-ids:${k}=${v}`);
    const qosArgs = p.rate
      ? [
          ...['--', 'set', 'Port', p.tap, 'qos=@qos'],
          ...['--', '--id=@qos', 'create', 'QoS', 'type=linux-htb', `other-config:max-rate=${maxRate(p.rate)}`],
        ]
      : [];
    return [
      this.host.ipArgv(this.linkLine(p)),
      [
        ...['ovs-vsctl', '--', 'add-port', p.bridge!, p.tap, ...portArgs],
        ...['--', 'set', 'Interface', p.tap, ...(p.tapMtu ? [`mtu_request=${p.tapMtu}`] : []), ...ifaceArgs],
        ...qosArgs,
      ],
      // the port's OpenFlow number is known once OVS has opened it
      ...(p.rate ? meterLines(p.bridge!, 'OFPORT', p.rate).map((l) => [ofctlBinary(), ...l]) : []),
    ];
  }

  async attach(p: Port): Promise<void> {
    // side by side: OVS opens a tap that is still down as well as one that is up, and the ip line
    // (MAC, MTU, up) then costs nothing on the add's path
    const [link, port] = await Promise.allSettled([this.host.ip(this.linkLine(p)), this.addPort(p)]);
    if (port.status === 'rejected') throw port.reason;
    if (link.status === 'rejected') throw link.reason;
  }

  async detach(p: Port): Promise<string[]> {
    const db = await this.db();
    const [port] = await db.select('Port', [['name', '==', p.tap]], PORT_COLUMNS);
    if (!port || markOf(port) !== this.owner.mark) return []; // gone, or someone else's: never touched
    await deletePorts(db, [port]);
    return [`OVS port ${p.tap} deleted`];
  }

  async observe(ports: Port[]): Promise<Seen> {
    const seen: Seen = { backend: this.kind, ports: new Map() };
    if (!ports.length) return seen;
    const db = await this.db();
    const [portRows, ifaceRows, bridgeRows, qosRows] = await db.transact([
      {
        op: 'select',
        table: 'Port',
        where: [],
        columns: ['_uuid', 'name', 'tag', 'trunks', 'vlan_mode', 'qos', 'external_ids'],
      },
      { op: 'select', table: 'Interface', where: [], columns: ['name', 'ofport', 'error'] },
      { op: 'select', table: 'Bridge', where: [], columns: ['name', 'ports'] },
      { op: 'select', table: 'QoS', where: [], columns: ['_uuid', 'other_config'] },
    ]);
    const rates = new Map(
      (qosRows!.rows as OvsdbRow[]).map((q) => [
        ovs.value(q._uuid) as string,
        Number((ovs.value(q.other_config) as Record<string, string> | undefined)?.['max-rate']),
      ]),
    );
    const bridgeOf = new Map<string, string>();
    for (const b of bridgeRows!.rows as OvsdbRow[])
      for (const u of ovs.list(b.ports)) bridgeOf.set(u as string, b.name as string);
    const ifaces = new Map((ifaceRows!.rows as OvsdbRow[]).map((i) => [i.name as string, i]));
    for (const row of portRows!.rows as OvsdbRow[]) {
      const name = row.name as string;
      const uuid = ovs.value(row._uuid) as string;
      const iface = ifaces.get(name);
      seen.ports.set(name, {
        uuid,
        bridge: bridgeOf.get(uuid),
        vlan: ovs.value(row.tag) as number | undefined,
        trunks: (ovs.list(row.trunks) as number[]).sort((a, b) => a - b),
        vlanMode: ovs.value(row.vlan_mode) as string | undefined,
        mark: markOf(row),
        ofport: iface ? (ovs.value(iface.ofport) as number | undefined) : undefined,
        error: iface ? (ovs.value(iface.error) as string | undefined) : undefined,
        maxRate: rates.get(ovs.value(row.qos) as string),
      });
    }
    // one ovs-ofctl per port with a rate limit: OVSDB does not know meters
    for (const p of ports.filter((q) => q.rate && q.bridge)) {
      const port = seen.ports.get(p.tap);
      if (port?.ofport && port.ofport > 0) port.meter = await hasMeterFlow(p.bridge!, port.ofport).catch(() => false);
    }
    return seen;
  }

  drift(p: Port, link: LinkInfo | undefined, seen: Seen): string[] {
    return [...linkDrift(p, link), ...this.portDrift(p, seen).map((d) => d.what)];
  }

  bridgeOf(p: Port, _link: LinkInfo | undefined, seen: Seen): string | null {
    const port = seen.ports.get(p.tap);
    return port?.mark === this.owner.mark ? (port.bridge ?? null) : null;
  }

  async repair(p: Port, link: LinkInfo | undefined, seen: Seen): Promise<void> {
    const drift = this.portDrift(p, seen);
    if (drift.some((d) => d.replug)) {
      await this.detach(p);
      await this.addPort(p);
    } else if (drift.length) await this.setVlan(p);
    if (linkDrift(p, link).length) await this.host.ip(this.linkLine(p));
  }

  /** The VLAN in place; a port that went missing is made again, with the new VLAN. */
  async update(before: Port, after: Port): Promise<void> {
    const db = await this.db();
    const there = (await db.select('Port', [['name', '==', after.tap]], ['name'])).length > 0;
    if (there && before.rate === after.rate) return this.setVlan(after);
    // a new rate: the port is made again with its QoS and meter (the NIC stays in the guest)
    if (there) await this.detach(before);
    await this.addPort(after);
  }

  /** A VLAN change in place, on the port (no replug, as libvirt does). */
  async setVlan(p: Port): Promise<void> {
    const db = await this.db();
    const results = await db.transact([
      { op: 'update', table: 'Port', where: [['name', '==', p.tap]], row: vlanColumns(p) },
      ...applyOps(),
    ]);
    if (results[0]!.count === 0) throw new OvsdbError(`no OVS port '${p.tap}' to change the VLAN of`);
    await db.waitApplied(appliedTarget(results));
  }

  close(): void {
    void this.client?.then((c) => c.close()).catch(() => {});
    this.client = undefined;
  }

  /** MAC, MTU and up: the tap's own settings (OVS takes it as it is). */
  private linkLine(p: Port): string[] {
    return attachArgs(p.tap, undefined, { address: p.tapMac, mtu: p.tapMtu });
  }

  private interfaceIds(p: Port): Record<string, string> {
    return {
      'attached-mac': p.mac,
      ...(p.ifaceId ? { 'iface-id': p.ifaceId } : {}),
      'vm-id': this.owner.vm,
      'iface-status': 'active',
      [MARK_KEY]: this.owner.mark,
    };
  }

  private async addPort(p: Port): Promise<void> {
    const db = await this.db();
    const bridge = p.bridge!;
    const [stale] = await db.select('Port', [['name', '==', p.tap]], PORT_COLUMNS);
    if (stale) {
      if (markOf(stale) !== this.owner.mark)
        throw new UsageError(
          `Open vSwitch already has a port '${p.tap}' that mq-hotplug did not make for this VM; delete it (ovs-vsctl del-port ${p.tap}) or pick another --ifname`,
        );
      await deletePorts(db, [stale]);
    }
    const ops: OvsdbOp[] = [
      // the bridge may have gone since the preflight: then nothing is written
      {
        op: 'wait',
        table: 'Bridge',
        where: [['name', '==', bridge]],
        columns: ['name'],
        until: '==',
        rows: [{ name: bridge }],
        timeout: 0,
      },
      {
        op: 'insert',
        table: 'Interface',
        'uuid-name': 'iface',
        row: {
          name: p.tap,
          external_ids: ovs.map(this.interfaceIds(p)),
          ...(p.tapMtu ? { mtu_request: p.tapMtu } : {}),
        },
      },
      ...(p.rate
        ? [
            {
              op: 'insert',
              table: 'QoS',
              'uuid-name': 'qos',
              row: {
                type: 'linux-htb',
                other_config: ovs.map({ 'max-rate': String(maxRate(p.rate)) }),
                external_ids: ovs.map({ [MARK_KEY]: this.owner.mark }),
              },
            },
          ]
        : []),
      {
        op: 'insert',
        table: 'Port',
        'uuid-name': 'port',
        row: {
          name: p.tap,
          interfaces: ovs.named('iface'),
          external_ids: ovs.map({ [MARK_KEY]: this.owner.mark }),
          ...vlanColumns(p),
          ...(p.rate ? { qos: ovs.named('qos') } : {}),
        },
      },
      {
        op: 'mutate',
        table: 'Bridge',
        where: [['name', '==', bridge]],
        mutations: [['ports', 'insert', ovs.set([ovs.named('port')])]],
      },
      ...applyOps(),
    ];
    let results: Record<string, unknown>[];
    try {
      results = await db.transact(ops);
    } catch (e) {
      if (e instanceof OvsdbError && e.failedOp === 0)
        throw new OvsdbError(`Open vSwitch bridge '${bridge}' no longer exists`);
      throw e;
    }
    await db.waitApplied(appliedTarget(results));
    // add-port commits even where OVS could not open the device: ask what ovs-vswitchd made of it
    const [iface] = await db.select('Interface', [['name', '==', p.tap]], ['ofport', 'error']);
    const ofport = ovs.value(iface?.ofport) as number | undefined;
    const error = ovs.value(iface?.error) as string | undefined;
    if (ofport === undefined || ofport < 0 || error)
      throw new OvsdbError(
        `Open vSwitch could not open tap ${p.tap} on bridge ${bridge}: ${error ?? 'no OpenFlow port'}`,
      );
    if (p.rate) {
      // the id is kept first, so a failing meter add still leaves it to be found and deleted
      await db.transact([
        {
          op: 'mutate',
          table: 'Port',
          where: [['name', '==', p.tap]],
          mutations: [['external_ids', 'insert', ovs.map({ [METER_KEY]: String(meterId(ofport)) })]],
        },
      ]);
      await addMeter(bridge, ofport, p.rate);
    }
  }

  private portDrift(p: Port, seen: Seen): { what: string; replug: boolean }[] {
    const port = seen.ports.get(p.tap);
    if (!port || port.mark !== this.owner.mark)
      return [{ what: `no OVS port for the tap on bridge ${p.bridge}`, replug: true }];
    const out: { what: string; replug: boolean }[] = [];
    if (port.bridge !== p.bridge)
      out.push({ what: `OVS port on bridge ${port.bridge ?? 'none'}, expected ${p.bridge}`, replug: true });
    if (port.ofport === undefined || port.ofport < 0 || port.error)
      out.push({ what: `OVS port broken (${port.error ?? 'no OpenFlow port'})`, replug: true });
    if (p.rate && port.maxRate !== maxRate(p.rate))
      out.push({ what: `no ${p.rate} Mbit/s QoS on the OVS port (guest receive)`, replug: true });
    if (p.rate && port.meter === false)
      out.push({ what: `no ${p.rate} Mbit/s meter on the OVS port (guest transmit)`, replug: true });
    const want = vlanColumns(p);
    if (port.vlan !== p.vlan)
      out.push({ what: `VLAN tag ${port.vlan ?? 'none'}, expected ${p.vlan ?? 'none'}`, replug: false });
    const trunks = p.trunks ?? [];
    if (trunksText(port.trunks) !== trunksText(trunks))
      out.push({
        what: `trunks ${trunksText(port.trunks) || 'none'}, expected ${trunksText(trunks) || 'none'}`,
        replug: false,
      });
    const mode = typeof want.vlan_mode === 'string' ? want.vlan_mode : undefined;
    if (port.vlanMode !== mode)
      out.push({ what: `vlan_mode ${port.vlanMode ?? 'none'}, expected ${mode ?? 'none'}`, replug: false });
    return out;
  }
}

/** The mq-hotplug mark in a row's external_ids. */
function markOf(row: OvsdbRow): string | undefined {
  return (ovs.value(row.external_ids) as Record<string, string> | undefined)?.[MARK_KEY];
}

/** The QoS max-rate (bit/s) of a limit in Mbit/s. */
const maxRate = (mbit: number) => mbit * 1_000_000;
