/** mq-hotplug as a library: the QMP client, the VM launcher, and the hot-plug controller. */
export * from './qmp/index.js';
export { MqHotplugError, UsageError, StateError, EXIT_CODES, exitCodeOf, type ExitKind } from './errors.js';
export { Controller, type OpenOptions } from './hotplug/controller.js';
export type { AddPlan, AddRequest } from './hotplug/add/plan.js';
export type { AddResult } from './hotplug/add/transaction.js';
export type { Nic, NicDefinition, NicRequest, NicState, Port, Slot, VhostMode } from './model/nic.js';
export type { RemoveResult } from './hotplug/remove.js';
export type { NicView } from './hotplug/nics.js';
export { HotplugContext, type ContextParts, type HostPort, type QmpPort, type RecordPort } from './hotplug/context.js';
export type { NetworkBackend } from './hotplug/network/backend.js';
export { LinuxBridge } from './hotplug/network/linux-bridge.js';
export type { TapSource } from './hotplug/network/tap-source.js';
export type {
  ControllerEvent,
  ControllerEventData,
  ControllerEventName,
  QemuEvent,
  VmEvent,
} from './hotplug/events.js';
export { HotplugError, UnplugPendingError, type RollbackReport } from './hotplug/errors.js';
export { HostCommandError } from './host/ip.js';
export { startVm, stopVm, vmState, StartError, type StartRequest } from './qemu/launcher.js';
export { StateStore, type VmRecord, type NicRecord } from './qemu/state.js';
export type { VmSpec } from './qemu/spec.js';
export { setTrace } from './util/trace.js';
