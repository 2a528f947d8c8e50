/** After an add, with --wait-guest: waiting for the guest's driver to take the NIC. */
import { QmpCommandError } from '../../qmp/errors.js';
import { monotonicMs, sleep } from '../../util/time.js';
import type { QmpPort } from '../context.js';

/**
 * Waits until the guest's virtio-net driver has taken the NIC: the device's status has DRIVER_OK
 * (x-query-virtio-status, QEMU 7.2+). This does not depend on the guest's network configuration,
 * unlike NIC_RX_FILTER_CHANGED, which comes only once the guest sets the link up (a guest with no
 * config for a new NIC never does): that one is reported apart, as guestLinkUp. A QEMU without the
 * command falls back to NIC_RX_FILTER_CHANGED. `mq` says whether the driver negotiated multiqueue.
 */
export async function waitForDriver(
  qmp: QmpPort,
  id: string,
  timeoutMs: number,
  linkUp: Promise<unknown>,
): Promise<{ ready: boolean; mq?: boolean }> {
  const path = `/machine/peripheral/${id}/virtio-backend`;
  const deadline = monotonicMs() + timeoutMs;
  for (;;) {
    let status: { status: { statuses: string[] }; 'guest-features'?: { 'dev-features'?: string[] } };
    try {
      status = await qmp.execute('x-query-virtio-status', { path });
    } catch (e) {
      if (e instanceof QmpCommandError && e.errorClass === 'CommandNotFound') {
        return {
          ready: await linkUp.then(
            () => true,
            () => false,
          ),
        };
      }
      throw e;
    }
    if (status.status.statuses.some((s) => s.startsWith('VIRTIO_CONFIG_S_DRIVER_OK'))) {
      return {
        ready: true,
        mq: (status['guest-features']?.['dev-features'] ?? []).some((f) => f.startsWith('VIRTIO_NET_F_MQ')),
      };
    }
    if (monotonicMs() >= deadline) return { ready: false };
    await sleep(Math.min(100, deadline - monotonicMs()));
  }
}
