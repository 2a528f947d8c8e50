/**
 * A VM being watched: its events monitor open and every event of the VM on one stream: QEMU's,
 * this controller's, those of other controllers of this process (localEvents$) and those of other
 * processes (the VM's event log); with `reconcile`, the reactions of reconcile.ts on it. `watch`,
 * `agent VM` and the host agent (agent/) each hold one per VM.
 *
 *   const w = await watchVm({ name: 'vm1', store, monitor: 'events' }, { reconcile: true });
 *   w.events$.subscribe(print);
 *   console.log(await w.ended); // 'the VM shut down'
 */
import { EMPTY, type Observable, filter, map, merge, share } from 'rxjs';
import { DefinitionStore } from '../qemu/definition.js';
import { tailEventLog } from '../qemu/eventlog.js';
import { forgetDeadExternal, forgetDeadVm } from '../qemu/launcher.js';
import { type StateStore, qemuAlive } from '../qemu/state.js';
import { Controller, type OpenOptions, localEvents$ } from './controller.js';
import type { VmEvent } from './events.js';
import { recoverAdds } from './add/recovery.js';

export interface WatchedVm {
  readonly name: string;
  readonly controller: Controller;
  /** Hot: what happens from the subscription on. */
  readonly events$: Observable<VmEvent>;
  /** Resolves when the monitor closes, with why, as a watcher prints it. */
  readonly ended: Promise<string>;
  close(): Promise<void>;
}

export interface WatchOptions {
  /** The reactions of reconcile.ts (finish the guest's unplugs, put drifted taps right). */
  reconcile?: boolean;
  /** How often the taps are checked besides on events and kicks. */
  periodMs?: number;
  /** A check of the taps now (the host agent's link monitor saw one of this VM's taps change). */
  kick$?: Observable<unknown>;
  /** Finish or undo adds that a dead process left half-made, first (the host agent, picking a VM up). */
  recover?: boolean;
}

export async function watchVm(open: OpenOptions, o: WatchOptions = {}): Promise<WatchedVm> {
  const controller = await Controller.open({ ...open, readOnly: !o.reconcile });
  const { name } = controller;
  const store = open.qmp ? undefined : open.store;
  const fromHere$ = localEvents$.pipe(
    filter((l) => l.vm === name && l.from !== controller),
    map((l) => l.event),
  );
  const fromOthers$ = store
    ? tailEventLog<VmEvent>(store.eventLogPath(name)).pipe(filter((e) => e.pid !== process.pid))
    : EMPTY;
  const events$ = merge(controller.events$, fromHere$, fromOthers$).pipe(share());
  let lastEvent = '';
  const tracking = controller.events$.subscribe((e) => (lastEvent = e.event));
  if (o.recover && store) await controller.locked(() => recoverAdds(controller.context)).catch(() => {});
  const reacting = o.reconcile ? controller.startReconcile(controller.events$, o.periodMs, o.kick$) : undefined;
  const ended = controller.qmp.closed.then((reason) =>
    lastEvent === 'SHUTDOWN' ? 'the VM shut down' : `its QMP connection closed${reason ? ` (${reason.message})` : ''}`,
  );
  return {
    name,
    controller,
    events$,
    ended,
    async close() {
      tracking.unsubscribe();
      reacting?.unsubscribe();
      await controller.close();
    },
  };
}

/**
 * After a watched VM's monitor closed: where its QEMU is gone, what it left is deleted (taps, OVS
 * ports, ifbs, serial link, state; its user if it is not defined). Returns what was said, if anything.
 */
export async function cleanUpAfter(
  open: { name: string; store?: StateStore; qmp?: string },
  definitions = new DefinitionStore(),
): Promise<string | undefined> {
  if (open.store) {
    const record = open.store.read(open.name);
    if (record && !qemuAlive(record)) await forgetDeadVm(open.store, record, open.name, definitions);
    return undefined;
  }
  if (!open.qmp) return undefined;
  // a QEMU of the user's own (seed recipe): its persistent taps and ports are ours to take
  const gone = await forgetDeadExternal(open.qmp); // the taps carry the control socket's mark
  return gone.length ? `${open.name}: its QEMU is gone; deleted ${gone.join(', ')}` : undefined;
}

/** The host agent's watchers, where this process is the agent: a `watch` run for a client borrows its VM's. */
export interface Watchers {
  /** Whether its watchers reconcile (agent --no-reconcile: they do not, and a `watch --reconcile` does). */
  readonly reconciles: boolean;
  /** The state and config directories of its VMs: a command for others opens its own controller. */
  readonly roots: { state: string; config: string };
  /** The VM's watcher, opened now where the VM runs and none is open; throws as Controller.open does. */
  borrow(name: string): Promise<WatchedVm>;
}

let agentWatchers: Watchers | undefined;
export const watchers = (): Watchers | undefined => agentWatchers;
export function setWatchers(w: Watchers | undefined): void {
  agentWatchers = w;
}
