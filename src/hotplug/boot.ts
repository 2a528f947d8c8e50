/**
 * Starting a defined VM: QEMU starts paused (-S), each saved NIC is plugged at its saved slot with
 * its saved MAC and tap and set up on its bridge, then the VM runs (`cont`). The guest finds its
 * NICs at boot, where they were, and gives them the same names. A NIC that cannot come back (its
 * bridge is gone, its tap name is taken) stops the start: the VM is stopped again and the error
 * names the NIC; nothing is left running half-made.
 *
 * The NICs go in all at once: every one is planned against one look at the paused VM (each plan
 * takes its slot from what the next may use), then their adds run side by side, each the same
 * transaction as a hot-plug (its intent recorded first, its own rollback), so QEMU gets every
 * netdev_add and device_add in one pipelined burst and the taps are made and bridged meanwhile.
 * One after another, 28 NICs cost 28 round trips of preflight, plug, bridging and confirmation.
 */
import { type NicDefinition, requestOfDefinition } from '../model/nic.js';
import type { DefinitionStore, VmDefinition } from '../qemu/definition.js';
import { StartError, startVm, stopVm } from '../qemu/launcher.js';
import type { StateStore, VmRecord } from '../qemu/state.js';
import { type AddPlan, planNic } from './add/plan.js';
import { type AddResult, executeAdd } from './add/transaction.js';
import type { HotplugContext } from './context.js';
import { type LiveVm, inspectVm } from './inspect.js';
import { monotonicMs } from '../util/time.js';

/** A connection to the started VM: its hot-plug context, closed when the NICs are in. */
export interface OpenedVm {
  readonly context: HotplugContext;
  close(): Promise<void>;
}

export async function startDefined(
  store: StateStore,
  def: VmDefinition,
  open: () => Promise<OpenedVm>,
  definitions?: DefinitionStore,
): Promise<{ record: VmRecord; nics: AddResult[] }> {
  const stop = () => stopVm(store, def.name, undefined, definitions).catch(() => {});
  return store.withLock(def.name, async () => {
    const paused = def.nics.length > 0;
    const record = await startVm(store, def.spec, { paused, definitions });
    if (!paused) return { record, nics: [] };
    const vm = await open().catch(async (e: unknown) => {
      await stop();
      throw e;
    });
    let nics: AddResult[];
    let current: NicDefinition | undefined;
    try {
      nics = await plugAll(vm.context, def.nics, (n) => (current = n));
      await vm.context.qmp.execute('cont');
    } catch (e) {
      await vm.close();
      await stop();
      throw new StartError(
        `VM '${def.name}' was stopped again: its saved NIC '${current?.id}' could not be plugged (${(e as Error).message})`,
        { cause: e },
      );
    }
    await vm.close();
    return { record: store.read(def.name) ?? record, nics };
  });
}

/**
 * Plans every saved NIC against one look at the paused VM, then runs their adds side by side.
 * `failing` is told the NIC that failed (for the error). A NIC with a rate is planned and added
 * after the others, one by one: on a Linux bridge its ifb's name is the first free one on the
 * host, which only an ifb that exists takes away.
 */
async function plugAll(
  ctx: HotplugContext,
  defined: NicDefinition[],
  failing: (nic: NicDefinition) => void,
): Promise<AddResult[]> {
  const started = monotonicMs();
  const live = await inspectVm(ctx.qmp, { askCpus: false });
  const request = (n: NicDefinition) => ({ ...requestOfDefinition(n), beforeBoot: true, persist: true });
  const plan = async (n: NicDefinition): Promise<AddPlan> => {
    failing(n);
    // persist: a NIC saved before it had a slot gets the one it takes now
    const placed = await planNic(ctx, request(n), live);
    take(live, placed);
    return placed;
  };
  const withIfb = (n: NicDefinition) => n.rate !== undefined; // on OVS it has none: one by one all the same
  const plans: [NicDefinition, AddPlan][] = [];
  for (const n of defined.filter((d) => !withIfb(d))) plans.push([n, await plan(n)]);
  const results = await Promise.allSettled(plans.map(([, p]) => executeAdd(ctx, p)));
  const failed = results.findIndex((r) => r.status === 'rejected');
  if (failed >= 0) {
    failing(plans[failed]![0]);
    throw (results[failed] as PromiseRejectedResult).reason;
  }
  const added = results.map((r) => (r as PromiseFulfilledResult<AddResult>).value);
  for (const n of defined.filter(withIfb)) added.push(await executeAdd(ctx, await plan(n)));
  const ms = monotonicMs() - started;
  for (const r of added) ctx.publish('NIC_ADDED', { device: r.id, tap: r.tap, bridge: r.bridge, ms });
  // in the definition's order, as they were plugged one by one before
  return defined.map((n) => added.find((r) => r.id === n.id)!);
}

/** What a planned NIC takes from the VM, for the plans after it: its slot and its id. */
function take(live: LiveVm, plan: AddPlan): void {
  live.free = live.free.filter((f) => !(f.bus === plan.bus && Number(f.addr) === Number(plan.addr)));
  live.freeSlots = live.free.length;
  live.deviceIds.add(plan.id);
}
