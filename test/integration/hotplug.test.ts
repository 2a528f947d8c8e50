import { expect } from 'chai';
import { execa } from 'execa';
import { Controller } from '../../src/hotplug/controller.js';
import { type AddResult, executeAdd } from '../../src/hotplug/add/transaction.js';
import { capabilitiesOf } from '../../src/qemu/capabilities.js';
import { HotplugError } from '../../src/hotplug/errors.js';
import { startVm, stopVm } from '../../src/qemu/launcher.js';
import { StateStore } from '../../src/qemu/state.js';
import { showLink } from '../../src/host/ip.js';
import { UsageError } from '../../src/errors.js';
import { vhostNetUsable } from '../../src/host/ip.js';
import {
  QEMU,
  addOntoVanishingBridge,
  cli,
  linkExists,
  makeBridge,
  ourLinks,
  tempDir,
  trackLink,
  uniqueName,
  vmName,
} from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const VM1 = vmName('vm1');
const VM2 = vmName('vm2');

interface QomNic {
  name: string;
  type: string;
}

async function peripheralNics(vm: Controller): Promise<string[]> {
  const list = await vm.qmp.execute<QomNic[]>('qom-list', { path: '/machine/peripheral' });
  return list
    .filter((p) => p.type === 'child<virtio-net-pci>')
    .map((p) => p.name)
    .sort();
}

async function netdevIds(vm: Controller): Promise<string[]> {
  const info = await vm.qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
  // one line per queue: dedupe
  return [...new Set([...info.matchAll(/^[\s\\]*([^\s:]+): index=\d+,type=tap/gm)].map((m) => m[1]!))].sort();
}

describe('multiqueue NIC hot-plug (real QEMU, taps, bridges)', function () {
  let store: StateStore;
  let bridge: string;
  beforeEach(async () => {
    store = new StateStore(tempDir());
    bridge = await makeBridge();
  });
  afterEach(async () => {
    for (const name of store.list()) await stopVm(store, name).catch(() => {});
  });

  const boot = (machine: 'pc' | 'q35', slots = 6, name = VM1) =>
    startVm(store, {
      name,
      cpus: 2,
      memory: '128M',
      machine,
      accel: 'tcg',
      disks: [],
      hotplugSlots: slots,
      qemu: QEMU,
      qemuArgs: [],
      bridge,
    });

  for (const machine of ['pc', 'q35'] as const) {
    it(`${machine}: adds NICs with 1, 2, 8, 16 and 256 queues; taps multiqueue, bridged, up; QOM mq and 2N+2 vectors`, async () => {
      await boot(machine);
      const vm = await Controller.open({ name: VM1, store });
      try {
        for (const queues of [1, 2, 8, 16, 256]) {
          const r = (await vm.addNic({ queues })) as AddResult;
          trackLink(r.tap);
          expect(r).to.deep.include({ queues, vectors: 2 * queues + 2, bridge, vhost: false });
          expect(r.bus).to.equal(machine === 'pc' ? 'pci.0' : `mqh-port${[1, 2, 8, 16, 256].indexOf(queues)}`);
          const link = (await showLink(r.tap))!;
          expect(link.kind).to.equal('tun');
          expect(link.multiQueue, `multi_queue for ${queues}`).to.equal(queues > 1);
          if (queues > 1) expect(link.numQueues! + link.numDisabled!).to.equal(queues);
          expect(link.master).to.equal(bridge);
          expect(link.up).to.equal(true);
          const get = (property: string) =>
            vm.qmp.execute('qom-get', { path: `/machine/peripheral/${r.id}`, property });
          expect(await get('mq')).to.equal(true);
          expect(await get('vectors')).to.equal(2 * queues + 2);
          expect(await get('mac')).to.equal(r.mac);
          expect(await get('netdev')).to.equal(r.netdev);
        }
        const record = store.read(VM1)!;
        expect(record.nics.map((n) => n.queues)).to.deep.equal([1, 2, 8, 16, 256]);
        const views = await vm.listNics();
        expect(views.map((v) => [v.queues, v.bridge, v.linkUp, v.state, v.drift])).to.deep.equal(
          [1, 2, 8, 16, 256].map((q) => [q, bridge, true, 'active', []]),
        );
      } finally {
        await vm.close();
      }
    });
  }

  it('refuses --vhost on without /dev/vhost-net before touching QEMU; the VM lives on', async function () {
    if (vhostNetUsable()) this.skip(); // the device file, opened as QEMU would (not a network link)
    await boot('pc');
    const r = await cli(['add', VM1, '--queues', '4', '--vhost', 'on'], { MQ_HOTPLUG_STATE_DIR: store.root });
    expect(r.exitCode).to.equal(2);
    const vm = await Controller.open({ name: VM1, store });
    // why it is refused before QEMU is asked: 7.2 would abort the VM, 10.0 would answer an error
    const qemu = capabilitiesOf(vm.qmp.version);
    const why = qemu.vhostWithoutDeviceAborts ? 'would abort the whole VM on it' : 'would refuse it';
    expect(r.stderr).to.equal(
      `mq-hotplug: vhost 'on' needs /dev/vhost-net, which is missing or QEMU's user cannot open it (QEMU ${qemu.version} ${why}); use --vhost auto or off\n`,
    );
    expect(await vm.qmp.execute('query-status')).to.deep.include({ running: true });
    expect(await netdevIds(vm)).to.deep.equal([]);
    await vm.close();
  });

  it('refuses every bad input in preflight, one line each, changing nothing', async () => {
    await boot('q35', 1);
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const first = await cli(['add', VM1, '--queues', '2', '--id', 'keep', '--mac', '52:54:00:aa:bb:cc', '--json'], env);
    expect(first.exitCode, first.stderr).to.equal(0);
    const kept = JSON.parse(first.stdout) as AddResult;
    trackLink(kept.tap);
    await cli(['start', VM2, '--memory', '128M'], env);
    const notBridge = uniqueName('d');
    trackLink(notBridge);
    await execa('ip', ['tuntap', 'add', 'dev', notBridge, 'mode', 'tap']);
    try {
      const before = ourLinks().sort();
      const cases: [string, string[], RegExp][] = [
        [VM1, ['--queues', '0'], /invalid queue count '0': use an integer from 1 to 256/],
        [VM1, ['--queues', '257'], /invalid queue count '257': use an integer from 1 to 256/],
        [VM1, ['--queues', '8x'], /invalid queue count '8x'/],
        [VM1, ['--queues', '2', '--mac', 'zz:54:00:00:00:01'], /invalid MAC 'zz:54:00:00:00:01'/],
        [VM1, ['--queues', '2', '--mac', '03:00:00:00:00:01'], /it is multicast/],
        [
          VM1,
          ['--queues', '2', '--mac', '52:54:00:AA:BB:CC'],
          new RegExp(`MAC '52:54:00:aa:bb:cc' is already used in VM '${VM1}'`),
        ],
        [VM1, ['--queues', '2', '--id', 'keep'], /NIC id 'keep' is already used/],
        [VM1, ['--queues', '2', '--id', '1bad'], /invalid NIC id '1bad'/],
        [VM1, ['--queues', '2', '--id', 'a,b=c'], /invalid NIC id 'a,b=c'/],
        [
          VM1,
          ['--queues', '2', '--ifname', 'sixteen-chars-xx'],
          /invalid tap name 'sixteen-chars-xx': use 1-15 characters/,
        ],
        [VM1, ['--queues', '2', '--ifname', 'a b'], /invalid tap name 'a b'/],
        [VM1, ['--queues', '2', '--ifname', bridge], new RegExp(`tap name '${bridge}' is already taken`)],
        [VM1, ['--queues', '2', '--bridge', 'nosuchbr0'], /bridge 'nosuchbr0' does not exist/],
        [VM1, ['--queues', '2', '--bridge', notBridge], new RegExp(`'${notBridge}' is not a bridge`)],
        [VM1, ['--queues', '2', '--vhost', 'maybe'], /argument 'maybe' is invalid. Allowed choices are auto, on, off/],
        [
          VM1,
          ['--queues', '2'],
          /no free hot-plug slot: every pcie-root-port is taken \(start it with more --hotplug-slots\)/,
        ],
        ['novm', ['--queues', '2'], /no VM named 'novm'/],
      ];
      for (const [vmName, args, message] of cases) {
        const r = await cli(['add', vmName, ...args], env);
        expect(r.exitCode, args.join(' ')).to.equal(2);
        const lines = r.stderr
          .trim()
          .split('\n')
          .filter((l) => !l.startsWith('note:') && !l.startsWith('(run with'));
        expect(lines, args.join(' ')).to.have.length(1);
        expect(lines[0], args.join(' ')).to.match(message);
      }
      // a paused VM is refused too
      const vm2 = await Controller.open({ name: VM2, store });
      await vm2.qmp.execute('stop');
      await vm2.close();
      const paused = await cli(['add', VM2, '--queues', '2'], env);
      expect(paused.stderr).to.match(new RegExp(`VM '${VM2}' is paused, not running`));
      const vm = await Controller.open({ name: VM1, store });
      expect(await peripheralNics(vm)).to.deep.equal(['keep']);
      expect(await netdevIds(vm)).to.deep.equal(['nd-keep']);
      await vm.close();
      expect(ourLinks().sort()).to.deep.equal(before);
      expect(store.read(VM1)!.nics.map((n) => n.id)).to.deep.equal(['keep']);
    } finally {
      await execa('ip', ['link', 'del', 'dev', notBridge]);
    }
  });

  it('rolls back netdev_add when device_add fails (the slot was taken after preflight): no netdev, no tap', async () => {
    await boot('q35', 1);
    const vm = await Controller.open({ name: VM1, store });
    try {
      const plan = await vm.planNic({ queues: 4 });
      trackLink(plan.tap);
      expect(plan.bus).to.equal('mqh-port0');
      await vm.qmp.execute('device_add', { driver: 'virtio-rng-pci', id: 'squatter', bus: 'mqh-port0' });
      const err = await executeAdd(vm.context, plan).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(HotplugError);
      expect((err as Error).message).to.match(
        /^device_add failed: .*; undone: netdev nd-nic0 deleted, tap \S+ deleted$/,
      );
      expect(linkExists(plan.tap)).to.equal(false);
      expect(await netdevIds(vm)).to.deep.equal([]);
      expect(await peripheralNics(vm)).to.deep.equal([]);
      expect(store.read(VM1)!.nics).to.deep.equal([]);
      // the ids are free again
      await vm.qmp.execute('device_del', { id: 'squatter' });
      await vm.context.taps.prepare(plan); // QEMU, not root, opens only a tap made for it
      await vm.qmp.execute('netdev_add', {
        type: 'tap',
        id: plan.netdev,
        ifname: plan.tap,
        script: 'no',
        downscript: 'no',
        queues: 4,
      });
      await vm.qmp.execute('netdev_del', { id: plan.netdev });
      await vm.context.taps.release(plan);
    } finally {
      await vm.close();
    }
  });

  it('rolls back when bridging fails (bridge gone after preflight); without a guest the device is reported pending', async () => {
    await boot('pc');
    const vm = await Controller.open({ name: VM1, store });
    try {
      const { plan, error: err } = await addOntoVanishingBridge(vm, bridge);
      expect(err).to.be.instanceOf(HotplugError);
      const device = `device nic0 \\(the guest has not released it; recorded as unplug-pending\\)`;
      // the tap stays with the device the guest holds (10.0 keeps it open until DEVICE_DELETED); stop deletes it
      const tap = `undone: netdev nd-nic0 deleted; still pending: ${device}, tap ${plan.tap} \\(kept with device nic0\\)`;
      expect((err as Error).message).to.match(new RegExp(`^attaching ${plan.tap} to ${bridge} failed: .*; ${tap}$`));
      expect(linkExists(plan.tap)).to.equal(true);
      // the netdev stays listed while its (pending) device holds it
      expect(store.read(VM1)!.nics.map((n) => [n.id, n.state])).to.deep.equal([['nic0', 'unplug-pending']]);
    } finally {
      await vm.close();
    }
  });

  it('serializes two concurrent adds from two processes: both succeed with distinct ids, taps, MACs', async () => {
    await boot('q35', 4);
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const [a, b] = await Promise.all([
      cli(['add', VM1, '--queues', '8', '--json'], env),
      cli(['add', VM1, '--queues', '8', '--json'], env),
    ]);
    expect(a.exitCode, a.stderr).to.equal(0);
    expect(b.exitCode, b.stderr).to.equal(0);
    const [ra, rb] = [JSON.parse(a.stdout), JSON.parse(b.stdout)] as AddResult[];
    trackLink(ra!.tap);
    trackLink(rb!.tap);
    expect(new Set([ra!.id, rb!.id]).size).to.equal(2);
    expect(new Set([ra!.tap, rb!.tap]).size).to.equal(2);
    expect(new Set([ra!.mac, rb!.mac]).size).to.equal(2);
    expect(new Set([ra!.bus, rb!.bus]).size).to.equal(2);
    expect(store.read(VM1)!.nics).to.have.length(2);
  });

  it('remove without a guest OS times out, exits 3 and records the NIC as unplug-pending', async () => {
    await boot('pc');
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const added = JSON.parse((await cli(['add', VM1, '--queues', '2', '--json'], env)).stdout) as AddResult;
    trackLink(added.tap);
    const r = await cli(['remove', VM1, added.mac, '--timeout', '1'], env);
    expect(r.exitCode).to.equal(3);
    expect(r.stderr).to.match(/^mq-hotplug: no DEVICE_DELETED for 'nic0' within 1000 ms: .*recorded as unplug-pending/);
    const nics = JSON.parse((await cli(['nics', VM1, '--json'], env)).stdout) as { id: string; state: string }[];
    expect(nics.map((n) => [n.id, n.state])).to.deep.equal([['nic0', 'unplug-pending']]);
    expect(linkExists(added.tap)).to.equal(true); // kept until the guest lets go
    const unknown = await cli(['remove', VM1, 'nic7'], env);
    expect(unknown.exitCode).to.equal(2);
    expect(unknown.stderr).to.equal(
      `mq-hotplug: no NIC 'nic7' in VM '${VM1}'; its NICs: nic0 (${added.tap}, ${added.mac})\n`,
    );
  });

  it('--dry-run prints the exact QMP commands and ip argv, and changes nothing', async () => {
    await boot('pc');
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const r = await cli(
      [
        'add',
        VM1,
        '--queues',
        '8',
        '--dry-run',
        '--id',
        'dry',
        '--ifname',
        uniqueName('t'),
        '--mac',
        '52:54:00:00:00:42',
        '--json',
      ],
      env,
    );
    expect(r.exitCode, r.stderr).to.equal(0);
    const plan = JSON.parse(r.stdout) as { commands: unknown[]; hostCommands: string[][]; tap: string };
    expect(plan.commands).to.deep.equal([
      {
        execute: 'netdev_add',
        arguments: {
          type: 'tap',
          id: 'nd-dry',
          ifname: plan.tap,
          script: 'no',
          downscript: 'no',
          vhost: false,
          queues: 8,
        },
      },
      {
        execute: 'device_add',
        arguments: {
          driver: 'virtio-net-pci',
          id: 'dry',
          netdev: 'nd-dry',
          mac: '52:54:00:00:00:42',
          mq: true,
          vectors: 18,
          bus: 'pci.0',
          addr: '0x2', // pinned: the first free slot of pci.0
        },
      },
    ]);
    expect(plan.hostCommands.at(-1)).to.deep.equal([
      ...['ip', 'link', 'set', 'dev', plan.tap, 'address', 'fe:54:00:00:00:42', 'mtu', '1500'],
      ...['master', bridge, 'up'],
    ]);
    expect(linkExists(plan.tap)).to.equal(false);
    const vm = await Controller.open({ name: VM1, store });
    expect(await peripheralNics(vm)).to.deep.equal([]);
    await vm.close();
  });

  it('a tap made by hand without multi_queue (the trap) is refused saying what it is and what to do', async () => {
    await boot('pc');
    const tap = trackLink(uniqueName('t'));
    await execa('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']); // as tunctl makes it: no multi_queue
    const r = await cli(['add', VM1, '--queues', '8', '--ifname', tap], { MQ_HOTPLUG_STATE_DIR: store.root });
    expect(r.exitCode).to.equal(2);
    expect(r.stderr).to.equal(
      `mq-hotplug: tap name '${tap}' is taken by a tap made without multi_queue (tunctl, or 'ip tuntap add' without ` +
        `multi_queue), which QEMU cannot open with 8 queues; mq-hotplug makes its own tap for each NIC: delete it ` +
        `('ip link del ${tap}') or pick another --ifname\n`,
    );
    const vm = await Controller.open({ name: VM1, store });
    expect(await peripheralNics(vm)).to.deep.equal([]);
    await vm.close();
  });

  it('warnings go to stderr also with --json, and stay in the JSON', async () => {
    await boot('pc');
    const r = await cli(['add', VM1, '--queues', '9', '--json'], { MQ_HOTPLUG_STATE_DIR: store.root });
    expect(r.exitCode, r.stderr).to.equal(0);
    const nic = JSON.parse(r.stdout) as { tap: string; notes: string[] };
    trackLink(nic.tap);
    const warning = "9 queues for 2 vCPUs: the guest enables 2 pairs until 'ethtool -L <if> combined 9'";
    expect(nic.notes).to.include(warning);
    expect(r.stderr.split('\n')).to.include(`note: ${warning}`);
  });

  it('rejects a usage error from the library API as UsageError', async () => {
    await boot('pc');
    const vm = await Controller.open({ name: VM1, store });
    expect(await vm.addNic({ queues: 'many' }).catch((e: unknown) => e)).to.be.instanceOf(UsageError);
    await vm.close();
  });
});
