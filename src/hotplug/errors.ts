/** Failures of a hot-plug operation after something was already changed. */

/** A step failed; `undone` lists what was rolled back, `pending` what could not be (yet). */
export class HotplugError extends Error {
  override name = 'HotplugError';
  constructor(
    readonly step: string,
    readonly cause: Error,
    readonly undone: string[] = [],
    readonly pending: string[] = [],
  ) {
    super(
      `${step} failed: ${cause.message}` +
        (undone.length ? `; undone: ${undone.join(', ')}` : '') +
        (pending.length ? `; still pending: ${pending.join(', ')}` : ''),
    );
  }
}

/** device_del was sent but the guest did not release the device in time; the NIC is recorded as unplug-pending. */
export class UnplugPendingError extends Error {
  override name = 'UnplugPendingError';
}
