/**
 * The per-VM lock: operations on one VM are serialized, within a process and across processes.
 *
 * Across processes it is a unix socket bound in Linux's abstract namespace ("\0mq-hotplug/..."):
 * bind() succeeds for one process only, and the kernel releases the name when that process exits,
 * however it dies (SIGKILL included). So there is no stale lock to judge, no pid to trust after
 * reuse, and no window where two processes both remove a stale lock file and both proceed.
 * Abstract names belong to a network namespace: mq-hotplug run in another one (`ip netns exec`)
 * does not see this lock. Run every mq-hotplug of a host in the host's namespace.
 *
 * Within a process, calls queue on a promise chain per lock (`withProcessLock`, which the in-memory
 * test ports use as it is). A call made while the same async call chain already holds the lock (the
 * CLI takes it, then the operation inside takes it again) passes through: AsyncLocalStorage tells
 * the holder's own chain from a concurrent caller's.
 *
 * Reactions are not the holder's chain, even when the holder's own publish() starts them: an event
 * is delivered through `outsideLocks`, so a reaction that takes the lock waits for the operation
 * that published its event (hotplug/context.ts), instead of slipping through mid-operation.
 *
 *   await withVmLock(lockKey(stateRoot, 'vm1'), async () => { ... });
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { createHash } from 'node:crypto';
import net from 'node:net';
import { StateError } from '../errors.js';
import { monotonicMs, sleep } from '../util/time.js';

const held = new AsyncLocalStorage<ReadonlySet<string>>();
const tails = new Map<string, Promise<void>>();

/** The lock's name for a VM of a state directory (two state directories never share a lock). */
export function lockKey(stateRoot: string, vm: string): string {
  const root = createHash('sha256').update(stateRoot).digest('hex').slice(0, 16);
  return `mq-hotplug/${root}/${vm}`;
}

/** Runs fn holding the lock; waits up to timeoutMs for it, then fails naming the holder's pid. */
export function withVmLock<T>(key: string, fn: () => Promise<T>, timeoutMs = 60_000, label = key): Promise<T> {
  const deadline = monotonicMs() + timeoutMs;
  return withProcessLock(key, fn, async () => {
    const server = await bindAbstract(key, deadline, label);
    return () => server.close();
  });
}

/**
 * The lock within this process alone: FIFO per key, re-entrant along the holder's async chain.
 * `acquire`, run once the process's turn has come, takes whatever else must be held (the
 * cross-process name) and returns its release.
 */
export async function withProcessLock<T>(
  key: string,
  fn: () => Promise<T>,
  acquire: () => Promise<() => void> = async () => () => {},
): Promise<T> {
  const mine = held.getStore();
  if (mine?.has(key)) return fn();
  // in this process: after whoever queued before us
  const before = tails.get(key) ?? Promise.resolve();
  let release!: () => void;
  const tail = before.then(() => new Promise<void>((r) => (release = r)));
  tails.set(key, tail);
  try {
    await before;
    const releaseOuter = await acquire();
    try {
      return await held.run(new Set([...(mine ?? []), key]), fn);
    } finally {
      releaseOuter();
    }
  } finally {
    release?.();
    if (tails.get(key) === tail) tails.delete(key);
  }
}

/** Runs fn as if no lock were held: what it starts (a reaction) queues for the locks like anyone else. */
export function outsideLocks<T>(fn: () => T): T {
  return held.exit(fn);
}

/** Binds the abstract name, retrying while another process holds it. */
async function bindAbstract(key: string, deadline: number, label: string): Promise<net.Server> {
  for (;;) {
    const server = net.createServer((socket) => socket.end(`${process.pid}\n`)); // who holds it, for the error
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(false) : reject(e)));
      server.listen({ path: `\0${key}` }, () => resolve(true));
    });
    if (bound) {
      server.unref(); // a held lock never keeps a process alive
      return server;
    }
    if (monotonicMs() > deadline) {
      const holder = await holderPid(key);
      throw new StateError(
        `${label} is locked by ${holder ? `pid ${holder}` : 'another process'} (still held after the wait)`,
      );
    }
    await sleep(10);
  }
}

/** The pid the holder reports, if it answers within 500 ms. */
function holderPid(key: string): Promise<number | undefined> {
  return new Promise((resolve) => {
    const socket = net.createConnection({ path: `\0${key}` });
    let text = '';
    const timer = setTimeout(() => socket.destroy(), 500);
    socket.on('data', (d) => (text += d.toString()));
    socket.on('error', () => {});
    socket.on('close', () => {
      clearTimeout(timer);
      const pid = Number.parseInt(text, 10);
      resolve(Number.isInteger(pid) ? pid : undefined);
    });
  });
}
