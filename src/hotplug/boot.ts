/**
 * Starting a defined VM: QEMU starts paused (-S), each saved NIC is plugged at its saved slot with
 * its saved MAC and tap and set up on its bridge, then the VM runs (`cont`). The guest finds its
 * NICs at boot, where they were, and gives them the same names. A NIC that cannot come back (its
 * bridge is gone, its tap name is taken) stops the start: the VM is stopped again and the error
 * names the NIC; nothing is left running half-made.
 */
import { StartError } from '../qemu/launcher.js';
import type { DefinitionStore, NicDefinition, VmDefinition } from '../qemu/definition.js';
import { startVm, stopVm } from '../qemu/launcher.js';
import type { StateStore, VmRecord } from '../qemu/state.js';
import type { AddRequest, AddResult } from './add.js';
import { Controller } from './controller.js';

/** The add request that brings a saved NIC back as it was. */
export function requestOfDefinition(n: NicDefinition): AddRequest {
  return {
    id: n.id,
    queues: n.queues,
    mac: n.mac,
    ifname: n.tap,
    bridge: n.bridge,
    vhost: n.vhost,
    ...(n.mtu !== undefined ? { mtu: n.mtu } : {}),
    ...(n.rate !== undefined ? { rate: n.rate } : {}),
    ...(n.bus ? { slot: { bus: n.bus, addr: n.addr ?? '0' } } : {}),
  };
}

export async function startDefined(
  store: StateStore,
  definitions: DefinitionStore,
  def: VmDefinition,
): Promise<{ record: VmRecord; nics: AddResult[] }> {
  return store.withLock(def.name, async () => {
    const paused = def.nics.length > 0;
    const record = await startVm(store, def.spec, { paused });
    if (!paused) return { record, nics: [] };
    const vm = await Controller.open({ name: def.name, store, definitions }).catch(async (e: unknown) => {
      await stopVm(store, def.name).catch(() => {});
      throw e;
    });
    const nics: AddResult[] = [];
    let current: NicDefinition | undefined;
    try {
      for (current of def.nics) {
        // persist: a NIC saved before it had a slot gets the one it takes now
        nics.push(await vm.addNic({ ...requestOfDefinition(current), beforeBoot: true, persist: true }));
      }
      await vm.qmp.execute('cont');
    } catch (e) {
      await vm.close();
      await stopVm(store, def.name).catch(() => {});
      throw new StartError(
        `VM '${def.name}' was stopped again: its saved NIC '${current?.id}' could not be plugged (${(e as Error).message})`,
        { cause: e },
      );
    }
    await vm.close();
    return { record: store.read(def.name) ?? record, nics };
  });
}
