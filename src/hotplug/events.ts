/**
 * Every event the controller publishes, with its data: one catalogue, checked by the compiler.
 * QEMU has no DEVICE_ADDED, so the controller publishes its own on the same stream as QEMU's
 * events; a consumer tells them apart by `source`.
 *
 * These are also what hooks receive (`watch --on EVENT --exec CMD`): the event as JSON on stdin,
 * and MQH_EVENT, MQH_VM, MQH_SOURCE, MQH_DATA, MQH_TIMESTAMP, plus MQH_<FIELD> for each plain field
 * of `data` below (MQH_DEVICE, MQH_TAP, MQH_BRIDGE, ...; a null field is left out).
 *
 *   vm.events$.pipe(ofEvent<VmEvent>('NIC_BRIDGED')).subscribe((e) => ...)
 *   if (e.source === 'controller' && e.event === 'DEVICE_ADDED') e.data.tap   // typed
 */
import type { Nic } from '../model/nic.js';
import type { QmpEvent, QmpTimestamp } from '../qmp/messages.js';

export interface ControllerEventData {
  /** `add` plugged the device (netdev_add + device_add answered); bridging reacts to it. */
  DEVICE_ADDED: { device: string } & Pick<
    Nic,
    'netdev' | 'tap' | 'mac' | 'queues' | 'vectors' | 'vhost' | 'bridge' | 'bus' | 'tapMac'
  > & {
      /** the rest of the host side, set up by the bridging reaction (network/); null where not set */
      tapMtu: number | null;
      rate: number | null;
      ifb: string | null;
      /** 'ovs': an Open vSwitch bridge (null: a Linux bridge, or none) */
      bridgeKind: 'ovs' | null;
      vlan: number | null;
      trunks: number[] | null;
      ifaceId: string | null;
    };
  /** The add is done, all of it (published last): `ms` from its start, under the lock, to here. */
  NIC_ADDED: { device: string; tap: string; bridge: string | null; ms: number };
  /** An add that passed its checks failed (and was undone): `kind` is the error's class, as metrics count it. */
  NIC_ADD_FAILED: { device: string; kind: string; error: string; ms: number };
  /** The tap is on its bridge (or, with no bridge, up). */
  NIC_BRIDGED: { device: string; tap: string; bridge: string | null };
  /** Attaching the tap failed; the add rolls back. */
  NIC_BRIDGE_FAILED: { device: string; tap: string; bridge: string | null; error: string };
  /** device_del was sent and the guest has not released the device within the timeout. */
  NIC_UNPLUG_PENDING: { device: string; netdev: string; tap: string | null };
  /** The device and its netdev are gone; `reason` says who asked (remove, the guest, a pending unplug). */
  NIC_REMOVED: {
    device: string;
    netdev: string;
    tap: string | null;
    mac: string | null;
    tapGone: boolean | null;
    reason: string;
    /** ms from device_del to here, for a `remove`; null where the guest ejected it */
    ms: number | null;
  };
  /**
   * The reconcile reaction put a tap right again: back on its bridge, up, its MAC and MTU, its rate
   * limit. `was` is the master it had; `fixed` says what had drifted.
   */
  NIC_REATTACHED: { device: string; tap: string; bridge: string | null; was: string | null; fixed: string[] };
  /** An add left half-made by a process that died was finished (the device was in) or undone. */
  NIC_RECOVERED: { device: string; outcome: 'finished' | 'undone' };
  /** A recorded NIC's bridge no longer exists: nothing to re-attach to. */
  NIC_BRIDGE_MISSING: { device: string; tap: string; bridge: string };
  /** A reconcile reaction failed; it runs again on the next event or check. */
  RECONCILE_FAILED: { error: string };
}

export type ControllerEventName = keyof ControllerEventData;

/** One controller event; narrowing on `event` types `data`. */
export type ControllerEvent = {
  [K in ControllerEventName]: { event: K; data: ControllerEventData[K]; timestamp: QmpTimestamp; source: 'controller' };
}[ControllerEventName];

/** One of QEMU's events, as it came from the monitor. */
export type QemuEvent = QmpEvent & { source: 'qemu' };

/** What a VM's event stream carries: QEMU's events and the controller's. */
export type VmEvent = QemuEvent | ControllerEvent;

/** A typed publisher: `publish('NIC_BRIDGED', { device, tap, bridge })`. */
export type Publish = <K extends ControllerEventName>(event: K, data: ControllerEventData[K]) => void;

/** Narrows a stream to the controller's own events: `events$.pipe(filter(fromController))`. */
export const fromController = (e: VmEvent): e is ControllerEvent => e.source === 'controller';
