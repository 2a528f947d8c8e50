/**
 * A connected VM: a thin facade that builds the hot-plug context (context.ts) from a QMP client,
 * the VM's record and this host, and offers the operations on it. QEMU has no DEVICE_ADDED, so
 * the controller publishes one (and NIC_BRIDGED, NIC_REMOVED..., see events.ts) on the same stream
 * as QEMU's events, marked `source: 'controller'`. Reactions (bridging) subscribe to it.
 *
 *   const vm = await Controller.open({ name: 'vm1' });
 *   vm.events$.pipe(ofEvent('DEVICE_ADDED')).subscribe((e) => console.log(e.data.device));
 *   await vm.addNic({ queues: 8, bridge: 'br0' });
 *   await vm.close();
 */
import fs from 'node:fs';
import path from 'node:path';
import { type Observable, Subject, type Subscription } from 'rxjs';
import { type Credentials, ROOT } from '../host/users.js';
import { QmpClient } from '../qmp/client.js';
import { DefinitionStore } from '../qemu/definition.js';
import { StateError, StateStore, qemuAlive } from '../qemu/state.js';
import { checkVmName } from '../host/validate.js';
import { envMs } from '../util/time.js';
import { type AddPlan, type AddRequest, planNic } from './add/plan.js';
import { type AddResult, addNic } from './add/transaction.js';
import { LinuxHost, StoredRecord, UnrecordedVm } from './adapters.js';
import { HotplugContext } from './context.js';
import type { ControllerEventData, ControllerEventName, VmEvent } from './events.js';
import { type NicView, listNics } from './nics.js';
import { startReconcile } from './reconcile.js';
import { type RemoveResult, removeNic } from './remove.js';

export interface OpenOptions {
  /** VM name in the state directory. */
  name?: string;
  /** A control monitor socket of a VM not started by mq-hotplug (takes the place of the name's state). */
  qmp?: string;
  store?: StateStore;
  /** Where saved definitions live (default: MQ_HOTPLUG_CONFIG_DIR or /var/lib/mq-hotplug). */
  definitions?: DefinitionStore;
  /** Which of the VM's two monitors: 'control' (one-shot commands) or 'events' (watchers). */
  monitor?: 'control' | 'events';
  greetingTimeoutMs?: number;
  /** Per-command timeout (default 30 s, env MQ_HOTPLUG_QMP_TIMEOUT_MS). */
  commandTimeoutMs?: number;
  /**
   * Only reads (nics, a QMP passthrough): no batch ip ahead of a first change. Otherwise it starts
   * at open, while QEMU's greeting is on its way: a tap is made before netdev_add, so ip's start (a
   * fork that blocks this thread for 4-8 ms here) would else lie on the first add's path.
   */
  readOnly?: boolean;
  /** The host's ports to share (the agent's, one batch ip for every VM); not closed with the controller. */
  host?: LinuxHost;
}

/** A controller event of this process, with the controller that published it. */
export interface LocalEvent {
  vm: string;
  from: Controller;
  event: VmEvent;
}

/**
 * Every controller event published in this process: other processes read them from the VM's
 * event log, but a log reader skips its own process's lines, so the agent's watcher of a VM learns
 * of an add that the agent ran for a client from here.
 */
export const localEvents$ = new Subject<LocalEvent>();

let processHost: LinuxHost | undefined;
/** The host's ports every controller of this process opens with (the agent: one batch ip for all). */
export function shareHost(host: LinuxHost | undefined): void {
  processHost = host;
}
/** The host's ports this process shares, where it does (the agent). */
export const sharedHost = (): LinuxHost | undefined => processHost;

export class Controller {
  /** QEMU's events and the controller's own, hot and shared. */
  readonly events$: Observable<VmEvent>;
  /** The ports the hot-plug functions work through (for callers of add/, remove.ts ... directly). */
  readonly context: HotplugContext;

  private constructor(
    readonly qmp: QmpClient,
    readonly name: string,
    private readonly host: LinuxHost,
    private readonly sharedHost: boolean,
    store: StateStore | undefined,
    definitions: DefinitionStore | undefined,
    qemu: { user: Credentials; vmKey: string },
  ) {
    this.context = HotplugContext.open({
      vm: name,
      qmp,
      qemuEvents$: qmp.events$,
      record: store ? new StoredRecord(store, name, definitions) : new UnrecordedVm(),
      host,
      qemuUser: qemu.user,
      vmKey: qemu.vmKey,
      // to the VM's event log too, for watchers in other processes
      log: store
        ? (e) => {
            store.appendEvent(name, { ...e, vm: name });
            localEvents$.next({ vm: name, from: this, event: e });
          }
        : undefined,
    });
    this.events$ = this.context.events$;
  }

  static async open(options: OpenOptions): Promise<Controller> {
    const store = options.qmp ? undefined : (options.store ?? new StateStore());
    let target = options.qmp;
    const name = options.name ?? options.qmp ?? '';
    let user: Credentials | undefined;
    if (!target) {
      checkVmName(name);
      const record = store!.read(name);
      if (!record) throw new StateError(`no VM named '${name}' in ${store!.root} (see 'mq-hotplug vms')`);
      if (!qemuAlive(record))
        throw new StateError(
          `VM '${name}' is not running (its QEMU, pid ${record.pid}, is gone); 'mq-hotplug stop ${name}' cleans up`,
        );
      target = options.monitor === 'events' ? record.eventsQmp : record.qmp;
      user = record.user ?? ROOT; // a record from before users were kept: QEMU ran as root
    }
    const shared = options.host ?? processHost;
    const host = shared ?? new LinuxHost();
    let qmp: QmpClient;
    try {
      const connecting = QmpClient.connect(target, {
        greetingTimeoutMs: options.greetingTimeoutMs,
        // a hung QEMU must not hang the controller: every command gets an answer or an error
        commandTimeoutMs: options.commandTimeoutMs ?? envMs('MQ_HOTPLUG_QMP_TIMEOUT_MS', 30_000),
      });
      if (!options.readOnly) host.warmUp();
      qmp = await connecting;
    } catch (e) {
      if (!shared) host.close();
      throw e;
    }
    const qemu = {
      // a QEMU given by --qmp: it made its socket, so the socket's owner is who it runs as
      user: user ?? socketOwner(target),
      vmKey: store ? store.vmDir(name) : path.resolve(target),
    };
    const definitions = store ? (options.definitions ?? new DefinitionStore()) : undefined;
    return new Controller(qmp, name, host, shared !== undefined, store, definitions, qemu);
  }

  /** Publishes a controller event here and to the VM's event log (for watchers in other processes). */
  publish<K extends ControllerEventName>(event: K, data: ControllerEventData[K]): void {
    this.context.publish(event, data);
  }

  /** What an add would do, with every check made; changes nothing (the dry run). */
  planNic(request: AddRequest): Promise<AddPlan> {
    return planNic(this.context, request);
  }

  /** Hot-plugs a multiqueue NIC (see add/transaction.ts). */
  addNic(request: AddRequest): Promise<AddResult> {
    return addNic(this.context, request);
  }

  /** Hot-unplugs a NIC by id, tap name or MAC (see remove.ts). */
  removeNic(selector: string, timeoutMs?: number, options?: { persist?: boolean }): Promise<RemoveResult> {
    return removeNic(this.context, selector, timeoutMs, options);
  }

  listNics(): Promise<NicView[]> {
    return listNics(this.context);
  }

  /** The reconcile reactions (see reconcile.ts), on this VM's events or another stream of them. */
  startReconcile(
    events$: Observable<VmEvent> = this.events$,
    periodMs?: number,
    kick$?: Observable<unknown>,
  ): Subscription {
    return startReconcile(this.context, events$, periodMs, kick$);
  }

  /** Runs fn under the VM's lock (no lock for a VM given by --qmp). */
  locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.context.record.locked(fn);
  }

  async close(): Promise<void> {
    if (!this.sharedHost) this.host.close();
    this.context.close();
    await this.qmp.close();
  }
}

/** Who made a socket (its owner's uid and gid): for a QEMU's own QMP socket, who QEMU runs as. */
function socketOwner(socket: string): Credentials {
  const st = fs.statSync(socket);
  return { uid: st.uid, gid: st.gid, groups: [] };
}
