/** Failures of a hot-plug operation after something was already changed. */
import { type ExitKind, MqHotplugError } from '../errors.js';

/** What a rollback did: data, for callers to act on; the words are for people. */
export interface RollbackReport {
  /** What was undone, in order (e.g. "netdev nd-nic0 deleted"). */
  undone: string[];
  /** What could not be undone (yet), with why. */
  pending: string[];
  /** The device is still in the VM: the guest has not released it (recorded as unplug-pending). */
  devicePlugged: boolean;
}

export const NOTHING_UNDONE: RollbackReport = { undone: [], pending: [], devicePlugged: false };

/** A step failed; the report says what was rolled back and what could not be. */
export class HotplugError extends MqHotplugError {
  override name = 'HotplugError';
  readonly undone: string[];
  readonly pending: string[];
  readonly devicePlugged: boolean;

  constructor(
    readonly step: string,
    cause: Error,
    report: RollbackReport = NOTHING_UNDONE,
  ) {
    super(
      `${step} failed: ${cause.message}` +
        (report.undone.length ? `; undone: ${report.undone.join(', ')}` : '') +
        (report.pending.length ? `; still pending: ${report.pending.join(', ')}` : ''),
      { cause },
    );
    ({ undone: this.undone, pending: this.pending, devicePlugged: this.devicePlugged } = report);
  }
}

/** device_del was sent but the guest did not release the device in time; the NIC is recorded as unplug-pending. */
export class UnplugPendingError extends MqHotplugError {
  override name = 'UnplugPendingError';
  override readonly exitKind: ExitKind = 'pending';
}
