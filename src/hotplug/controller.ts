/**
 * A connected VM: its control monitor plus the controller's own events. QEMU has no DEVICE_ADDED,
 * so the controller publishes one (and NIC_BRIDGED, NIC_UNPLUG_PENDING, NIC_REMOVED...) on the same
 * stream as QEMU's events, marked `source: 'controller'`. Reactions (bridging) subscribe to it.
 *
 *   const vm = await Controller.open({ name: 'vm1' });
 *   vm.events$.pipe(ofEvent('DEVICE_ADDED')).subscribe((e) => console.log(e.data.device));
 *   await vm.addNic({ queues: 8, bridge: 'br0' });
 *   await vm.close();
 */
import { type Observable, Subject, type Subscription, merge, share } from 'rxjs';
import { QmpClient } from '../qmp/client.js';
import { type QmpEvent, nowTimestamp } from '../qmp/messages.js';
import { StateError, StateStore, type VmRecord, qemuAlive } from '../qemu/state.js';
import { checkVmName } from '../host/validate.js';
import { startBridging } from './bridging.js';
import { IpBatch } from '../host/ip-batch.js';
import { type AddPlan, type AddRequest, type AddResult, addNic } from './add.js';
import { type RemoveResult, removeNic } from './remove.js';
import { type NicView, listNics } from './nics.js';

export interface OpenOptions {
  /** VM name in the state directory. */
  name?: string;
  /** A control monitor socket of a VM not started by mq-hotplug (takes the place of the name's state). */
  qmp?: string;
  store?: StateStore;
  /** Which of the VM's two monitors: 'control' (one-shot commands) or 'events' (watchers). */
  monitor?: 'control' | 'events';
  greetingTimeoutMs?: number;
  /** Per-command timeout (default 30 s, env MQ_HOTPLUG_QMP_TIMEOUT_MS). */
  commandTimeoutMs?: number;
  /** Start the long-lived ip now, overlapping the QMP connect (for callers about to add a NIC). */
  startIp?: boolean;
}

function envMs(name: string, fallback: number): number {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? value : fallback;
}

export class Controller {
  readonly events$: Observable<QmpEvent>;
  /** The controller's long-lived ip; `add` starts it first thing, so its start-up overlaps the preflight. */
  readonly ip: IpBatch;
  private readonly own = new Subject<QmpEvent>();
  private readonly reactions: Subscription;

  private constructor(
    readonly qmp: QmpClient,
    readonly name: string,
    readonly store: StateStore | undefined,
    ip: IpBatch,
  ) {
    this.ip = ip;
    this.events$ = merge(qmp.events$, this.own).pipe(share());
    this.reactions = startBridging(this);
  }

  static async open(options: OpenOptions): Promise<Controller> {
    const store = options.qmp ? undefined : (options.store ?? new StateStore());
    let target = options.qmp;
    const name = options.name ?? options.qmp ?? '';
    if (!target) {
      checkVmName(name);
      const record = store!.read(name);
      if (!record) throw new StateError(`no VM named '${name}' in ${store!.root} (see 'mq-hotplug vms')`);
      if (!qemuAlive(record)) throw new StateError(`VM '${name}' is not running (its QEMU, pid ${record.pid}, is gone); 'mq-hotplug stop ${name}' cleans up`);
      target = options.monitor === 'events' ? record.eventsQmp : record.qmp;
    }
    const ip = new IpBatch(); // else started by the first add or attach: not for commands that never need it
    if (options.startIp) ip.start();
    let qmp: QmpClient;
    try {
      qmp = await QmpClient.connect(target, {
        greetingTimeoutMs: options.greetingTimeoutMs,
        // a hung QEMU must not hang the controller: every command gets an answer or an error
        commandTimeoutMs: options.commandTimeoutMs ?? envMs('MQ_HOTPLUG_QMP_TIMEOUT_MS', 30_000),
      });
    } catch (e) {
      ip.close();
      throw e;
    }
    return new Controller(qmp, name, store, ip);
  }

  /** The VM's record, read fresh (undefined for a VM given by --qmp). */
  record(): VmRecord | undefined {
    return this.store?.read(this.name);
  }

  /** Changes the record under the caller's lock; no-op for a VM given by --qmp. */
  updateRecord(change: (r: VmRecord) => void): void {
    const record = this.record();
    if (!record || !this.store) return;
    change(record);
    this.store.write(record);
  }

  /** Publishes a controller event here and to the VM's event log (for watchers in other processes). */
  publish(event: string, data: Record<string, unknown>): QmpEvent {
    const e: QmpEvent = { event, data, timestamp: nowTimestamp(), source: 'controller' };
    if (this.store) {
      try {
        this.store.appendEvent(this.name, { ...e, vm: this.name });
      } catch {
        // the event log is a convenience for other processes; losing it must not fail a hot-plug
      }
    }
    this.own.next(e);
    return e;
  }

  /** Hot-plugs a multiqueue NIC (see add.ts); with dryRun, returns the plan and changes nothing. */
  addNic(request: AddRequest): Promise<AddResult | AddPlan> {
    return addNic(this, request);
  }

  /** Hot-unplugs a NIC by id, tap name or MAC (see remove.ts). */
  removeNic(selector: string, timeoutMs?: number): Promise<RemoveResult> {
    return removeNic(this, selector, timeoutMs);
  }

  listNics(): Promise<NicView[]> {
    return listNics(this);
  }

  async close(): Promise<void> {
    this.ip.close();
    this.reactions.unsubscribe();
    this.own.complete();
    await this.qmp.close();
  }

  /** Runs fn under the VM's lock (no lock for a VM given by --qmp). */
  locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.store ? this.store.withLock(this.name, fn) : fn();
  }
}
