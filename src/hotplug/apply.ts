/**
 * `apply`: make a VM's NICs exactly those of a spec, idempotently, for fleet tools.
 *
 *   {"nics": [{"id": "net0", "queues": 8, "bridge": "br0", "mac": "52:54:00:12:34:56"}, ...]}
 *
 * Each NIC takes `add`'s options (camelCase), defaulted as in `add`. Against the NICs the VM has,
 * the plan is: remove the ones not listed, replace those whose queues, bridge, MAC, tap, vhost or
 * guest MTU differ (a device cannot change them in place; the MAC and tap are kept unless the spec
 * names others), change the rate in place, and add the missing. Every NIC is checked before anything
 * changes, and so is room for them (slots). Each step is one hot-plug transaction that updates the
 * record and the definition as it lands, so a failure midway leaves both consistent and the next
 * apply converges. On a defined VM that is not running only the definition changes.
 */
import { UsageError } from '../errors.js';
import { checkQemuId, checkTrunks, trunksText } from '../host/validate.js';
import {
  type NicDefinition,
  type NicRecord,
  type NicRequest,
  type VhostMode,
  definitionOf,
  recordOf,
  withoutUndefined,
} from '../model/nic.js';
import type { VmDefinition } from '../qemu/definition.js';
import { randomUUID } from 'node:crypto';
import { type CheckedRequest, checkRequest, resolveQueues } from './add/checks.js';
import { defaultTapName, freeLinkName, randomMac } from './add/names.js';
import type { AddRequest } from './add/plan.js';
import { recoverAdds } from './add/recovery.js';
import { addNic } from './add/transaction.js';
import type { HostPort, HotplugContext } from './context.js';
import { inspectVm, liveNics } from './inspect.js';
import type { NetworkBackend } from './network/backend.js';
import { removeNic } from './remove.js';

/** One NIC as a spec file gives it: `add`'s options (the spec's `mtu` is --mtu, the guest's). */
export type NicWanted = NicRequest & { id: string };

/** The fields of a spec's NIC, as a user writes them. */
const NIC_FIELDS = ['id', 'queues', 'bridge', 'mac', 'ifname', 'vhost', 'mtu', 'rate', 'vlan', 'trunks'];

/** A NIC as the VM has it now, from the record, the definition, or QEMU and the host. */
interface CurrentNic {
  id: string;
  mac: string;
  tap: string;
  queues: number;
  bridge: string | null;
  vhost?: VhostMode;
  guestMtu?: number;
  rate?: number;
  vlan?: number;
  trunks?: number[];
  ifaceId?: string;
}

export interface ApplyResult {
  changed: boolean;
  added: string[];
  removed: string[];
  replaced: string[];
  /** changed in place (the rate, the VLAN) */
  updated: string[];
  unchanged: string[];
  dryRun?: boolean;
  /** the VM is not running: only its definition changed */
  definitionOnly?: boolean;
}

/** Parses and checks a spec file's text: JSON, known fields only, ids and MACs unique. */
export function parseApplySpec(text: string, source: string): NicWanted[] {
  let spec: unknown;
  try {
    spec = JSON.parse(text);
  } catch (e) {
    throw new UsageError(
      `spec ${source} is not JSON (${(e as Error).message}); give {"nics": [{"id": "net0", "queues": 8}, ...]}`,
    );
  }
  if (
    spec === null ||
    typeof spec !== 'object' ||
    Array.isArray(spec) ||
    !Array.isArray((spec as { nics?: unknown }).nics)
  ) {
    throw new UsageError(
      `spec ${source} must be an object with a "nics" array, like {"nics": [{"id": "net0", "queues": 8}]}`,
    );
  }
  const unknownTop = Object.keys(spec).filter((k) => k !== 'nics');
  if (unknownTop.length)
    throw new UsageError(`spec ${source}: unknown field '${unknownTop[0]}'; the spec has only "nics"`);
  const nics = (spec as { nics: unknown[] }).nics;
  const ids = new Set<string>();
  const macs = new Set<string>();
  const taps = new Set<string>();
  return nics.map((n, i) => {
    if (n === null || typeof n !== 'object' || Array.isArray(n))
      throw new UsageError(`spec ${source}: nics[${i}] is not an object`);
    const unknown = Object.keys(n).filter((k) => !NIC_FIELDS.includes(k));
    if (unknown.length) {
      throw new UsageError(
        `spec ${source}: nics[${i}] has unknown field '${unknown[0]}'; valid: ${NIC_FIELDS.join(', ')}`,
      );
    }
    const { mtu, ...rest } = n as Omit<NicWanted, 'guestMtu'> & { mtu?: number };
    const nic: NicWanted = withoutUndefined({ ...rest, guestMtu: mtu });
    if (typeof nic.id !== 'string')
      throw new UsageError(`spec ${source}: nics[${i}] needs an "id" (a string, like "net0")`);
    checkQemuId(nic.id, 'NIC id');
    if (nic.queues === undefined) throw new UsageError(`spec ${source}: NIC '${nic.id}' needs "queues"`);
    const dup = (set: Set<string>, value: string | undefined, what: string) => {
      if (value === undefined) return;
      if (set.has(value))
        throw new UsageError(`spec ${source}: ${what} '${value}' is given twice; each NIC needs its own`);
      set.add(value);
    };
    dup(ids, nic.id, 'NIC id');
    dup(macs, nic.mac?.toLowerCase(), 'MAC');
    dup(taps, nic.ifname, 'tap name');
    return nic;
  });
}

/** What would change one NIC: replace (with the reasons), a new rate or VLAN in place, or nothing. */
function compare(
  current: CurrentNic,
  wanted: NicWanted,
  bridge: string | null,
): { replace: string[]; inPlace: boolean } {
  const replace: string[] = [];
  if (Number(wanted.queues) !== current.queues) replace.push(`queues ${current.queues} -> ${wanted.queues}`);
  if (bridge !== current.bridge) replace.push(`bridge ${current.bridge ?? 'none'} -> ${bridge ?? 'none'}`);
  if (wanted.mac !== undefined && wanted.mac.toLowerCase() !== current.mac)
    replace.push(`mac ${current.mac} -> ${wanted.mac}`);
  if (wanted.ifname !== undefined && wanted.ifname !== current.tap)
    replace.push(`tap ${current.tap} -> ${wanted.ifname}`);
  if (wanted.vhost !== undefined && current.vhost !== undefined && wanted.vhost !== current.vhost)
    replace.push(`vhost ${current.vhost} -> ${wanted.vhost}`);
  if (wanted.guestMtu !== current.guestMtu)
    replace.push(`guest MTU ${current.guestMtu ?? 'default'} -> ${wanted.guestMtu ?? 'default'}`);
  const vlan = wanted.vlan === undefined ? undefined : Number(wanted.vlan);
  const trunks = wanted.trunks === undefined ? [] : checkTrunks(wanted.trunks);
  const inPlace =
    wanted.rate !== current.rate || vlan !== current.vlan || trunksText(trunks) !== trunksText(current.trunks ?? []);
  return { replace, inPlace };
}

interface Plan {
  remove: CurrentNic[];
  replace: { current: CurrentNic; wanted: NicWanted; why: string[] }[];
  update: { current: CurrentNic; wanted: NicWanted }[];
  add: NicWanted[];
  unchanged: string[];
}

function planApply(current: CurrentNic[], wanted: NicWanted[], defaultBridge: string | null): Plan {
  const plan: Plan = { remove: [], replace: [], update: [], add: [], unchanged: [] };
  const byId = new Map(current.map((n) => [n.id, n]));
  const wantedIds = new Set(wanted.map((w) => w.id));
  plan.remove = current.filter((n) => !wantedIds.has(n.id));
  for (const w of wanted) {
    const have = byId.get(w.id);
    if (!have) {
      plan.add.push(w);
      continue;
    }
    const bridge = w.bridge === undefined ? defaultBridge : w.bridge || null;
    const { replace, inPlace } = compare(have, w, bridge);
    if (replace.length) plan.replace.push({ current: have, wanted: w, why: replace });
    else if (inPlace) plan.update.push({ current: have, wanted: w });
    else plan.unchanged.push(w.id);
  }
  return plan;
}

function resultOf(plan: Plan, extra: Partial<ApplyResult> = {}): ApplyResult {
  const result = {
    added: plan.add.map((w) => w.id),
    removed: plan.remove.map((n) => n.id),
    replaced: plan.replace.map((r) => r.current.id),
    updated: plan.update.map((u) => u.current.id),
    unchanged: plan.unchanged,
  };
  const changed = result.added.length + result.removed.length + result.replaced.length + result.updated.length > 0;
  return { changed, ...result, ...extra };
}

/** The spec with 'auto' queues resolved to the VM's vCPUs, so that it compares with what the VM has. */
function withQueues(spec: NicWanted[], cpus: number | undefined): NicWanted[] {
  return spec.map((w) => (w.queues === 'auto' ? { ...w, queues: resolveQueues('auto', cpus) } : w));
}

/** The add request for a wanted NIC; a replaced NIC keeps its MAC, tap and iface id unless the spec names others. */
function requestOf(w: NicWanted, keep?: CurrentNic): AddRequest {
  return withoutUndefined({ ...w, mac: w.mac ?? keep?.mac, ifname: w.ifname ?? keep?.tap, ifaceId: keep?.ifaceId });
}

/** Applies the spec to a running VM (ours or given by --qmp), under its lock. */
export async function applyLive(
  ctx: HotplugContext,
  spec: NicWanted[],
  { dryRun = false, removeTimeoutMs = 10_000 } = {},
): Promise<ApplyResult> {
  return ctx.record.locked(async () => {
    await recoverAdds(ctx);
    const record = ctx.record.read();
    const defaultBridge = record?.spec.bridge ?? null;
    const cpus = record?.spec.cpus ?? (await inspectVm(ctx.qmp, { askCpus: true })).cpus;
    const wanted = withQueues(spec, cpus);
    for (const w of wanted) await checkRequest(ctx, requestOf(w), defaultBridge);
    const current = record ? currentFromRecord(record.nics) : await currentFromQemu(ctx);
    const plan = planApply(current, wanted, defaultBridge);
    const live = await inspectVm(ctx.qmp, { askCpus: false });
    if (plan.add.length > live.freeSlots + plan.remove.length) {
      throw new UsageError(
        `${plan.add.length} NIC(s) to add would not fit in VM '${ctx.vm}': it has ${live.freeSlots} free slot(s)` +
          (plan.remove.length ? ` and ${plan.remove.length} NIC(s) to remove` : '') +
          (live.q35 ? ' (start it with more --hotplug-slots)' : ''),
      );
    }
    if (dryRun) return resultOf(plan, { dryRun: true });
    for (const nic of plan.remove) await removeNic(ctx, nic.id, removeTimeoutMs);
    for (const { current: nic, wanted: w } of plan.replace) {
      await removeNic(ctx, nic.id, removeTimeoutMs);
      await addNic(ctx, requestOf(w, nic));
    }
    for (const { current: nic, wanted: w } of plan.update) await changeInPlace(ctx, nic.id, w);
    for (const w of plan.add) await addNic(ctx, requestOf(w));
    return resultOf(plan);
  });
}

/** A defined VM that is not running: only its definition changes (MACs and taps are chosen now, slots at start). */
export async function applyDefinition(
  def: VmDefinition,
  spec: NicWanted[],
  ports: { host: HostPort; network: NetworkBackend },
  { dryRun = false } = {},
): Promise<{ result: ApplyResult; definition: VmDefinition }> {
  const defaultBridge = def.spec.bridge ?? null;
  const wanted = withQueues(spec, def.spec.cpus);
  const checked = new Map<string, CheckedRequest>();
  for (const w of wanted) checked.set(w.id, await checkRequest(ports, requestOf(w), defaultBridge));
  const plan = planApply(def.nics.map(currentFromDefinition), wanted, defaultBridge);
  if (def.spec.machine === 'q35' && wanted.length > def.spec.hotplugSlots) {
    throw new UsageError(
      `${wanted.length} NICs would not fit in VM '${def.name}': it has ${def.spec.hotplugSlots} hot-plug slots (start it with more --hotplug-slots)`,
    );
  }
  const result = resultOf(plan, { definitionOnly: true, ...(dryRun ? { dryRun: true } : {}) });
  if (dryRun) return { result, definition: def };
  const kept = new Map(def.nics.map((n) => [n.id, n]));
  const wantedIds = new Set(wanted.map((w) => w.id));
  const taken = new Set(def.nics.filter((n) => wantedIds.has(n.id)).map((n) => n.mac));
  for (const w of wanted) if (w.mac) taken.add(w.mac.toLowerCase());
  const nics: NicDefinition[] = wanted.map((w) => {
    const have = kept.get(w.id);
    const c = checked.get(w.id)!;
    const mac = c.mac ?? have?.mac ?? randomMac(taken);
    taken.add(mac);
    const nic: NicDefinition = withoutUndefined({
      id: w.id,
      mac,
      tap: w.ifname ?? have?.tap ?? defaultTapName(def.name, w.id, () => false),
      queues: c.queues,
      bridge: c.bridge,
      vhost: c.vhostMode,
      ...{ guestMtu: c.guestMtu, rate: c.rate, vlan: c.vlan, trunks: c.trunks },
      ifaceId: c.bridgeKind === 'ovs' ? (have?.ifaceId ?? randomUUID()) : undefined,
    });
    // a NIC that stays keeps its slot; a replaced one too (same id, same place in the guest)
    if (have?.bus) Object.assign(nic, { bus: have.bus, addr: have.addr });
    return nic;
  });
  return { result, definition: { ...def, nics } };
}

/**
 * A new rate or VLAN for a running NIC, in place (the backend's update: the shaping replaced on a
 * Linux bridge, the port's VLAN columns on OVS); the record and definition follow.
 */
async function changeInPlace(ctx: HotplugContext, id: string, w: NicWanted): Promise<void> {
  const nic = ctx.record.read()?.nics.find((n) => n.id === id);
  if (!nic) throw new UsageError(`NIC '${id}' is not in the record of VM '${ctx.vm}'; it cannot be changed in place`);
  const { rate, vlan, trunks } = w;
  const updated: NicRecord = withoutUndefined({
    ...nic,
    rate: rate ? Number(rate) : undefined,
    // the ifb shapes a Linux bridge's NIC only; OVS meters it (network/ovs-bridge.ts)
    ifb: !rate || nic.bridgeKind === 'ovs' ? undefined : nic.rate ? nic.ifb : freeLinkName('mqi', ctx.host.linkExists),
    vlan: vlan === undefined ? undefined : Number(vlan),
    trunks: trunks === undefined ? undefined : checkTrunks(trunks),
  });
  await ctx.network.update(nic, updated);
  ctx.record.saveNic(recordOf(updated, nic.state));
  ctx.record.defineNic(definitionOf(updated));
}

function currentFromRecord(nics: NicRecord[]): CurrentNic[] {
  return nics.map((n) => ({
    id: n.id,
    mac: n.mac,
    tap: n.tap,
    queues: n.queues,
    bridge: n.bridge,
    vhost: n.vhostMode,
    guestMtu: n.guestMtu,
    rate: n.rate,
    vlan: n.vlan,
    trunks: n.trunks,
    ifaceId: n.ifaceId,
  }));
}

function currentFromDefinition(n: NicDefinition): CurrentNic {
  const { id, mac, tap, queues, bridge, vhost, guestMtu, rate, vlan, trunks, ifaceId } = n;
  return { id, mac, tap, queues, bridge, vhost, guestMtu, rate, vlan, trunks, ifaceId };
}

/** A VM given by --qmp keeps no record: its NICs as QEMU and the host show them. */
async function currentFromQemu(ctx: HotplugContext): Promise<CurrentNic[]> {
  const [nics, links] = await Promise.all([liveNics(ctx.qmp), ctx.host.showLinks()]);
  return nics.map((n) => {
    const link = n.tap ? links.get(n.tap) : undefined;
    const queues = link?.numQueues !== undefined ? link.numQueues + (link.numDisabled ?? 0) : 1;
    return { id: n.id, mac: n.mac, tap: n.tap ?? '', queues, bridge: link?.master ?? null };
  });
}
