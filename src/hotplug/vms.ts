/**
 * The rules of a VM by name, which the CLI (and any other front end) follows and unit tests check:
 *  - `startByName`: a VM with a definition starts from it, the options given changing its saved
 *    spec; a new VM is defined from the options, so that it lasts. The definition is written only
 *    once the start worked.
 *  - `applyByName`: a running VM gets the spec live; a defined VM that is not running only has its
 *    definition changed; a VM that is neither is an error.
 *  - `undefineVm`: only a VM that is not running can be forgotten.
 * Each takes the stores it works on; everything runs under the VM's lock.
 */
import fs from 'node:fs';
import { UsageError } from '../errors.js';
import { isBridge } from '../host/ip.js';
import { tapMark } from '../host/tap.js';
import { checkIfname, checkVmName } from '../host/validate.js';
import { DEFINITION_VERSION, type DefinitionStore, type StartRequest } from '../qemu/definition.js';
import { type StateStore, type VmRecord, qemuAlive } from '../qemu/state.js';
import { deleteVmUser } from '../qemu/vm-user.js';
import type { AddResult } from './add/transaction.js';
import { LinuxHost } from './adapters.js';
import { type ApplyResult, type NicWanted, applyDefinition, applyLive } from './apply.js';
import { startDefined } from './boot.js';
import { Controller } from './controller.js';
import { HostNetwork } from './network/host-network.js';

export interface Stores {
  store: StateStore;
  definitions: DefinitionStore;
}

const MEMORY = /^\d+[KMGT]?$/i;

/**
 * The spec a start runs: the saved one with only the fields the user gave changed, or, for a VM
 * without a definition, the requested one (defaults included).
 */
export function mergeStartSpec(
  saved: StartRequest | undefined,
  requested: StartRequest,
  given: ReadonlySet<keyof StartRequest>,
): StartRequest {
  if (!saved) return requested;
  return { ...saved, ...Object.fromEntries([...given].map((key) => [key, requested[key]])) };
}

/** What a start needs of the host before QEMU runs: a memory size, files that exist, a bridge (Linux or OVS). */
export async function checkStartRequest(spec: StartRequest): Promise<void> {
  if (!MEMORY.test(spec.memory)) throw new UsageError(`invalid memory '${spec.memory}': use a size like 512M or 2G`);
  const files: [string, string | undefined][] = [
    ['kernel', spec.kernel],
    ['initrd', spec.initrd],
    ...spec.disks.map((d): [string, string] => ['disk', d]),
  ];
  for (const [what, file] of files) {
    if (file !== undefined && !fs.existsSync(file)) throw new UsageError(`${what} '${file}' does not exist`);
  }
  if (spec.bridge === undefined || isBridge(spec.bridge)) return;
  const network = new HostNetwork(new LinuxHost(), { vm: spec.name, mark: '' });
  try {
    await network.checkBridge(checkIfname(spec.bridge, 'bridge name'));
  } finally {
    network.close();
  }
}

/** The running record of a VM, or undefined when it has none or its QEMU is gone. */
export function runningRecord(store: StateStore, vm: string): VmRecord | undefined {
  const record = store.readIfValid(vm);
  return record && qemuAlive(record) ? record : undefined;
}

export type StartOutcome =
  { started: true; record: VmRecord; nics: AddResult[]; spec: StartRequest } | { started: false; record: VmRecord };

/**
 * Starts a VM by name (see the module's rules). With `ifNotRunning`, a VM already running is not an
 * error: the outcome says it was not started.
 */
export async function startByName(
  { store, definitions }: Stores,
  requested: StartRequest,
  given: ReadonlySet<keyof StartRequest>,
  { ifNotRunning = false } = {},
): Promise<StartOutcome> {
  const vm = requested.name;
  checkVmName(vm);
  const saved = definitions.read(vm);
  const spec = mergeStartSpec(saved?.spec, requested, given);
  await checkStartRequest(spec);
  const running = runningRecord(store, vm);
  if (running) {
    if (ifNotRunning) return { started: false, record: running };
    throw new UsageError(`VM '${vm}' is already running (pid ${running.pid}); stop it first or pick another name`);
  }
  const { record, nics } = await startDefined(
    store,
    { version: DEFINITION_VERSION, name: vm, spec, nics: saved?.nics ?? [] },
    () => Controller.open({ name: vm, store, definitions }),
    definitions,
  );
  // saved after the start worked: a start that failed changes nothing. The user QEMU ran as is kept.
  const kept: StartRequest = { ...spec, ...(record.user ? { runAs: record.user.name } : {}) };
  if (saved) definitions.update(vm, (d) => (d.spec = kept));
  else definitions.write({ version: DEFINITION_VERSION, name: vm, spec: kept, nics: [] });
  return { started: true, record: { ...record, nics: store.read(vm)?.nics ?? record.nics }, nics, spec: kept };
}

/** Applies a NIC spec to a VM by name: live where it runs, else to its definition (see apply.ts). */
export async function applyByName(
  { store, definitions }: Stores,
  vm: string,
  wanted: NicWanted[],
  options: { dryRun?: boolean; removeTimeoutMs?: number } = {},
): Promise<ApplyResult> {
  checkVmName(vm);
  return store.withLock(vm, async () => {
    if (runningRecord(store, vm)) {
      const controller = await Controller.open({ name: vm, store, definitions });
      try {
        return await applyLive(controller.context, wanted, options);
      } finally {
        await controller.close();
      }
    }
    const def = definitions.read(vm);
    if (!def)
      throw new UsageError(
        `no VM named '${vm}': it is neither running nor defined in ${definitions.root} (see 'mq-hotplug vms')`,
      );
    const host = new LinuxHost();
    const network = new HostNetwork(host, { vm, mark: tapMark(store.vmDir(vm)) });
    try {
      const applied = await applyDefinition(def, wanted, { host, network }, options);
      if (!options.dryRun) definitions.write(applied.definition);
      return applied.result;
    } finally {
      network.close();
    }
  });
}

/** Forgets a VM's definition; a running VM must be stopped first. Returns the file removed. */
export async function undefineVm({ store, definitions }: Stores, vm: string): Promise<string> {
  checkVmName(vm);
  return store.withLock(vm, async () => {
    if (runningRecord(store, vm))
      throw new UsageError(`VM '${vm}' is running; stop it first ('mq-hotplug stop ${vm}'), then undefine it`);
    const def = definitions.read(vm);
    if (!definitions.remove(vm))
      throw new UsageError(`VM '${vm}' has no definition in ${definitions.root} (see 'mq-hotplug vms')`);
    await deleteVmUser(vm, def?.spec.runAs); // the VM's own user goes with it (a user it was only given stays)
    return definitions.file(vm);
  });
}
