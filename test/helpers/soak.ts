/**
 * A seeded random soak against real QEMU VMs with real guests: adds with valid and invalid options,
 * removes, nics, concurrent adds on two VMs, applies of random specs, host reboots (QEMU killed,
 * /run wiped, start by name), and injected faults (a failing `ip`). After every step the invariants
 * must hold: the VM's QOM NICs, its netdevs, the host's taps and bridge ports, the records and the
 * definitions agree, and no VM died. A failure names the seed and the step, so it can be replayed.
 */
import fs from 'node:fs';
import { Controller } from '../../src/hotplug/controller.js';
import type { AddRequest } from '../../src/hotplug/add/plan.js';
import { HotplugError } from '../../src/hotplug/errors.js';
import { liveNics } from '../../src/hotplug/inspect.js';
import { showLinks } from '../../src/host/ip.js';
import { UsageError } from '../../src/errors.js';
import { StateStore, qemuAlive } from '../../src/qemu/state.js';
import { applyLive, type NicWanted } from '../../src/hotplug/apply.js';
import { DefinitionStore } from '../../src/qemu/definition.js';
import { PREFIX, addOntoVanishingBridge, configDirOf, makeBridge, tempDir, vmName } from './env.js';
import { holdLock } from './lock.js';
import { prng } from './fake-qmp.js';
import { Guest } from './guest.js';

export interface SoakReport {
  seed: number;
  operations: number;
  counts: Record<string, number>;
}

export async function soak(
  operations: number,
  seed: number,
  log: (line: string) => void = () => {},
): Promise<SoakReport> {
  const random = prng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const counts: Record<string, number> = {};
  const count = (what: string) => (counts[what] = (counts[what] ?? 0) + 1);
  const stateDir = tempDir('soak');
  const store = new StateStore(stateDir);
  const bridges = [await makeBridge(), await makeBridge()];
  let faultBridge = await makeBridge(); // deleted under an add to make its bridging fail for real

  const guests = await Promise.all([
    Guest.boot({ name: vmName('sa'), stateDir, cpus: 2, machine: 'pc', bridge: bridges[0] }),
    Guest.boot({ name: vmName('sb'), stateDir, cpus: 2, machine: 'q35', hotplugSlots: 8, bridge: bridges[1] }),
  ]);
  const definitions = new DefinitionStore(configDirOf(stateDir)); // where the guests' `start` defined them
  const open = (g: Guest) => Controller.open({ name: g.options.name, store, definitions });
  const vms = await Promise.all(guests.map(open));

  const validAdd = (): AddRequest => {
    const request: AddRequest = { queues: pick([1, 2, 3, 4, 8, 16]) };
    const r = random();
    if (r < 0.2) request.bridge = null;
    else if (r < 0.4) request.bridge = pick(bridges);
    if (random() < 0.2)
      request.mac = `52:54:00:${[0, 0, 0]
        .map(() =>
          Math.floor(random() * 256)
            .toString(16)
            .padStart(2, '0'),
        )
        .join(':')}`;
    return request;
  };
  const invalidAdds: (() => AddRequest)[] = [
    () => ({ queues: pick([0, 257, 1000, -1]) }),
    () => ({ queues: 'eight' }),
    () => ({
      queues: 2,
      mac: pick(['01:00:5e:00:00:01', 'ff:ff:ff:ff:ff:ff', '52:54:00:zz:00:01', '52-54-00-00-00-01']),
    }),
    () => ({ queues: 2, bridge: `${PREFIX}nobr` }),
    () => ({ queues: 2, ifname: pick(['way-too-long-name', 'bad name', '-x', 'a/b']) }),
    () => ({ queues: 2, id: pick(['9lives', 'a,b', 'x y', '']) || '-' }),
    () => ({ queues: 2, vhost: 'on' }),
  ];

  async function check(step: number, what: string): Promise<void> {
    const links = await showLinks();
    const recordedTaps = new Set<string>();
    for (const vm of vms) {
      const record = store.read(vm.name)!;
      if (!qemuAlive(record)) throw new Error(`step ${step} (${what}): VM ${vm.name} died`);
      const live = (await liveNics(vm.qmp)).map((n) => n.id).sort();
      const recorded = record.nics.map((n) => n.id).sort();
      if (live.join() !== recorded.join())
        throw new Error(`step ${step} (${what}): ${vm.name} QOM NICs [${live}] but record [${recorded}]`);
      const info = await vm.qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
      const netdevs = [
        ...new Set([...info.matchAll(/^[\s\\]*([^\s:]+): index=\d+,type=tap/gm)].map((m) => m[1]!)),
      ].sort();
      // what lasts: the definition holds exactly the record's NICs, as they are
      const kept = (n: { id: string; mac: string; tap: string; queues: number; bridge?: string | null }) =>
        `${n.id}/${n.mac}/${n.tap}/${n.queues}/${n.bridge ?? '-'}`;
      const defined = definitions.read(vm.name)!.nics.map(kept).sort();
      const inRecord = record.nics
        .filter((n) => n.state === 'active')
        .map(kept)
        .sort();
      if (defined.join() !== inRecord.join())
        throw new Error(`step ${step} (${what}): ${vm.name} definition [${defined}] but record [${inRecord}]`);
      const recordedNetdevs = record.nics.map((n) => n.netdev).sort();
      if (netdevs.join() !== recordedNetdevs.join())
        throw new Error(`step ${step} (${what}): ${vm.name} netdevs [${netdevs}] but record [${recordedNetdevs}]`);
      for (const nic of record.nics) {
        recordedTaps.add(nic.tap);
        const link = links.get(nic.tap);
        if (!link) throw new Error(`step ${step} (${what}): tap ${nic.tap} of ${nic.id} missing`);
        const total = (link.numQueues ?? 1) + (link.numDisabled ?? 0);
        if (link.multiQueue !== nic.queues > 1 || (nic.queues > 1 && total !== nic.queues)) {
          throw new Error(
            `step ${step} (${what}): tap ${nic.tap} has ${total} queues (multi_queue ${link.multiQueue}), record ${nic.queues}`,
          );
        }
        if ((link.master ?? null) !== nic.bridge || !link.up)
          throw new Error(
            `step ${step} (${what}): tap ${nic.tap} master ${link.master} up ${link.up}, record bridge ${nic.bridge}`,
          );
      }
    }
    // taps are named <vm>-<id>: any tap of our VMs' names that no record holds is a leak
    const strayTaps = [...links.values()].filter(
      (l) => l.kind === 'tun' && vms.some((vm) => l.ifname.startsWith(`${vm.name}-`)) && !recordedTaps.has(l.ifname),
    );
    if (strayTaps.length) throw new Error(`step ${step} (${what}): stray taps ${strayTaps.map((l) => l.ifname)}`);
    for (const br of bridges) {
      const ports = fs.readdirSync(`/sys/class/net/${br}/brif`).sort();
      const expected = vms
        .flatMap((vm) =>
          store
            .read(vm.name)!
            .nics.filter((n) => n.bridge === br)
            .map((n) => n.tap),
        )
        .sort();
      if (ports.join() !== expected.join())
        throw new Error(`step ${step} (${what}): bridge ${br} ports [${ports}] but records [${expected}]`);
    }
  }

  /** An add may be refused (bad input, or no free slot): then nothing may have changed. */
  async function tryAdd(vm: Controller, request: AddRequest, expectValid: boolean): Promise<string> {
    try {
      await vm.addNic(request);
      if (!expectValid) throw new Error(`invalid add accepted: ${JSON.stringify(request)}`);
      return 'add ok';
    } catch (e) {
      if (e instanceof UsageError) {
        if (expectValid && !/free (hot-plug )?slot|already used/.test(e.message)) throw e;
        return expectValid ? 'add refused (full or clash)' : 'add invalid refused';
      }
      throw e;
    }
  }

  /** A spec made from the VM's NICs: some kept, some with other queues (replaced), one dropped, one new. */
  const randomSpec = (
    nics: { id: string; queues: number; bridge: string | null; mac: string }[],
    step: number,
  ): NicWanted[] => {
    const wanted: NicWanted[] = [];
    for (const n of nics) {
      const r = random();
      if (r < 0.25) continue; // removed
      const queues = r < 0.45 ? pick([1, 2, 4]) : n.queues; // replaced when it differs
      wanted.push({ id: n.id, queues, bridge: n.bridge ?? null, mac: n.mac });
    }
    if (random() < 0.7) wanted.push({ id: `ap${step}`, queues: pick([1, 2, 4, 8]), bridge: pick([...bridges, null]) });
    return wanted;
  };

  try {
    for (let step = 1; step <= operations; step++) {
      const at = Math.floor(random() * vms.length);
      const vm = vms[at]!;
      const nics = store.read(vm.name)!.nics;
      const r = random();
      let what: string;
      if (r < 0.35) {
        what = await tryAdd(vm, validAdd(), true);
      } else if (r < 0.5) {
        what = await tryAdd(vm, pick(invalidAdds)(), false);
      } else if (r < 0.75 && nics.length) {
        const nic = pick(nics);
        await vm.removeNic(pick([nic.id, nic.tap, nic.mac]), 15_000);
        what = 'remove ok';
      } else if (r < 0.8) {
        const err = await vm.removeNic(`${PREFIX}none`).catch((e: unknown) => e);
        if (!(err instanceof UsageError)) throw new Error(`remove of an unknown NIC: ${String(err)}`);
        what = 'remove unknown refused';
      } else if (r < 0.88) {
        await vm.listNics();
        what = 'nics';
      } else if (r < 0.92) {
        const outcomes = await Promise.all(vms.map((v) => tryAdd(v, validAdd(), true)));
        what = `concurrent adds: ${outcomes.join(', ')}`;
      } else if (r < 0.935) {
        const wanted = randomSpec(nics, step);
        try {
          const result = await applyLive(vm.context, wanted, { removeTimeoutMs: 15_000 });
          const ids = store
            .read(vm.name)!
            .nics.map((n) => n.id)
            .sort();
          if (
            ids.join() !==
            wanted
              .map((w) => w.id)
              .sort()
              .join()
          )
            throw new Error(`apply left [${ids}], spec [${wanted.map((w) => w.id)}]`);
          what = result.changed ? 'apply changed' : 'apply unchanged';
        } catch (e) {
          if (!(e instanceof UsageError && /would not fit|already used/.test(e.message))) throw e;
          what = 'apply refused (slots or clash)';
        }
      } else if (r < 0.95) {
        // in one process, on one VM, at once: two adds and a listing queue on the VM's lock
        const outcomes = await Promise.all([
          tryAdd(vm, validAdd(), true),
          tryAdd(vm, validAdd(), true),
          vm.listNics().then(() => 'nics'),
        ]);
        what = `concurrent calls on one VM: ${outcomes.join(', ')}`;
      } else if (r < 0.96) {
        // another process holds the VM's lock and is SIGKILLed: the lock is free again at once
        const holder = holdLock(store.root, vm.name);
        await holder.holding;
        holder.kill('SIGKILL');
        await holder.exited;
        what = await tryAdd(vm, validAdd(), true).then((w) => `lock holder killed, then ${w}`);
      } else if (r < 0.975) {
        // a host reboot: QEMU killed, /run wiped for this VM, start by name brings its NICs back
        await vm.close();
        await guests[at]!.rebootVm();
        vms[at] = await open(guests[at]!);
        what = 'host reboot, NICs back';
      } else {
        // fault: the bridge vanishes between preflight and attach, so ip fails; the add must roll back fully
        const outcome = await addOntoVanishingBridge(vm, faultBridge, 2).catch((e: unknown) => e);
        if (outcome instanceof UsageError) {
          what = 'add refused (full or clash)';
        } else {
          const { error } = outcome as { error: unknown };
          if (!(error instanceof HotplugError)) throw new Error(`add onto a vanished bridge: ${String(error)}`);
          if (error.pending.length) throw new Error(`rollback left something pending: ${error.message}`);
          faultBridge = await makeBridge();
          what = 'fault: bridge gone, add rolled back';
        }
      }
      count(
        what.startsWith('concurrent adds')
          ? 'concurrent adds'
          : what.startsWith('concurrent calls')
            ? 'concurrent calls on one VM'
            : what,
      );
      await check(step, what);
      log(`step ${step}: ${at} ${what}`);
    }
  } catch (e) {
    throw new Error(`soak failed with seed ${seed} (replay: MQH_SEED=${seed}): ${(e as Error).message}`, { cause: e });
  } finally {
    for (const vm of vms) await vm.close();
    for (const g of guests) await g.stop();
  }
  return { seed, operations, counts };
}
