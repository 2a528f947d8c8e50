/**
 * Deleting mq-hotplug's OVS ports, with what a rate limit added to them: the QoS row (a root row
 * in OVSDB, which does not go with the port by itself) and the OpenFlow meter with its flow (which
 * would else limit whatever port gets that OpenFlow number next).
 */
import fs from 'node:fs';
import { METER_KEY, deleteMeter } from './openflow.js';
import { OvsdbClient, type OvsdbRow, appliedTarget, applyOps, ovs, ovsdbSocket } from './ovsdb.js';

export const MARK_KEY = 'mq-hotplug';

/** The columns of a Port that deletePorts needs. */
export const PORT_COLUMNS = ['name', 'qos', 'external_ids'];

/**
 * Takes the ports off every bridge (OVSDB then drops each Port and its Interface), deletes their
 * QoS rows and meters, and waits until ovs-vswitchd has let go (up to waitMs).
 */
export async function deletePorts(db: OvsdbClient, ports: OvsdbRow[], waitMs = 5000): Promise<void> {
  if (!ports.length) return;
  const limited = ports.filter((p) => ovs.value(p.qos) !== undefined);
  const metered = ports.filter((p) => externalIds(p)[METER_KEY] !== undefined);
  if (metered.length) {
    const bridges = await db.select('Bridge', [], ['name', 'ports']);
    for (const port of metered) {
      const uuid = ovs.value(port._uuid);
      const bridge = bridges.find((b) => ovs.list(b.ports).includes(uuid));
      if (bridge) await deleteMeter(bridge.name as string, Number(externalIds(port)[METER_KEY])).catch(() => {});
    }
  }
  const results = await db.transact([
    { op: 'mutate', table: 'Bridge', where: [], mutations: [['ports', 'delete', ovs.set(ports.map((p) => p._uuid))]] },
    // the port lets go of its QoS first: OVSDB counts a reference from a port it is about to drop
    ...limited.flatMap((p) => [
      { op: 'update', table: 'Port', where: [['_uuid', '==', p._uuid]], row: { qos: ovs.set([]) } },
      { op: 'delete', table: 'QoS', where: [['_uuid', '==', p.qos]] },
    ]),
    ...applyOps(),
  ]);
  await db.waitApplied(appliedTarget(results), waitMs);
}

/**
 * Deletes every OVS port whose external-ids carry this mq-hotplug mark (a stopped or dead VM's).
 * Nothing to do, and no connection, where no OVS database is there. Returns the ports' names.
 */
export async function deletePortsMarked(mark: string, socketPath = ovsdbSocket()): Promise<string[]> {
  if (!fs.existsSync(socketPath)) return [];
  const db = await OvsdbClient.connect(socketPath);
  try {
    const ports = await db.select('Port', [['external_ids', 'includes', ovs.map({ [MARK_KEY]: mark })]], PORT_COLUMNS);
    // gone from the database is what counts: the wait is short
    await deletePorts(db, ports, 2000).catch(() => {});
    return ports.map((p) => p.name as string);
  } finally {
    db.close();
  }
}

const externalIds = (row: OvsdbRow) => (ovs.value(row.external_ids) as Record<string, string> | undefined) ?? {};
