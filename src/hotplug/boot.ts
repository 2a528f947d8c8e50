/**
 * Starting a defined VM, as libvirt starts one: every saved NIC that has its slot goes on QEMU's
 * command line, at that slot with its saved MAC, tap and id, so the guest finds its NICs at boot
 * where they were and gives them the same names. Their taps are made (owned by QEMU's user,
 * marked) and set up on their bridges before QEMU is spawned, planned and checked as an add plans
 * them; QEMU runs only if it opened every one, and its record starts with them all active. A NIC
 * on the command line costs QEMU a third of a hot-plug (bench: 28 NICs, the raw start).
 *
 * A NIC without a saved slot yet, or with a rate on a Linux bridge (its ifb's name is the first
 * free one on the host, which only an ifb that exists takes away), is plugged the other way: QEMU
 * starts paused (-S), the NIC is added as a hot-plug is, then the VM runs (`cont`). Where QEMU
 * refuses its command line (a saved slot that a --qemu-arg device took), the start is made again
 * that way, so the error names the NIC and what is wrong with it.
 *
 * A NIC that cannot come back (its bridge is gone, its tap name is taken) stops the start; the
 * error names the NIC; nothing is left running or half-made. A crash after the taps are made and
 * before QEMU's record is written leaves marked taps (and OVS ports), which the VM's next start
 * deletes, as it deletes what a dead QEMU left.
 */
import { EMPTY } from 'rxjs';
import { type NicDefinition, definitionOf, nicOf, recordOf, requestOfDefinition } from '../model/nic.js';
import type { DefinitionStore, VmDefinition } from '../qemu/definition.js';
import { type LaunchNics, QemuStartError, StartError, startVm, stopVm } from '../qemu/launcher.js';
import type { StateStore, VmRecord } from '../qemu/state.js';
import type { QemuUser } from '../qemu/vm-user.js';
import type { VmSpec } from '../qemu/spec.js';
import { type AddPlan, planNic } from './add/plan.js';
import { commandLineOf } from './add/qemu-args.js';
import { type AddResult, executeAdd } from './add/transaction.js';
import { LinuxHost, UnrecordedVm } from './adapters.js';
import { HotplugContext, type QmpPort } from './context.js';
import { sharedHost } from './controller.js';
import { type LiveVm, inspectVm } from './inspect.js';
import { nowTimestamp } from '../qmp/messages.js';
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
  return store.withLock(def.name, async () => {
    const onCommandLine = def.nics.filter((n) => n.bus !== undefined && n.rate === undefined);
    try {
      return await boot(store, def, onCommandLine, open, definitions);
    } catch (e) {
      // QEMU refused its command line (what was made for the NICs is taken back): the other way
      if (!(e instanceof QemuStartError) || !onCommandLine.length) throw e;
      return boot(store, def, [], open, definitions);
    }
  });
}

async function boot(
  store: StateStore,
  def: VmDefinition,
  onCommandLine: NicDefinition[],
  open: () => Promise<OpenedVm>,
  definitions?: DefinitionStore,
): Promise<{ record: VmRecord; nics: AddResult[] }> {
  const plugged = def.nics.filter((n) => !onCommandLine.includes(n));
  const shared = sharedHost();
  const host = shared ?? new LinuxHost();
  let made: MadeNics | undefined;
  let record: VmRecord;
  try {
    if (onCommandLine.length) host.warmUp(); // the taps are its first work: its fork overlaps the user's lookup
    record = await startVm(store, def.spec, {
      paused: plugged.length > 0,
      definitions,
      nics: onCommandLine.length
        ? async (user) => (made = await makeNics(store, def, onCommandLine, host, user))
        : undefined,
    });
  } finally {
    made?.context.close();
    if (!shared) host.close();
  }
  const atStart = made?.results ?? [];
  if (atStart.length) {
    const ms = monotonicMs() - made!.started;
    for (const r of atStart)
      store.appendEvent(def.name, {
        ...{ event: 'NIC_ADDED', data: { device: r.id, tap: r.tap, bridge: r.bridge, ms } },
        ...{ timestamp: nowTimestamp(), source: 'controller', vm: def.name },
      });
    // a NIC's definition as placed (an OVS port's iface-id where an old definition had none)
    definitions?.update(def.name, (d) => {
      for (const r of atStart) {
        const at = d.nics.findIndex((n) => n.id === r.id);
        if (at >= 0) d.nics[at] = definitionOf(r);
      }
    });
  }
  if (!plugged.length) return { record, nics: atStart };
  const stop = () => stopVm(store, def.name, undefined, definitions).catch(() => {});
  const vm = await open().catch(async (e: unknown) => {
    await stop();
    throw e;
  });
  let nics: AddResult[];
  let current: NicDefinition | undefined;
  try {
    nics = await plugAll(vm.context, plugged, (n) => (current = n));
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
  const byId = new Map([...atStart, ...nics].map((r) => [r.id, r]));
  return { record: store.read(def.name) ?? record, nics: def.nics.map((n) => byId.get(n.id)!) };
}

/** What was made on the host for the NICs of QEMU's command line. */
interface MadeNics extends LaunchNics {
  context: HotplugContext;
  results: AddResult[];
  started: number;
}

/** The monitor of a QEMU that is not spawned yet: planning a NIC for its command line asks QEMU nothing. */
const NOT_SPAWNED: QmpPort = {
  isReady: false,
  execute: () => Promise.reject(new Error('QEMU is not started yet')),
};

/**
 * Plans each NIC against the VM as its command line makes it (no device but the root ports; each
 * NIC's saved slot free), with every check an add makes, and makes their taps, side by side; once
 * QEMU is spawned, sets each up on its bridge while QEMU starts (a bridge port's set-up costs as
 * much as the tap's making, and QEMU only needs the tap to exist). A failure names the NIC; what
 * was made is taken back (here, or by the launcher's `undo`).
 */
async function makeNics(
  store: StateStore,
  def: VmDefinition,
  saved: NicDefinition[],
  host: LinuxHost,
  user: QemuUser,
): Promise<MadeNics> {
  const started = monotonicMs();
  const context = HotplugContext.open({
    ...{ vm: def.name, qmp: NOT_SPAWNED, qemuEvents$: EMPTY, record: new UnrecordedVm(), host },
    ...{ qemuUser: user, vmKey: store.vmDir(def.name) },
  });
  const plans: AddPlan[] = [];
  const undo = async () => {
    for (const p of plans) {
      await context.network.detach(p).catch(() => {});
      await context.taps.release(p).catch(() => {});
    }
  };
  const failure = (n: NicDefinition, e: unknown) =>
    new StartError(
      `VM '${def.name}' was not started: its saved NIC '${n.id}' could not be plugged (${(e as Error).message})`,
      { cause: e },
    );
  /** Runs work for every plan at once; the first NIC whose work failed, with its error. */
  const sideBySide = async (work: (p: AddPlan) => Promise<void>) => {
    const done = await Promise.allSettled(plans.map(work));
    const at = done.findIndex((r) => r.status === 'rejected');
    return at < 0 ? undefined : failure(saved[at]!, (done[at] as PromiseRejectedResult).reason);
  };

  const live = asSpawned(def.spec, saved);
  let failed: StartError | undefined;
  for (const n of saved) {
    try {
      const plan = await planNic(context, { ...requestOfDefinition(n), beforeBoot: true, persist: true }, live);
      take(live, plan);
      plans.push(plan);
    } catch (e) {
      failed = failure(n, e);
      break;
    }
  }
  const planned = monotonicMs();
  failed ??= await sideBySide((p) => context.taps.prepare(p));
  if (failed) {
    await undo();
    context.close();
    throw failed;
  }
  const spawned = monotonicMs(); // near enough: QEMU is spawned next
  const results: AddResult[] = plans.map((p) => ({
    ...nicOf(p),
    notes: p.notes,
    timings: { preflight: planned - started, tap: spawned - planned, plug: 0, bridging: 0, confirm: 0, total: 0 },
  }));
  return {
    ...{
      argv: plans.flatMap((p) => commandLineOf(p.commands)),
      records: plans.map((p) => recordOf(nicOf(p), 'active')),
    },
    ...{ context, results, started, undo },
    async whileStarting() {
      const attachFailed = await sideBySide((p) => context.network.attach(p));
      if (attachFailed) throw attachFailed;
      const ready = monotonicMs();
      for (const r of results) Object.assign(r.timings, { bridging: ready - spawned, total: ready - started });
    },
  };
}

/** The VM as its command line makes it, before its NICs: only the saved slots are known to be free. */
function asSpawned(spec: Pick<VmSpec, 'machine' | 'cpus'>, saved: NicDefinition[]): LiveVm {
  const free = saved.map((n) => ({ bus: n.bus!, addr: n.addr ?? '0' }));
  return {
    ...{ q35: spec.machine === 'q35', status: 'prelaunch', running: false, cpus: spec.cpus },
    ...{ deviceIds: new Set<string>(), nicIds: [], free, freeSlots: free.length },
  };
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
