/** `add <vm>`: hot-plug a NIC (hotplug/add/), or with --dry-run print what it would run. */
import type { AddRequest } from '../../hotplug/add/plan.js';
import { trunksText } from '../../host/validate.js';
import type { VhostMode } from '../../model/nic.js';
import { type CommandEnv, note, printJson, seconds, withController } from '../env.js';

export interface AddOptions {
  queues: string;
  /** false: --no-bridge */
  bridge?: string | false;
  ifname?: string;
  mac?: string;
  id?: string;
  vhost: VhostMode;
  mtu?: string;
  rate?: string;
  vlan?: string;
  trunks?: string;
  /** true: the default wait */
  waitGuest?: string | true;
  transient?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

export function requestOf(o: AddOptions): AddRequest {
  const waitGuestMs =
    o.waitGuest === undefined ? undefined : o.waitGuest === true ? 30_000 : seconds(String(o.waitGuest), 'guest wait');
  return {
    queues: String(o.queues),
    bridge: o.bridge === false ? null : o.bridge,
    ifname: o.ifname,
    mac: o.mac,
    id: o.id,
    vhost: o.vhost,
    guestMtu: o.mtu,
    rate: o.rate,
    vlan: o.vlan,
    trunks: o.trunks,
    waitGuestMs,
    persist: o.transient !== true,
  };
}

/** Exit 1 when asked to wait for the guest and the guest did not take the NIC (in both output modes). */
export async function add(vm: string, o: AddOptions, env: CommandEnv): Promise<number> {
  const request = requestOf(o);
  const { output } = env;
  if (o.dryRun === true) {
    const { notes, ...plan } = await withController(vm, env, (c) => c.planNic(request), { readOnly: true });
    for (const n of notes) note(env, n);
    if (o.json) return (printJson(env, { dryRun: true, ...plan, notes }), 0);
    output.out(`dry run: nothing changed. Would send:\n`);
    for (const cmd of plan.commands) output.out(`  ${JSON.stringify(cmd)}\n`);
    output.out(`then run:\n${plan.hostCommands.map((c) => `  ${c.join(' ')}\n`).join('')}`);
    return 0;
  }
  const r = await withController(vm, env, (c) => c.addNic(request));
  for (const n of r.notes) note(env, n);
  const exitCode = r.guestReady === false ? 1 : 0;
  if (o.json) {
    const timings = Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, Math.round(v * 100) / 100]));
    return (printJson(env, { ...r, timings }), exitCode);
  }
  output.out(
    `added ${r.id} to ${vm}: ${r.queues} queues, tap ${r.tap} ${r.bridge ? `on ${r.bridge}` : '(no bridge)'} up, ` +
      `mac ${r.mac}, vectors ${r.vectors}, vhost ${r.vhost ? 'on' : 'off'}, bus ${r.bus}` +
      `${r.tapMtu ? `, mtu ${r.tapMtu}` : ''}${r.guestMtu && r.guestMtu !== r.tapMtu ? ` (guest ${r.guestMtu})` : ''}` +
      `${r.rate ? `, rate ${r.rate} Mbit/s` : ''}${r.vlan ? `, vlan ${r.vlan}` : ''}` +
      `${r.trunks?.length ? `, trunks ${trunksText(r.trunks)}` : ''}\n`,
  );
  if (r.guestReady !== undefined) {
    const link = r.guestLinkUp ? 'link up' : 'link not up yet (the guest has no network configuration for it?)';
    output.out(
      r.guestReady
        ? `guest driver took ${r.id} after ${Math.round(r.timings.guestWait ?? 0)} ms: ${r.activeQueues ?? '?'} of ${r.queues} queue pairs active, ${link}\n`
        : `guest driver did not take ${r.id} within the wait; ${r.activeQueues ?? '?'} queue pairs active\n`,
    );
  }
  return exitCode;
}
