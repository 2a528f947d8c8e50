/**
 * Whom a command works for. In a CLI process that is the process itself: its stdout, stderr, stdin
 * and exit code. In the agent a command runs for a client of the control socket (agent/), and
 * what it writes, the input it reads and the exit code it sets are that client's. Commands run side
 * by side there, so each one's async chain carries its own (AsyncLocalStorage), and the code below
 * the CLI writes through util/write.ts and setExitCode without knowing which it is.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import fs from 'node:fs';

export interface Requester {
  out(text: string): void;
  err(text: string): void;
  /** The client's standard input, whole (`apply -f -`). */
  readInput(): Promise<string>;
  exitCode?: number;
  /** Aborted when the client goes away (Ctrl-C on a `watch`). */
  signal: AbortSignal;
}

/**
 * One per process, wherever this module is loaded from: the CLI's program (its own bundle, which
 * writes help and usage errors) and the agent that runs it for a client (another bundle) must see
 * the same client.
 */
const KEY = Symbol.for('mq-hotplug.requester');
const current = ((globalThis as Record<symbol, unknown>)[KEY] ??=
  new AsyncLocalStorage<Requester>()) as AsyncLocalStorage<Requester>;

/** The client a command runs for, in the agent; undefined in a CLI process. */
export const requester = (): Requester | undefined => current.getStore();

export function runFor<T>(client: Requester, fn: () => Promise<T>): Promise<T> {
  return current.run(client, fn);
}

/**
 * fn, bound to the client of the code that makes it (or to none): an rxjs subscriber runs in the
 * async context of whoever emitted the event (the socket QEMU's events came on, another client's
 * add), and would else write to that one's client.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const bindToClient = <F extends (...args: any[]) => unknown>(fn: F): F => AsyncLocalStorage.bind(fn);

/** Runs fn for no client: what it starts (the agent's watcher of a VM) outlives the command that asked. */
export function forNoClient<T>(fn: () => T): T {
  return current.exit(fn);
}

export function setExitCode(code: number): void {
  const client = current.getStore();
  if (client) client.exitCode = code;
  else process.exitCode = code;
}

/** Standard input, whole: the client's in the agent, else this process's. */
export function readInput(): Promise<string> {
  const client = current.getStore();
  return client ? client.readInput() : Promise.resolve(fs.readFileSync(0, 'utf8'));
}
