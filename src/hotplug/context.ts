/**
 * The narrow ports hot-plug logic works through, and the context that carries them. add, remove,
 * nics, apply and reconcile take a HotplugContext and nothing else: what they may touch is what
 * these interfaces offer. The Controller (controller.ts) opens one on a QMP client, the state store
 * and this host; unit tests open one on in-memory fakes (test/helpers/ports.ts), with no root and
 * no QEMU.
 *
 * A context comes with its reactions: `HotplugContext.open` starts the bridging reaction (an add
 * waits for it) and `close` stops it, so no caller can have the one without the other. And every
 * event reaches its subscribers outside the publisher's lock (qemu/lock.ts): a reaction that takes
 * the VM's lock waits for the operation that published its event.
 */
import { Observable, type Subscription, Subject, map, merge, share } from 'rxjs';
import type { LinkInfo } from '../host/ip.js';
import { type TapInfo, tapMark } from '../host/tap.js';
import { type Credentials, ROOT } from '../host/users.js';
import type { Qdisc } from '../host/tc.js';
import type { NicDefinition, NicRecord, NicState } from '../model/nic.js';
import { type QmpEvent, nowTimestamp } from '../qmp/messages.js';
import { type QemuCapabilities, type QemuVersion, capabilitiesOf } from '../qemu/capabilities.js';
import { outsideLocks } from '../qemu/lock.js';
import type { VmRecord } from '../qemu/state.js';
import { startBridging } from './bridging.js';
import type { ControllerEvent, ControllerEventData, ControllerEventName, Publish, VmEvent } from './events.js';
import type { NetworkBackend } from './network/backend.js';
import { HostNetwork } from './network/host-network.js';
import { OwnedTap, type TapSource } from './network/tap-source.js';

/** The VM's control monitor. */
export interface QmpPort {
  execute<T = unknown>(command: string, args?: object): Promise<T>;
  /** False once the connection is lost: nothing more can be sent. */
  readonly isReady: boolean;
  /** QEMU's version from its greeting, where known. */
  readonly version?: QemuVersion;
}

/**
 * What is kept about the VM. Two implementations: a VM started by mq-hotplug (its record in the
 * state directory, its lock) and a VM given by --qmp (nothing kept, no lock).
 */
export interface RecordPort {
  /** The record, read fresh; undefined for a VM whose record is not ours. */
  read(): VmRecord | undefined;
  /** True where NICs are recorded (a NIC missing from the record is then drift). */
  readonly keeps: boolean;
  /** Adds the NIC, or replaces the one with its id. */
  saveNic(nic: NicRecord): void;
  forgetNic(id: string): void;
  /** Keeps the NIC in the VM's definition (or replaces it there), where the VM has one. */
  defineNic(nic: NicDefinition): void;
  /** Drops the NIC from the VM's definition, where the VM has one. */
  undefineNic(id: string): void;
  /** Marks a recorded NIC's state. */
  markNic(id: string, state: NicState): void;
  /** Runs fn holding the VM's lock (serializes operations on one VM). */
  locked<T>(fn: () => Promise<T>): Promise<T>;
  /** True when the VM's QEMU process is known to be gone (waits briefly); false when not ours to judge. */
  qemuExited(): Promise<boolean>;
}

/** The host's links: reads (sysfs, `ip -j`) and the changes made through the long-lived ip. */
export interface HostPort {
  /** Where `ip` (or `tc`) would run from, or undefined when it is not installed. */
  findIp(): string | undefined;
  findTc(): string | undefined;
  /** Where `ovs-ofctl` would run from (a rate limit on an OVS bridge needs it). */
  findOfctl(): string | undefined;
  linkExists(name: string): boolean;
  linkMtu(name: string): number | undefined;
  /** A tun/tap device's flags (IFF_*), or undefined when the link is not one. */
  tunFlags(name: string): number | undefined;
  isBridge(name: string): boolean;
  /** /dev/vhost-net opens, and `who` (QEMU's credentials) may open it. */
  vhostNetUsable(who: Credentials): boolean;
  /** A tap's owner and mark (host/tap.ts), or undefined when the link is not a tun/tap. */
  readTap(name: string): TapInfo | undefined;
  /** MAC, MTU, master and up from sysfs, no exec (multiQueue and queue counts need showLink). */
  readLink(name: string): LinkInfo | undefined;
  showLinks(): Promise<Map<string, LinkInfo>>;
  showLink(name: string): Promise<LinkInfo | undefined>;
  /** One `ip` command (argv without "ip"), through the long-lived batch ip. */
  ip(argv: string[]): Promise<void>;
  /** tc lines (argv without "tc"), all in one tc process; `force` goes on past failures. */
  tc(lines: string[][], options?: { force?: boolean }): Promise<void>;
  /** Every qdisc on the host, by device. */
  qdiscs(): Promise<Map<string, Qdisc[]>>;
  /** Starts the batch ip now, so its start-up overlaps other work. */
  warmUp(): void;
  /** The argv shown to a user for an ip or tc command (dry run). */
  ipArgv(argv: string[]): string[];
  tcArgv(argv: string[]): string[];
}

/** What a context is opened on. */
export interface ContextParts {
  /** The VM's name (or, for a --qmp VM, its label). */
  vm: string;
  qmp: QmpPort;
  /** QEMU's events, as the monitor delivers them. */
  qemuEvents$: Observable<QmpEvent>;
  record: RecordPort;
  host: HostPort;
  /** Default: Linux and Open vSwitch bridges on `host` (network/host-network.ts). */
  network?: NetworkBackend;
  /** Who the VM's QEMU runs as (default root): its taps are owned by it, vhost is judged for it. */
  qemuUser?: Credentials;
  /** Names the VM on this host, in the mark of its taps (default: the VM's name). */
  vmKey?: string;
  /** Default: taps made by mq-hotplug, owned by qemuUser's uid. */
  taps?: TapSource;
  /** Where each controller event goes besides the stream (the VM's event log, for other processes). */
  log?: (event: ControllerEvent) => void;
}

export class HotplugContext {
  readonly vm: string;
  readonly qmp: QmpPort;
  readonly record: RecordPort;
  readonly host: HostPort;
  readonly network: NetworkBackend;
  readonly taps: TapSource;
  /** Who the VM's QEMU runs as. */
  readonly qemuUser: Credentials;
  /** What this QEMU does differently (qemu/capabilities.ts). */
  readonly qemu: QemuCapabilities;
  /** QEMU's events and the controller's, hot and shared. */
  readonly events$: Observable<VmEvent>;
  /** Publishes a controller event on events$ (and to the log). */
  readonly publish: Publish;
  private readonly own = new Subject<ControllerEvent>();
  private readonly reactions: Subscription;

  private constructor(parts: ContextParts) {
    ({ vm: this.vm, qmp: this.qmp, record: this.record, host: this.host } = parts);
    this.network =
      parts.network ?? new HostNetwork(parts.host, { vm: parts.vm, mark: tapMark(parts.vmKey ?? parts.vm) });
    this.qemuUser = parts.qemuUser ?? ROOT;
    this.taps = parts.taps ?? new OwnedTap(parts.host, this.qemuUser.uid, parts.vmKey ?? parts.vm);
    this.qemu = capabilitiesOf(parts.qmp.version);
    const qemu$ = parts.qemuEvents$.pipe(map((e): VmEvent => ({ ...e, source: 'qemu' })));
    this.events$ = merge(qemu$, this.own).pipe(deliverOutsideLocks(), share());
    const log = parts.log;
    this.publish = <K extends ControllerEventName>(event: K, data: ControllerEventData[K]) => {
      const e = { event, data, timestamp: nowTimestamp(), source: 'controller' } as ControllerEvent;
      if (log) {
        try {
          log(e);
        } catch {
          // the event log is a convenience for other processes; losing it must not fail a hot-plug
        }
      }
      this.own.next(e);
    };
    this.reactions = startBridging(this);
  }

  /** A context with its bridging reaction running; `close` stops it. */
  static open(parts: ContextParts): HotplugContext {
    return new HotplugContext(parts);
  }

  close(): void {
    this.reactions.unsubscribe();
    this.own.complete();
    this.network.close();
  }
}

/**
 * Each value reaches the subscribers as if no lock were held: a reaction started by an event that
 * an operation published inside its lock (or that arrived on a socket opened inside one) does not
 * inherit that lock, and so queues for it.
 */
function deliverOutsideLocks<T>() {
  return (source: Observable<T>) =>
    new Observable<T>((subscriber) =>
      source.subscribe({
        next: (value) => outsideLocks(() => subscriber.next(value)),
        error: (e: unknown) => subscriber.error(e),
        complete: () => subscriber.complete(),
      }),
    );
}
