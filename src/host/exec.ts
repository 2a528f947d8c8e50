/**
 * Running `ip` and `tc`: an argv array, never a shell, through node's child_process. These are on
 * the hot path of every add; execa, which the rest of mq-hotplug uses (QEMU's launch, hooks), costs
 * its module tree at every CLI start, and these calls need nothing of it but an exit code and stderr.
 */
import type { ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { MqHotplugError } from '../errors.js';

/**
 * child_process, loaded on the first program started rather than at every CLI start: an add first
 * starts ip just after it sent its device_add, so the ~4 ms of loading it overlaps QEMU's work.
 */
let childProcess: typeof import('node:child_process') | undefined;
const loadChildProcess = () =>
  (childProcess ??= createRequire(process.execPath)('node:child_process') as typeof import('node:child_process'));

export class HostCommandError extends MqHotplugError {
  override name = 'HostCommandError';
  constructor(
    readonly argv: string[],
    readonly detail: string,
  ) {
    super(`'${argv.join(' ')}' failed: ${detail}`);
  }
}

/** The words for a program that could not be started. */
export function startFailure(program: string, e: NodeJS.ErrnoException): string {
  return e.code === 'ENOENT' ? `'${program}' not found in PATH (install iproute2)` : e.message;
}

/** Starts a program with an argv; the caller wires its streams. */
export function startProgram(argv: string[], stdio: ('pipe' | 'ignore')[]): ChildProcess {
  return loadChildProcess().spawn(argv[0]!, argv.slice(1), { stdio, shell: false });
}

/** Runs a program to its end; resolves with its stdout, rejects with HostCommandError (its stderr). */
export function runProgram(argv: string[], { input }: { input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = startProgram(argv, [input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe']);
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', (e: NodeJS.ErrnoException) => reject(new HostCommandError(argv, startFailure(argv[0]!, e))));
    child.on('close', (code, signal) => {
      if (code === 0) resolve(stdout);
      else
        reject(
          new HostCommandError(
            argv,
            stderr.trim().replace(/\n/g, ' ') || (signal ? `killed by ${signal}` : `exit code ${code}`),
          ),
        );
    });
    if (input !== undefined) {
      child.stdin!.on('error', () => {}); // EPIPE when it died early: reported through 'close'
      child.stdin!.end(input);
    }
  });
}

/**
 * Starts a program that must outlive this process (QEMU): its own session, stdin closed, stdout
 * and stderr to `logFd`, not waited for at exit. Node's spawn, not execa: execa's module tree cost
 * a start ~40 ms to load (measured), and none of it is needed to start a detached process.
 */
export function startDetached(argv: string[], logFd: number): ChildProcess {
  const child = loadChildProcess().spawn(argv[0]!, argv.slice(1), {
    detached: true,
    stdio: ['ignore', logFd, logFd],
    shell: false,
  });
  child.unref();
  return child;
}
