/**
 * The root of every error mq-hotplug raises. Each class says how a command that failed with it
 * ends (`exitKind`), so the CLI sorts errors with `instanceof`, never by name:
 *
 *   MqHotplugError                 failed (1)
 *   ├── UsageError                 usage (2): bad input, nothing was changed
 *   │   └── StateError             usage (2): no such VM, a refused state or config directory
 *   ├── QmpError (src/qmp)         failed: the QMP connection or a command
 *   ├── HostCommandError (src/host) failed: an `ip`/`tc` command
 *   ├── StartError (src/qemu)      failed: QEMU did not start
 *   ├── HotplugError (src/hotplug) failed: a step of an add, with what was undone
 *   └── UnplugPendingError         pending (3): the guest has not released the device yet
 */

export type ExitKind = 'failed' | 'usage' | 'pending';

/** Exit codes by kind; 0 is success. */
export const EXIT_CODES: Readonly<Record<ExitKind, number>> = { failed: 1, usage: 2, pending: 3 };

export class MqHotplugError extends Error {
  override name = 'MqHotplugError';
  readonly exitKind: ExitKind = 'failed';
}

/** Bad input from the user: the message names the bad value and what would be valid. */
export class UsageError extends MqHotplugError {
  override name = 'UsageError';
  override readonly exitKind: ExitKind = 'usage';
}

/** The state (or config) directory refuses an operation: no such VM, a tampered or foreign file. */
export class StateError extends UsageError {
  override name = 'StateError';
}

/** The exit code for any thrown value: ours by kind, anything else is a plain failure. */
export function exitCodeOf(e: unknown): number {
  return EXIT_CODES[e instanceof MqHotplugError ? e.exitKind : 'failed'];
}
