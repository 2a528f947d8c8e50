/**
 * Starting and stopping VMs. QEMU runs detached from the CLI (it must outlive it) with its output in
 * qemu.log; `startVm` returns once QMP is ready (qmp_capabilities answered), and when QEMU fails to
 * start it throws QEMU's own words and leaves no state behind.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { QmpClient } from '../qmp/client.js';
import { QmpBusyError, QmpError } from '../qmp/errors.js';
import { resolveAccel } from './accel.js';
import { type QemuVersion, capabilitiesOf } from './capabilities.js';
import type { StartRequest } from './definition.js';
import type { NicRecord } from '../model/nic.js';
import { type VmSpec, qemuArgv } from './spec.js';
import { STATE_VERSION, StateError, StateStore, type VmRecord, pidAlive, qemuAlive } from './state.js';
import { DefinitionStore } from './definition.js';
import { type QemuUser, deleteVmUser, kvmGroups, resolveQemuUser, runAsArgv } from './vm-user.js';
import { deleteLink, linkExists } from '../host/ip.js';
import { deletePortsMarked } from '../host/ovs-ports.js';
import { TUN_DEVICE, readTap, tapIsOurs, tapMark, tapsMarked } from '../host/tap.js';
import { type Access, whyCannotOpen } from '../host/users.js';
import { checkVmName } from '../host/validate.js';
import { MqHotplugError, UsageError } from '../errors.js';
import { startDetached } from '../host/exec.js';

import { monotonicMs, pollUntil, within } from '../util/time.js';

export class StartError extends MqHotplugError {
  override name = 'StartError';
}

/** QEMU itself did not come up (it exited, or its monitor never answered): its log says why. */
export class QemuStartError extends StartError {}

export type { StartRequest };

export interface StartOptions {
  /** Start with the CPUs stopped (-S): NICs can be plugged before the guest runs; `cont` starts it. */
  paused?: boolean;
  readyTimeoutMs?: number;
  /** The tun device QEMU's user must open (its taps are attached through it). */
  tunDevice?: string;
  /** Where definitions live: a start that fails deletes a user it made only for a VM without one. */
  definitions?: DefinitionStore;
  /**
   * NICs for QEMU's command line, made on the host for QEMU's user once it is known and before
   * QEMU is spawned (boot.ts); their `undo` runs where QEMU then fails to start.
   */
  nics?: (user: QemuUser) => Promise<LaunchNics>;
}

/** NICs on the command line of a starting QEMU. */
export interface LaunchNics {
  argv: string[];
  /** What the record starts with: QEMU runs only with all of them. */
  records: NicRecord[];
  /** Run once QEMU is spawned, beside its start-up (their taps set up on their bridges); the start waits for it. */
  whileStarting(): Promise<void>;
  /** Takes back what was made for them on the host. */
  undo(): Promise<void>;
}

export async function startVm(
  store: StateStore,
  request: StartRequest,
  { paused = false, readyTimeoutMs = 30_000, tunDevice = TUN_DEVICE, definitions, nics }: StartOptions = {},
): Promise<VmRecord> {
  checkVmName(request.name);
  store.prepareRoot(); // a refused state directory is the first thing said
  const existing = store.readIfValid(request.name); // unreadable or from another version: replaced below
  if (existing && qemuAlive(existing)) {
    throw new StartError(
      `VM '${request.name}' is already running (pid ${existing.pid}); stop it first or pick another name`,
    );
  }
  await forgetDeadVm(store, existing, request.name); // stale state from a dead QEMU is not trusted

  const { accel, reason } = resolveAccel(request.accel);
  const spec: VmSpec = { ...request, accel };
  checkSerialPath(spec.serial);
  const { user, madeNow } = await resolveQemuUser(spec.name, spec.runAs, kvmGroups(accel));
  try {
    checkQemuCanOpen(user, spec, store.root, tunDevice);
    const made = await nics?.(user);
    try {
      return await launch(store, spec, user, reason, { paused, readyTimeoutMs, nics: made });
    } catch (e) {
      await made?.undo();
      throw e;
    }
  } catch (e) {
    // a user made for this start goes with it, unless the VM is defined (its definition keeps it)
    if (madeNow && !(definitions ?? new DefinitionStore()).read(spec.name)) await deleteVmUser(spec.name, user.name);
    throw e;
  }
}

async function launch(
  store: StateStore,
  spec: VmSpec,
  user: QemuUser,
  accelReason: string,
  { paused, readyTimeoutMs, nics }: { paused: boolean; readyTimeoutMs: number; nics?: LaunchNics },
): Promise<VmRecord> {
  const paths = store.createVmDir(spec.name, user);
  const argv = [spec.qemu, ...qemuArgv(spec, paths), ...(nics?.argv ?? []), ...(paused ? ['-S'] : [])];
  const command = runAsArgv(user, argv);

  const logFd = fs.openSync(
    paths.log,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
    0o600,
  );
  const oldMask = process.umask(0o077); // QEMU creates its sockets 0600
  let child;
  try {
    child = startDetached(command, logFd);
  } finally {
    process.umask(oldMask);
    fs.closeSync(logFd);
  }
  const exited = new Promise<string>((resolve) => {
    child.on('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit code ${code}`));
    child.on('error', (e) => resolve(e.message));
  });

  try {
    if (child.pid === undefined) throw new QemuStartError(`cannot run '${command[0]}': ${await exited}`);
    const ready = waitForMonitor(paths.qmp, exited, readyTimeoutMs);
    ready.catch(() => {}); // where the NICs' work fails first, QEMU is killed below and this fails too
    const [version] = await Promise.all([ready, nics?.whileStarting()]);
    for (const sock of [paths.qmp, paths.eventsQmp]) fs.chmodSync(sock, 0o600);
    if (spec.serial) linkSerial(spec.serial, paths.serialSocket);
    const record: VmRecord = {
      version: STATE_VERSION,
      name: spec.name,
      spec,
      argv,
      pid: child.pid,
      startedAt: new Date().toISOString(),
      accelReason,
      qemuVersion: capabilitiesOf(version).version,
      user,
      ...paths,
      nics: nics?.records ?? [],
    };
    store.write(record);
    child.unref();
    return record;
  } catch (e) {
    if (child.pid !== undefined && pidAlive(child.pid)) process.kill(child.pid, 'SIGKILL');
    const log = readTail(paths.log);
    store.remove(spec.name);
    if (spec.serial) removeSerialLink(spec.serial);
    if (e instanceof QemuStartError && log) throw new QemuStartError(`QEMU failed to start: ${log}`);
    throw e;
  }
}

/**
 * execa, loaded where a QEMU is asked its version or a hook runs: this module is reached by every
 * command (through boot.ts), and execa's module tree cost an add ~15 ms of its start (bench).
 */
export const loadExeca = () => import('execa');

/**
 * What QEMU's user must open, checked before anything is made: the tun device, the disks (read and
 * write), kernel and initrd, and the way to its directory in the state root. One line names the
 * first it cannot, and what to do; nothing is changed for it (no chown behind the user's back).
 */
function checkQemuCanOpen(user: QemuUser, spec: VmSpec, stateRoot: string, tunDevice: string): void {
  const who = `${user.name} (uid ${user.uid}), the user QEMU of VM '${spec.name}' runs as`;
  const tun = whyCannotOpen(user, tunDevice, 'rw');
  if (tun)
    throw new UsageError(
      `${tunDevice} cannot be opened by ${who} (${tun}): QEMU opens its taps through it; make it 0666, ` +
        `as Debian ships it (chmod 0666 ${tunDevice}: taps mq-hotplug makes have an owner, so no other user ` +
        `can attach to them), or start with --run-as root`,
    );
  const files: [string, string | undefined, Access][] = [
    ['kernel', spec.kernel, 'r'],
    ['initrd', spec.initrd, 'r'],
    ...spec.disks.map((d): [string, string, Access] => ['disk', d, 'rw']),
  ];
  for (const [what, file, access] of files) {
    const why = file === undefined ? undefined : whyCannotOpen(user, file, access);
    if (why)
      throw new UsageError(
        `${what} '${file}' cannot be opened ${access === 'rw' ? 'read-write' : 'for reading'} by ${who} (${why}); ` +
          `give that user access (chown ${user.name}, chgrp or chmod, or setfacl -m u:${user.name}:${access}), or start with --run-as USER`,
      );
  }
  const root = whyCannotOpen(user, path.dirname(path.resolve(stateRoot)), 'traverse');
  if (root)
    throw new UsageError(
      `state directory ${stateRoot} cannot be reached by ${who} (${root}); its sockets live there: ` +
        `let it through (chmod o+x on that directory) or use another MQ_HOTPLUG_STATE_DIR`,
    );
}

/** --serial PATH: a link to the socket in QEMU's directory; refused where PATH holds anything but an old one. */
function checkSerialPath(serial: string | undefined): void {
  if (serial === undefined) return;
  let st: fs.Stats;
  try {
    st = fs.lstatSync(serial);
  } catch {
    return;
  }
  if (!st.isSymbolicLink() && !st.isSocket())
    throw new UsageError(
      `serial socket path '${serial}' is taken by a file that is not a socket; pick another --serial`,
    );
}

function linkSerial(serial: string, socket: string): void {
  removeSerialLink(serial);
  fs.symlinkSync(socket, serial);
}

function removeSerialLink(serial: string): void {
  try {
    const st = fs.lstatSync(serial);
    if (st.isSymbolicLink() || st.isSocket()) fs.unlinkSync(serial);
  } catch {
    // nothing there
  }
}

/** Polls for the monitor socket, then negotiates on it; fails as soon as QEMU exits. Returns QEMU's version. */
async function waitForMonitor(socketPath: string, exited: Promise<string>, timeoutMs: number): Promise<QemuVersion> {
  const deadline = monotonicMs() + timeoutMs;
  let gone: string | undefined;
  exited.then((why) => (gone = why));
  while (monotonicMs() < deadline) {
    if (gone !== undefined) throw new QemuStartError(`QEMU exited during start-up (${gone})`);
    if (fs.existsSync(socketPath)) {
      try {
        const qmp = await QmpClient.connect(socketPath, { greetingTimeoutMs: deadline - monotonicMs() });
        const { version } = qmp;
        await qmp.close();
        return version;
      } catch (e) {
        if (!(e instanceof QmpError)) throw e;
        // not listening yet, or QEMU died in between: loop and look again
      }
    }
    await new Promise((r) => setTimeout(r, 1)); // a stat a ms: QEMU's start-up is 200-300 ms of TCG here
  }
  throw new QemuStartError(`QMP at ${socketPath} was not ready within ${timeoutMs} ms`);
}

function readTail(file: string, maxLines = 20): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-maxLines).join('\n');
  } catch {
    return '';
  }
}

export interface StopResult {
  name: string;
  /** How it ended: 'quit' over QMP, or the signal that had to be sent, or 'already-dead'. */
  how: 'quit' | 'SIGTERM' | 'SIGKILL' | 'already-dead';
}

/**
 * Forgets a VM whose QEMU is gone: what its NICs left on the host (its taps, persistent, their OVS
 * ports and the ifbs of rate limits: every tap and port with its mark, recorded or not), its serial link, its runtime
 * state, and, given `definitions`, the VM's own user where the VM has no definition. The one
 * cleanup for stop, a dead VM seen by watch or the agent, and a start over stale state.
 */
export async function forgetDeadVm(
  store: StateStore,
  record: VmRecord | undefined,
  name = record?.name,
  definitions?: DefinitionStore,
): Promise<void> {
  const mark = name ? tapMark(store.vmDir(name)) : undefined;
  if (mark) await deleteMarked(mark);
  for (const nic of record?.nics ?? []) {
    // an add that died between making its tap and marking it
    const unfinished = { owner: record?.user?.uid ?? 0 };
    if (mark && nic.state === 'adding' && tapIsOurs(readTap(nic.tap), mark, unfinished))
      await deleteLink(nic.tap).catch(() => {});
    if (nic.ifb && linkExists(nic.ifb)) await deleteLink(nic.ifb).catch(() => {});
  }
  if (record?.spec.serial) removeSerialLink(record.spec.serial);
  if (name) store.remove(name);
  if (name && definitions && !definitions.read(name) && record?.user?.made) await deleteVmUser(name, record.user.name);
}

/**
 * What the NICs of a VM with this mark left on the host: its Open vSwitch ports first, while OVS
 * still has the taps (the ports outlive them in OVS's database, across reboots too), then its
 * taps. Returns what went.
 */
async function deleteMarked(mark: string): Promise<string[]> {
  const ports = await deletePortsMarked(mark).catch(() => []);
  const taps: string[] = [];
  for (const tap of tapsMarked(mark))
    if (
      await deleteLink(tap).then(
        () => true,
        () => false,
      )
    )
      taps.push(tap);
  return [...ports.map((p) => `OVS port ${p}`), ...taps.map((t) => `tap ${t}`)];
}

/**
 * A QEMU given by --qmp that is gone: the taps and ports its NICs left (they are persistent, and
 * QEMU was not ours to stop), found by their mark, which is the socket's. Nothing is deleted while
 * the socket still takes connections (that QEMU, or a new one on the same socket, is there).
 */
export async function forgetDeadExternal(socket: string): Promise<string[]> {
  // the monitor closes before QEMU has exited: up to 2 s for its listener to go
  if (!(await pollUntil(async () => !(await socketListens(socket)), 2000, 50))) return [];
  return deleteMarked(tapMark(path.resolve(socket)));
}

/** Whether a unix socket has a listener (QEMU's monitor accepts at the kernel even while it serves another client). */
export function socketListens(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createConnection(socket);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * `quit` over QMP, wait for the monitor's EOF, then signals. The EOF comes at once; a daemonized
 * QEMU's pid can take over a second to vanish where PID 1 reaps orphans late (measured ~1.2 s).
 */
export async function stopVm(
  store: StateStore,
  name: string,
  timeoutMs = 10_000,
  definitions = new DefinitionStore(),
): Promise<StopResult> {
  const record = store.read(name);
  if (!record) throw new StateError(`no VM named '${name}' in ${store.root}`);
  const cleanup = () => forgetDeadVm(store, record, name, definitions);
  if (!qemuAlive(record)) {
    await cleanup();
    return { name, how: 'already-dead' };
  }
  let how: StopResult['how'] = 'quit';
  try {
    const qmp = await QmpClient.connect(record.qmp, { greetingTimeoutMs: Math.min(timeoutMs, 3000) });
    await qmp.execute('quit').catch(() => {}); // QEMU may close before it answers
    const eof = await within(
      qmp.closed.then(() => true),
      timeoutMs,
      false,
    );
    if (!eof) throw new Error('no EOF after quit');
    await qmp.close();
  } catch {
    how = await killPid(record.pid, timeoutMs);
  }
  await cleanup();
  return { name, how };
}

async function killPid(pid: number, timeoutMs: number): Promise<'SIGTERM' | 'SIGKILL'> {
  if (!pidAlive(pid)) return 'SIGTERM';
  process.kill(pid, 'SIGTERM');
  if (await pollUntil(() => !pidAlive(pid), Math.min(timeoutMs, 5000))) return 'SIGTERM';
  process.kill(pid, 'SIGKILL');
  return 'SIGKILL';
}

export type VmState = 'running' | 'paused' | 'dead' | 'busy' | string;

/** Live status: 'dead' from the pid, else query-status over the control monitor ('busy' if held). */
export async function vmState(record: VmRecord): Promise<VmState> {
  if (!qemuAlive(record)) return 'dead';
  try {
    const qmp = await QmpClient.connect(record.qmp, { greetingTimeoutMs: 1000 });
    try {
      const status = await qmp.execute<{ running: boolean; status: string }>('query-status', undefined, {
        timeoutMs: 2000,
      });
      return status.running ? 'running' : status.status === 'paused' ? 'paused' : status.status;
    } finally {
      await qmp.close();
    }
  } catch (e) {
    return e instanceof QmpBusyError ? 'busy' : 'dead';
  }
}

/** The version line of a qemu binary, e.g. "QEMU emulator version 7.2.22 (...)". */
export async function qemuVersion(qemu: string): Promise<string> {
  const { execa } = await loadExeca();
  const { stdout } = await execa(qemu, ['--version'], { stdin: 'ignore' });
  return stdout.split('\n')[0] ?? '';
}
