/** mq-hotplug as a library: the QMP client, the VM launcher, and the hot-plug controller. */
export * from './qmp/index.js';
export { Controller, type OpenOptions } from './hotplug/controller.js';
export type { AddPlan, AddRequest, AddResult } from './hotplug/add.js';
export type { RemoveResult } from './hotplug/remove.js';
export type { NicView } from './hotplug/nics.js';
export { HotplugError, UnplugPendingError } from './hotplug/errors.js';
export { startReconcile } from './hotplug/reconcile.js';
export { startVm, stopVm, vmState, type StartRequest } from './qemu/launcher.js';
export { StateStore, type VmRecord, type NicRecord } from './qemu/state.js';
export type { VmSpec } from './qemu/spec.js';
export { UsageError } from './host/validate.js';
