/**
 * The bridging reaction: on the controller's DEVICE_ADDED, set up the NIC's tap (port.ts: its rate
 * limit if any, then one `ip link set dev TAP address MAC mtu N master BR up` through the
 * long-lived ip), then publish NIC_BRIDGED, or NIC_BRIDGE_FAILED with the error. `add` waits for
 * one of the two.
 */
import { type Subscription, concatMap, filter } from 'rxjs';
import type { HotplugContext } from './context.js';
import { setUpPort } from './port.js';
import type { ControllerEvent } from './events.js';

type DeviceAdded = Extract<ControllerEvent, { event: 'DEVICE_ADDED' }>;

export function startBridging(ctx: HotplugContext): Subscription {
  return ctx.events$
    .pipe(
      filter((e): e is DeviceAdded => e.source === 'controller' && e.event === 'DEVICE_ADDED'),
      concatMap(async ({ data: { device, tap, bridge, mac, tapMac, mtu, rate, ifb } }) => {
        try {
          await setUpPort(ctx.host, {
            tap,
            bridge,
            mac,
            tapMac,
            mtu: mtu ?? undefined,
            rate: rate ?? undefined,
            ifb: ifb ?? undefined,
          });
          ctx.publish('NIC_BRIDGED', { device, tap, bridge });
        } catch (err) {
          ctx.publish('NIC_BRIDGE_FAILED', { device, tap, bridge, error: (err as Error).message });
        }
      }),
    )
    .subscribe();
}
