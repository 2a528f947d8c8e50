/** The README's library example, run as written against the package's public entry point. */
import { expect } from 'chai';
import { Controller, QmpClient, StateStore, forDevice, nextEvent, ofEvent, startVm, stopVm } from '../../src/index.js';
import { QEMU, linkExists, makeBridge, tempDir, trackLink, vmName } from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const VM1 = vmName('vm1');

describe('library API (README example, real QEMU)', () => {
  it('opens a VM, sees its own DEVICE_ADDED on events$, adds, lists, removes (pending without a guest)', async () => {
    const store = new StateStore(tempDir());
    const bridge = await makeBridge();
    const record = await startVm(store, {
      name: VM1,
      cpus: 2,
      memory: '128M',
      machine: 'pc',
      accel: 'tcg',
      disks: [],
      hotplugSlots: 0,
      qemu: QEMU,
      qemuArgs: [],
    });
    try {
      const vm = await Controller.open({ name: VM1, store });
      const added: string[] = [];
      vm.events$.pipe(ofEvent('DEVICE_ADDED')).subscribe((e) => added.push(e.data.device as string));
      const nic = await vm.addNic({ queues: 8, bridge });
      trackLink((nic as { tap: string }).tap);
      expect(added).to.deep.equal([nic.id]);
      const nics = await vm.listNics();
      expect(nics.map((n) => [n.id, n.queues, n.bridge])).to.deep.equal([[nic.id, 8, bridge]]);
      const err = await vm.removeNic(nic.id, 500).catch((e: Error) => e);
      expect((err as Error).name).to.equal('UnplugPendingError'); // no guest OS to release it
      await vm.close();

      const qmp = await QmpClient.connect(record.qmp);
      const gone = nextEvent(qmp.events$, 'DEVICE_DELETED', forDevice('nic0'), 300);
      await qmp.execute('device_del', { id: 'nic0' });
      expect(await gone.catch((e: Error) => e.name)).to.equal('EventTimeoutError');
      await qmp.close();
      expect(linkExists((nic as { tap: string }).tap)).to.equal(true);
    } finally {
      await stopVm(store, VM1);
    }
  });
});
