/**
 * The bridging reaction: on the controller's DEVICE_ADDED, attach the NIC's tap to its bridge and
 * set it up (one `ip link set dev TAP master BR up`, through the controller's long-lived ip), then
 * publish NIC_BRIDGED, or NIC_BRIDGE_FAILED with the error. `add` waits for one of the two.
 */
import { type Subscription, concatMap, filter } from 'rxjs';
import { attachArgs } from '../host/ip.js';
import { ofEvent } from '../qmp/events.js';
import type { Controller } from './controller.js';

export interface DeviceAddedData {
  device: string;
  tap: string;
  bridge?: string;
  mac: string;
  queues: number;
  bus: string;
  [k: string]: unknown;
}

export function startBridging(controller: Controller): Subscription {
  return controller.events$
    .pipe(
      ofEvent('DEVICE_ADDED'),
      filter((e) => e.source === 'controller'),
      concatMap(async (e) => {
        const { device, tap, bridge } = e.data as DeviceAddedData;
        try {
          await controller.ip.run(attachArgs(tap, bridge));
          controller.publish('NIC_BRIDGED', { device, tap, bridge: bridge ?? null });
        } catch (err) {
          controller.publish('NIC_BRIDGE_FAILED', { device, tap, bridge: bridge ?? null, error: (err as Error).message });
        }
      }),
    )
    .subscribe();
}
