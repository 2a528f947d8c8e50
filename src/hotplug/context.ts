/**
 * The narrow ports hot-plug logic works through. add, remove, nics, bridging and reconcile take a
 * HotplugContext and nothing else: what they may touch is what these interfaces offer. The
 * Controller (controller.ts) builds one from a QMP client, the state store and the host; unit tests
 * build one from in-memory fakes (test/helpers/ports.ts), with no root and no QEMU.
 */
import type { Observable } from 'rxjs';
import type { LinkInfo } from '../host/ip.js';
import type { Qdisc } from '../host/tc.js';
import type { NicDefinition } from '../qemu/definition.js';
import type { NicRecord, VmRecord } from '../qemu/state.js';
import type { Publish, VmEvent } from './events.js';

/** The VM's control monitor. */
export interface QmpPort {
  execute<T = unknown>(command: string, args?: object): Promise<T>;
  /** False once the connection is lost: nothing more can be sent. */
  readonly isReady: boolean;
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
  markNic(id: string, state: NicRecord['state']): void;
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
  linkExists(name: string): boolean;
  linkMtu(name: string): number | undefined;
  /** A tun/tap device's flags (IFF_*), or undefined when the link is not one. */
  tunFlags(name: string): number | undefined;
  isBridge(name: string): boolean;
  vhostNetUsable(): boolean;
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

export interface HotplugContext {
  /** The VM's name (or, for a --qmp VM, its label). */
  readonly vm: string;
  readonly qmp: QmpPort;
  /** QEMU's events and the controller's, hot and shared. */
  readonly events$: Observable<VmEvent>;
  readonly record: RecordPort;
  readonly host: HostPort;
  readonly publish: Publish;
}
