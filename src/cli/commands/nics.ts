/** `nics <vm>`: the VM's NICs, QOM joined with the host and the record (hotplug/nics.ts). */
import { type CommandEnv, printJson, withController } from '../env.js';
import { trunksText } from '../../host/validate.js';
import { table } from '../output.js';

const HEADERS = [
  'ID',
  'MAC',
  'TAP',
  'QUEUES',
  'ACTIVE',
  'VECTORS',
  'MQ',
  'VHOST',
  'BRIDGE',
  'VLAN',
  'MTU',
  'RATE',
  'LINK',
  'OWNER',
];
/** "10" (access), "trunk 10,20-30", or "10+trunk 20,30" (native 10). */
function vlanText(vlan: number | null, trunks: number[] | null): string | null {
  const t = trunks?.length ? `trunk ${trunksText(trunks)}` : null;
  return vlan !== null && t ? `${vlan}+${t}` : (t ?? (vlan === null ? null : String(vlan)));
}
const onOff = (v: boolean | null) => (v === null ? null : v ? 'on' : 'off');

export async function nics(vm: string, o: { json?: boolean }, env: CommandEnv): Promise<void> {
  const views = await withController(vm, env, (c) => c.listNics(), { readOnly: true });
  if (o.json) return printJson(env, views);
  env.output.out(
    table(
      [...HEADERS, 'STATE', 'DRIFT'],
      views.map((n) => [
        n.id,
        n.mac,
        n.tap,
        n.queues,
        n.activeQueues === null ? null : `${n.activeQueues}/${n.activeQueues + (n.disabledQueues ?? 0)}`,
        n.vectors,
        onOff(n.mq),
        onOff(n.vhost),
        n.bridge === null ? null : n.bridgeKind === 'ovs' ? `${n.bridge} (ovs)` : n.bridge,
        vlanText(n.vlan, n.trunks),
        n.tapMtu === null
          ? null
          : n.guestMtu && n.guestMtu !== n.tapMtu
            ? `${n.tapMtu} (guest ${n.guestMtu})`
            : n.tapMtu,
        n.rate === null ? null : `${n.rate}M`,
        n.linkUp === null ? null : n.linkUp ? 'up' : 'down',
        n.owner === null ? null : `uid ${n.owner}`,
        n.state,
        n.drift.join('; '),
      ]),
    ),
  );
}
