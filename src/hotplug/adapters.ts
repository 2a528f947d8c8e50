/**
 * The real implementations of the ports in context.ts: a record kept in the state directory or
 * none (a VM given by --qmp), and the Linux host (sysfs reads, `ip -j`, one long-lived batch ip).
 */
import { IpBatch } from '../host/ip-batch.js';
import {
  findBinary,
  findIp,
  ipBinary,
  isBridge,
  linkExists,
  linkMtu,
  readLink,
  tunFlags,
  showLink,
  showLinks,
  vhostNetUsable,
  VHOST_NET,
} from '../host/ip.js';
import { findOfctl } from '../host/openflow.js';
import { readTap } from '../host/tap.js';
import { type Credentials, whyCannotOpen } from '../host/users.js';
import { showQdiscs, tcBatch, tcBinary } from '../host/tc.js';
import type { NicDefinition, NicRecord, NicState } from '../model/nic.js';
import type { DefinitionStore } from '../qemu/definition.js';
import { type StateStore, type VmRecord, qemuAlive } from '../qemu/state.js';
import { pollUntil } from '../util/time.js';
import type { HostPort, RecordPort } from './context.js';

/** A VM started by mq-hotplug: its record in the state directory, its lock. */
export class StoredRecord implements RecordPort {
  readonly keeps = true;

  constructor(
    private readonly store: StateStore,
    private readonly name: string,
    private readonly definitions?: DefinitionStore,
  ) {}

  defineNic(nic: NicDefinition): void {
    this.definitions?.update(this.name, (d) => {
      const at = d.nics.findIndex((n) => n.id === nic.id);
      if (at < 0) d.nics.push(nic);
      else d.nics[at] = nic;
    });
  }

  undefineNic(id: string): void {
    this.definitions?.update(this.name, (d) => (d.nics = d.nics.filter((n) => n.id !== id)));
  }

  read(): VmRecord | undefined {
    return this.store.read(this.name);
  }

  private update(change: (r: VmRecord) => void): void {
    const record = this.read();
    if (!record) return;
    change(record);
    this.store.write(record);
  }

  saveNic(nic: NicRecord): void {
    this.update((r) => (r.nics = [...r.nics.filter((n) => n.id !== nic.id), nic]));
  }

  forgetNic(id: string): void {
    this.update((r) => (r.nics = r.nics.filter((n) => n.id !== id)));
  }

  markNic(id: string, state: NicState): void {
    this.update((r) => {
      const nic = r.nics.find((n) => n.id === id);
      if (nic) nic.state = state;
    });
  }

  locked<T>(fn: () => Promise<T>): Promise<T> {
    return this.store.withLock(this.name, fn);
  }

  /** A killed QEMU closes its sockets before it is reaped: wait up to 1 s for the pid to go. */
  async qemuExited(): Promise<boolean> {
    const record = this.read();
    if (!record) return false;
    return (await pollUntil(() => !qemuAlive(record), 1000)) === true;
  }
}

/** A VM given by --qmp: nothing is kept about it and no lock is taken; its process is not ours to judge. */
export class UnrecordedVm implements RecordPort {
  readonly keeps = false;
  read(): undefined {
    return undefined;
  }
  saveNic(): void {}
  forgetNic(): void {}
  defineNic(): void {}
  undefineNic(): void {}
  markNic(): void {}
  locked<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }
  async qemuExited(): Promise<boolean> {
    return false;
  }
}

/** This Linux host. The batch ip starts on the first change (or warmUp), never for read-only commands. */
export class LinuxHost implements HostPort {
  private readonly batch = new IpBatch();
  readonly findIp = findIp;
  readonly linkExists = linkExists;
  readonly linkMtu = linkMtu;
  readonly tunFlags = tunFlags;
  readonly tc = tcBatch;
  readonly qdiscs = showQdiscs;

  readonly findOfctl = findOfctl;

  findTc(): string | undefined {
    return findBinary(tcBinary());
  }
  readonly isBridge = isBridge;
  readonly readLink = readLink;
  readonly showLinks = showLinks;
  readonly showLink = showLink;

  vhostNetUsable(who: Credentials): boolean {
    return vhostNetUsable() && whyCannotOpen(who, VHOST_NET, 'rw') === undefined;
  }

  readonly readTap = readTap;

  ip(argv: string[]): Promise<void> {
    return this.batch.run(argv);
  }

  warmUp(): void {
    this.batch.start();
  }

  ipArgv(argv: string[]): string[] {
    return [ipBinary(), ...argv];
  }

  tcArgv(argv: string[]): string[] {
    return [tcBinary(), ...argv];
  }

  close(): void {
    this.batch.close();
  }
}
