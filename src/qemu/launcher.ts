/**
 * Starting and stopping VMs. QEMU runs detached from the CLI (it must outlive it) with its output in
 * qemu.log; `startVm` returns once QMP is ready (qmp_capabilities answered), and when QEMU fails to
 * start it throws QEMU's own words and leaves no state behind.
 */
import fs from 'node:fs';
import { execa } from 'execa';
import { QmpClient } from '../qmp/client.js';
import { QmpBusyError, QmpError } from '../qmp/errors.js';
import { resolveAccel } from './accel.js';
import { type QemuVersion, capabilitiesOf } from './capabilities.js';
import type { StartRequest } from './definition.js';
import { type VmSpec, qemuArgv } from './spec.js';
import { STATE_VERSION, StateError, StateStore, type VmRecord, pidAlive, qemuAlive } from './state.js';
import { deleteLink, linkExists } from '../host/ip.js';
import { checkVmName } from '../host/validate.js';
import { MqHotplugError } from '../errors.js';
import { monotonicMs, pollUntil, within } from '../util/time.js';

export class StartError extends MqHotplugError {
  override name = 'StartError';
}

export type { StartRequest };

export interface StartOptions {
  /** Start with the CPUs stopped (-S): NICs can be plugged before the guest runs; `cont` starts it. */
  paused?: boolean;
  readyTimeoutMs?: number;
}

export async function startVm(
  store: StateStore,
  request: StartRequest,
  { paused = false, readyTimeoutMs = 30_000 }: StartOptions = {},
): Promise<VmRecord> {
  checkVmName(request.name);
  const existing = store.readIfValid(request.name); // unreadable or from another version: replaced below
  if (existing && qemuAlive(existing)) {
    throw new StartError(
      `VM '${request.name}' is already running (pid ${existing.pid}); stop it first or pick another name`,
    );
  }
  await forgetDeadVm(store, existing, request.name); // stale state from a dead QEMU is not trusted

  const { accel, reason } = resolveAccel(request.accel);
  const spec: VmSpec = { ...request, accel };
  const paths = store.createVmDir(spec.name);
  const argv = [spec.qemu, ...qemuArgv(spec, paths), ...(paused ? ['-S'] : [])];

  const logFd = fs.openSync(
    paths.log,
    fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW,
    0o600,
  );
  const oldMask = process.umask(0o077); // QEMU creates its sockets 0600
  let child;
  try {
    child = execa(argv[0]!, argv.slice(1), {
      detached: true,
      cleanup: false,
      reject: false,
      stdin: 'ignore',
      // A file descriptor, documented and supported at run time; execa's typings lack the plain number.
      stdout: logFd as unknown as 'ignore',
      stderr: logFd as unknown as 'ignore',
    });
  } finally {
    process.umask(oldMask);
    fs.closeSync(logFd);
  }
  const exited = new Promise<string>((resolve) => {
    child.on('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exit code ${code}`));
    child.on('error', (e) => resolve(e.message));
  });
  child.catch(() => {});

  try {
    if (child.pid === undefined) throw new StartError(`cannot run '${spec.qemu}': ${await exited}`);
    const version = await waitForMonitor(paths.qmp, exited, readyTimeoutMs);
    for (const sock of [paths.qmp, paths.eventsQmp]) fs.chmodSync(sock, 0o600);
    const record: VmRecord = {
      version: STATE_VERSION,
      name: spec.name,
      spec,
      argv,
      pid: child.pid,
      startedAt: new Date().toISOString(),
      accelReason: reason,
      qemuVersion: capabilitiesOf(version).version,
      ...paths,
      nics: [],
    };
    store.write(record);
    child.unref();
    return record;
  } catch (e) {
    if (child.pid !== undefined && pidAlive(child.pid)) process.kill(child.pid, 'SIGKILL');
    const log = readTail(paths.log);
    store.remove(spec.name);
    if (e instanceof StartError && log) throw new StartError(`QEMU failed to start: ${log}`);
    throw e;
  }
}

/** Polls for the monitor socket, then negotiates on it; fails as soon as QEMU exits. Returns QEMU's version. */
async function waitForMonitor(socketPath: string, exited: Promise<string>, timeoutMs: number): Promise<QemuVersion> {
  const deadline = monotonicMs() + timeoutMs;
  let gone: string | undefined;
  exited.then((why) => (gone = why));
  while (monotonicMs() < deadline) {
    if (gone !== undefined) throw new StartError(`QEMU exited during start-up (${gone})`);
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
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new StartError(`QMP at ${socketPath} was not ready within ${timeoutMs} ms`);
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
 * Forgets a VM whose QEMU is gone: what its NICs left on the host (QEMU's taps went with it, the
 * ifb devices of rate limits did not), its serial socket, and its runtime state. The one cleanup
 * for stop, a dead VM seen by watch or the agent, and a start over stale state.
 */
export async function forgetDeadVm(
  store: StateStore,
  record: VmRecord | undefined,
  name = record?.name,
): Promise<void> {
  for (const nic of record?.nics ?? []) {
    if (nic.ifb && linkExists(nic.ifb)) await deleteLink(nic.ifb).catch(() => {});
  }
  if (record?.spec.serial) fs.rmSync(record.spec.serial, { force: true });
  if (name) store.remove(name);
}

/**
 * `quit` over QMP, wait for the monitor's EOF, then signals. The EOF comes at once; a daemonized
 * QEMU's pid can take over a second to vanish where PID 1 reaps orphans late (measured ~1.2 s).
 */
export async function stopVm(store: StateStore, name: string, timeoutMs = 10_000): Promise<StopResult> {
  const record = store.read(name);
  if (!record) throw new StateError(`no VM named '${name}' in ${store.root}`);
  const cleanup = () => forgetDeadVm(store, record, name);
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
  const { stdout } = await execa(qemu, ['--version'], { stdin: 'ignore' });
  return stdout.split('\n')[0] ?? '';
}
