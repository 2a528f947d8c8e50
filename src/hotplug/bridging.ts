/**
 * The bridging reaction: on the controller's DEVICE_ADDED, the network backend attaches the NIC's
 * tap (network/: for a Linux bridge its rate limit if any, then one `ip link set dev TAP address MAC
 * mtu N master BR up` through the long-lived ip), then publishes NIC_BRIDGED, or NIC_BRIDGE_FAILED
 * with the error. `add` waits for one of the two. HotplugContext.open starts it with the context.
 */
import { type Observable, type Subscription, concatMap, filter } from 'rxjs';
import type { ControllerEvent, Publish, VmEvent } from './events.js';
import { type Port, withoutUndefined } from '../model/nic.js';
import type { NetworkBackend } from './network/backend.js';

type DeviceAdded = Extract<ControllerEvent, { event: 'DEVICE_ADDED' }>;

export function startBridging(ctx: {
  events$: Observable<VmEvent>;
  network: NetworkBackend;
  publish: Publish;
}): Subscription {
  return ctx.events$
    .pipe(
      filter((e): e is DeviceAdded => e.source === 'controller' && e.event === 'DEVICE_ADDED'),
      concatMap(async ({ data }) => {
        const { device, tap, bridge, mac, tapMac } = data;
        try {
          // the event's nulls are the port's absent fields
          const set = Object.entries(data).filter(([, v]) => v !== null);
          const { tapMtu, rate, ifb, bridgeKind, vlan, trunks, ifaceId } = Object.fromEntries(set) as Partial<Port>;
          await ctx.network.attach(
            withoutUndefined({ tap, bridge, mac, tapMac, tapMtu, rate, ifb, bridgeKind, vlan, trunks, ifaceId }),
          );
          ctx.publish('NIC_BRIDGED', { device, tap, bridge });
        } catch (err) {
          ctx.publish('NIC_BRIDGE_FAILED', { device, tap, bridge, error: (err as Error).message });
        }
      }),
    )
    .subscribe();
}
