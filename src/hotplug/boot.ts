/**
 * Starting a defined VM: QEMU starts paused (-S), each saved NIC is plugged at its saved slot with
 * its saved MAC and tap and set up on its bridge, then the VM runs (`cont`). The guest finds its
 * NICs at boot, where they were, and gives them the same names. A NIC that cannot come back (its
 * bridge is gone, its tap name is taken) stops the start: the VM is stopped again and the error
 * names the NIC; nothing is left running half-made.
 */
import { type NicDefinition, requestOfDefinition } from '../model/nic.js';
import type { DefinitionStore, VmDefinition } from '../qemu/definition.js';
import { StartError, startVm, stopVm } from '../qemu/launcher.js';
import type { StateStore, VmRecord } from '../qemu/state.js';
import { type AddResult, addNic } from './add/transaction.js';
import type { HotplugContext } from './context.js';

/** A connection to the started VM: its hot-plug context, closed when the NICs are in. */
export interface OpenedVm {
  readonly context: HotplugContext;
  close(): Promise<void>;
}

export async function startDefined(
  store: StateStore,
  def: VmDefinition,
  open: () => Promise<OpenedVm>,
  definitions?: DefinitionStore,
): Promise<{ record: VmRecord; nics: AddResult[] }> {
  const stop = () => stopVm(store, def.name, undefined, definitions).catch(() => {});
  return store.withLock(def.name, async () => {
    const paused = def.nics.length > 0;
    const record = await startVm(store, def.spec, { paused, definitions });
    if (!paused) return { record, nics: [] };
    const vm = await open().catch(async (e: unknown) => {
      await stop();
      throw e;
    });
    const nics: AddResult[] = [];
    let current: NicDefinition | undefined;
    try {
      for (current of def.nics) {
        // persist: a NIC saved before it had a slot gets the one it takes now
        nics.push(await addNic(vm.context, { ...requestOfDefinition(current), beforeBoot: true, persist: true }));
      }
      await vm.context.qmp.execute('cont');
    } catch (e) {
      await vm.close();
      await stop();
      throw new StartError(
        `VM '${def.name}' was stopped again: its saved NIC '${current?.id}' could not be plugged (${(e as Error).message})`,
        { cause: e },
      );
    }
    await vm.close();
    return { record: store.read(def.name) ?? record, nics };
  });
}
