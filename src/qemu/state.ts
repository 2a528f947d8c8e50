/**
 * The state directory: one folder per VM. Layout of <root>/<vm>/:
 *   vm.json           the VM record (spec, argv, pid, user, sockets, NICs), written atomically
 *   events.jsonl      the controller's own events, appended, so a watcher in another process sees them
 *   qemu.log          QEMU's stdout and stderr (opened by mq-hotplug)
 *   qemu/             QEMU's own directory, 0700, owned by the user QEMU runs as:
 *     qmp.sock        control monitor (add, remove, nics, stop)
 *     events.sock     events monitor (watch, agent)
 *     serial.sock, serial.log   the guest's console, where asked for
 * mq-hotplug's files are root's, 0600. The root and each VM's folder are 0711: QEMU's user can pass
 * through them to its own directory, no one but root can list them or read what is in them.
 * Nothing is created through a symlink, and a root owned by another user or writable by others is
 * refused.
 */
import fs from 'node:fs';
import path from 'node:path';
import { StateError } from '../errors.js';
import { envMs } from '../util/time.js';
import { appendLine } from './eventlog.js';
import { lockKey, withVmLock } from './lock.js';
import { type NicRecord, recordNicFromJson } from '../model/nic.js';
import type { VmPaths, VmSpec } from './spec.js';
import type { QemuUser } from './vm-user.js';

export { StateError };
export type { NicRecord };

export const STATE_VERSION = 1;

export interface VmRecord extends VmPaths {
  version: number;
  name: string;
  spec: VmSpec;
  argv: string[];
  pid: number;
  startedAt: string;
  accelReason: string;
  /** QEMU's version from its greeting at start ("7.2.22"); absent in records from before it was kept */
  qemuVersion?: string;
  /** Who QEMU runs as; absent in records from before it was kept (root) */
  user?: QemuUser;
  nics: NicRecord[];
}

export function defaultStateRoot(): string {
  return process.env.MQ_HOTPLUG_STATE_DIR ?? '/run/mq-hotplug';
}

/** Creates (or checks) a root-only directory; refuses symlinks, foreign owners and loose modes. */
export function ensurePrivateDir(dir: string, mode = 0o700): void {
  try {
    fs.mkdirSync(dir, { mode });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') {
      ensurePrivateDir(path.dirname(dir)); // parent first, then this one
      return ensurePrivateDir(dir, mode);
    }
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
  }
  const st = fs.lstatSync(dir);
  if (!st.isDirectory())
    throw new StateError(`state directory ${dir} is not a directory (a symlink or file is refused)`);
  refuseIfNotOurs(st, `state directory ${dir}`);
  if ((st.mode & 0o777) !== mode) fs.chmodSync(dir, mode);
}

/** Directories QEMU's user passes through (enter, not list) on the way to its own. */
const PASS_THROUGH = 0o711;

/** Refuses a file or directory that another uid owns or others can write: someone could have planted it. */
export function refuseIfNotOurs(st: fs.Stats, what: string): void {
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new StateError(`${what} is owned by uid ${st.uid}, not by us (uid ${uid}); refusing it`);
  if (st.mode & 0o022)
    throw new StateError(`${what} is writable by others (mode ${(st.mode & 0o777).toString(8)}); refusing it`);
}

export class StateStore {
  constructor(readonly root = defaultStateRoot()) {}

  vmDir(name: string): string {
    return path.join(this.root, name);
  }

  paths(name: string): VmPaths {
    const dir = this.vmDir(name);
    const qemuDir = path.join(dir, 'qemu');
    return {
      dir,
      qemuDir,
      qmp: path.join(qemuDir, 'qmp.sock'),
      eventsQmp: path.join(qemuDir, 'events.sock'),
      log: path.join(dir, 'qemu.log'),
      serialSocket: path.join(qemuDir, 'serial.sock'),
      serialLog: path.join(qemuDir, 'serial.log'),
    };
  }

  /** Creates (or checks) the root: refused where it is a symlink, another user's or writable by others. */
  prepareRoot(): void {
    ensurePrivateDir(this.root, PASS_THROUGH);
  }

  /** Creates the VM's directories, QEMU's own owned by `owner` (emptied of what an earlier QEMU left). */
  createVmDir(name: string, owner: { uid: number; gid: number } = { uid: 0, gid: 0 }): VmPaths {
    ensurePrivateDir(this.root, PASS_THROUGH);
    ensurePrivateDir(this.vmDir(name), PASS_THROUGH);
    const paths = this.paths(name);
    fs.rmSync(paths.qemuDir, { recursive: true, force: true });
    fs.mkdirSync(paths.qemuDir, { mode: 0o700 });
    fs.chownSync(paths.qemuDir, owner.uid, owner.gid);
    return paths;
  }

  read(name: string): VmRecord | undefined {
    let text: string;
    try {
      text = readPrivate(path.join(this.vmDir(name), 'vm.json'));
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    let record: VmRecord;
    try {
      record = JSON.parse(text) as VmRecord;
    } catch {
      throw new StateError(`${this.vmDir(name)}/vm.json is not valid JSON; remove the directory to forget the VM`);
    }
    if (record.version !== STATE_VERSION) {
      throw new StateError(
        `${this.vmDir(name)}/vm.json has state version ${String(record.version)}, this mq-hotplug reads version ${STATE_VERSION}; ` +
          `stop the VM with the version that started it, or remove the directory`,
      );
    }
    record.nics = (record.nics ?? []).map(recordNicFromJson);
    return record;
  }

  /** The record, or undefined where there is none or it cannot be read (for code that replaces it anyway). */
  readIfValid(name: string): VmRecord | undefined {
    try {
      return this.read(name);
    } catch (e) {
      if (e instanceof StateError || (e as NodeJS.ErrnoException).code !== undefined) return undefined;
      throw e;
    }
  }

  write(record: VmRecord): void {
    writePrivateAtomic(path.join(this.vmDir(record.name), 'vm.json'), JSON.stringify(record, null, 2) + '\n');
  }

  list(): string[] {
    try {
      return fs
        .readdirSync(this.root, { withFileTypes: true })
        .filter((d) => d.isDirectory())
        .map((d) => d.name)
        .sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
  }

  remove(name: string): void {
    fs.rmSync(this.vmDir(name), { recursive: true, force: true });
  }

  /**
   * Runs `fn` holding the VM's lock (lock.ts): operations on one VM are serialized, within this
   * process and across processes; VMs proceed in parallel. A holder that dies releases it.
   */
  withLock<T>(name: string, fn: () => Promise<T>, timeoutMs = envMs('MQ_HOTPLUG_LOCK_TIMEOUT_MS', 60_000)): Promise<T> {
    return withVmLock(lockKey(this.root, name), fn, timeoutMs, `VM '${name}'`);
  }

  eventLogPath(name: string): string {
    return path.join(this.vmDir(name), 'events.jsonl');
  }

  /** Appends one line to the VM's controller event log (for watchers in other processes). */
  appendEvent(name: string, event: object): void {
    appendLine(this.eventLogPath(name), JSON.stringify({ ...event, pid: process.pid }));
  }
}

function safeRead(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    return '';
  }
}

function readPrivate(file: string): string {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
  try {
    return fs.readFileSync(fd, 'utf8');
  } finally {
    fs.closeSync(fd);
  }
}

/** Write to a fresh temporary file (O_EXCL, never through a symlink), then rename over the target. */
export function writePrivateAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  removeIfThere(tmp);
  const fd = fs.openSync(
    tmp,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW,
    0o600,
  );
  try {
    fs.writeSync(fd, text);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** unlink, where a missing file is fine (not fs.rmSync, which loads a module on every CLI start). */
export function removeIfThere(file: string): void {
  try {
    fs.unlinkSync(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}

/** True while the process exists and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** The record's QEMU is alive: its pid exists and is the QEMU with our monitor (guards against pid reuse). */
export function qemuAlive(record: Pick<VmRecord, 'pid' | 'qmp'>): boolean {
  if (!pidAlive(record.pid)) return false;
  return safeRead(`/proc/${record.pid}/cmdline`).includes(record.qmp);
}
