/**
 * The bridging reaction: on the controller's DEVICE_ADDED, attach the NIC's tap to its bridge and
 * set it up (one `ip link set dev TAP master BR up`, through the long-lived ip), then publish
 * NIC_BRIDGED, or NIC_BRIDGE_FAILED with the error. `add` waits for one of the two.
 */
import { type Subscription, concatMap, filter } from 'rxjs';
import { attachArgs } from '../host/ip.js';
import type { HotplugContext } from './context.js';
import type { ControllerEvent } from './events.js';

type DeviceAdded = Extract<ControllerEvent, { event: 'DEVICE_ADDED' }>;

export function startBridging(ctx: HotplugContext): Subscription {
  return ctx.events$
    .pipe(
      filter((e): e is DeviceAdded => e.source === 'controller' && e.event === 'DEVICE_ADDED'),
      concatMap(async ({ data: { device, tap, bridge } }) => {
        try {
          await ctx.host.ip(attachArgs(tap, bridge ?? undefined));
          ctx.publish('NIC_BRIDGED', { device, tap, bridge });
        } catch (err) {
          ctx.publish('NIC_BRIDGE_FAILED', { device, tap, bridge, error: (err as Error).message });
        }
      }),
    )
    .subscribe();
}
