/**
 * The QMP error hierarchy. Every failure is a class, never a string to parse:
 *
 *   try { await qmp.execute('device_del', { id: 'nic9' }) }
 *   catch (e) { if (e instanceof QmpCommandError && e.errorClass === 'DeviceNotFound') ... }
 */

import { MqHotplugError } from '../errors.js';

/** Base of every error this layer raises. */
export class QmpError extends MqHotplugError {
  override name = 'QmpError';
}

/** QEMU answered a command with `{"error": {...}}`. */
export class QmpCommandError extends QmpError {
  override name = 'QmpCommandError';
  constructor(
    readonly command: string,
    readonly errorClass: string,
    readonly desc: string,
  ) {
    super(`${command}: ${errorClass}: ${desc}`);
  }
}

/** The connection closed (EOF, socket error, or close()) while the command was pending. */
export class QmpDisconnectedError extends QmpError {
  override name = 'QmpDisconnectedError';
  constructor(
    readonly target: string,
    readonly command?: string,
    readonly reason?: string,
  ) {
    super(
      `QMP connection to ${target} closed` +
        (command ? ` before '${command}' was answered` : '') +
        (reason ? ` (${reason})` : ''),
    );
  }
}

/** A command was not answered in time. The connection stays usable; a late answer is dropped. */
export class QmpTimeoutError extends QmpError {
  override name = 'QmpTimeoutError';
  constructor(
    readonly command: string,
    readonly timeoutMs: number,
  ) {
    super(`'${command}' was not answered within ${timeoutMs} ms`);
  }
}

/** Connected, but no greeting came: QEMU serves one client per monitor and another holds it. */
export class QmpBusyError extends QmpError {
  override name = 'QmpBusyError';
  constructor(
    readonly target: string,
    readonly waitedMs: number,
  ) {
    super(
      `QMP monitor ${target} is busy: connected but no greeting within ${waitedMs} ms ` +
        `(QEMU serves one client per monitor: another client holds it, or QEMU is not responding)`,
    );
  }
}

/** The peer sent something that is not QMP: bad JSON, an oversized line, an unknown message. */
export class QmpProtocolError extends QmpError {
  override name = 'QmpProtocolError';
}

/** Nothing listens at the target (no socket file, connection refused). */
export class QmpConnectError extends QmpError {
  override name = 'QmpConnectError';
  constructor(
    readonly target: string,
    cause: Error,
  ) {
    super(`cannot connect to QMP at ${target}: ${cause.message}`, { cause });
  }
}
