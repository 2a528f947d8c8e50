/**
 * Concurrent library calls on one VM, within a process and across processes, against a real QEMU:
 * the VM lock serializes them all, so every add succeeds with its own id, tap and slot, and the
 * record matches QEMU afterwards.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import path from 'node:path';
import { Controller } from '../../src/hotplug/controller.js';
import { stopVm } from '../../src/qemu/launcher.js';
import { StateStore } from '../../src/qemu/state.js';
import { ROOT, makeBridge, smallVm, tempDir, trackLink, trackPid, vmName } from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const CC = vmName('cc');

describe('concurrent library calls on one VM (real QEMU)', function () {
  this.timeout(120_000);

  it('3 processes x 3 concurrent addNic, and concurrent calls in this process: all distinct, record = QEMU', async () => {
    const store = new StateStore(tempDir());
    const bridge = await makeBridge();
    await smallVm(store, CC, bridge);
    try {
      const controller = path.join(ROOT, 'build/src/hotplug/controller.js');
      const state = path.join(ROOT, 'build/src/qemu/state.js');
      // each process: one Controller, three adds at once (the case that used to fail with Duplicate ID)
      const script = `
        import { Controller } from ${JSON.stringify(controller)};
        import { StateStore } from ${JSON.stringify(state)};
        const vm = await Controller.open({ name: ${JSON.stringify(CC)}, store: new StateStore(process.argv[1]) });
        const results = await Promise.allSettled([0, 1, 2].map(() => vm.addNic({ queues: 2 })));
        await vm.close();
        console.log(JSON.stringify(results.map((r) => (r.status === 'fulfilled' ? r.value : { error: r.reason.message }))));`;
      const runs = await Promise.all(
        [0, 1, 2].map(() => {
          const p = execa(process.execPath, ['--input-type=module', '-e', script, store.root], { reject: false });
          trackPid(p.pid!);
          return p;
        }),
      );
      const added = runs.flatMap((r) => {
        expect(r.exitCode, r.stderr).to.equal(0);
        return JSON.parse(r.stdout) as { id?: string; tap?: string; addr?: string; error?: string }[];
      });
      added.forEach((n) => n.tap && trackLink(n.tap));
      expect(added.filter((n) => n.error)).to.deep.equal([]);
      expect(new Set(added.map((n) => n.id)).size).to.equal(9);
      expect(new Set(added.map((n) => n.tap)).size).to.equal(9);
      expect(new Set(added.map((n) => n.addr)).size).to.equal(9);

      // in this process too: concurrent adds and a listing on one Controller
      const vm = await Controller.open({ name: CC, store });
      const [x, y, list] = await Promise.all([vm.addNic({ queues: 1 }), vm.addNic({ queues: 1 }), vm.listNics()]);
      [x, y].forEach((n) => trackLink(n.tap));
      expect(x.id).to.not.equal(y.id);
      expect(list.length).to.be.oneOf([9, 10, 11]);
      const live = (await vm.listNics()).map((n) => n.id).sort();
      expect(live).to.deep.equal(
        store
          .read(CC)!
          .nics.map((n) => n.id)
          .sort(),
      );
      expect(live).to.have.length(11);
      expect((await vm.listNics()).every((n) => n.drift.length === 0)).to.equal(true);
      await vm.close();
    } finally {
      await stopVm(store, CC);
    }
  });
});
