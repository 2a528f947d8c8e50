/**
 * The tap as a good citizen of the host's bridge, against real QEMU, taps, bridges, tc and a "LAN"
 * (a veth uplink into a network namespace the test makes). The guest's side (jumbo frames, the
 * throughput under a rate limit) is in test/e2e/ports.test.ts.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import { Controller } from '../../src/hotplug/controller.js';
import type { AddResult } from '../../src/hotplug/add/transaction.js';
import { stopVm } from '../../src/qemu/launcher.js';
import { StateStore } from '../../src/qemu/state.js';
import { pollUntil } from '../../src/util/time.js';
import {
  addOntoVanishingBridge,
  cli,
  linkExists,
  linkState,
  makeLan,
  ourLinks,
  smallVm,
  tempDir,
  trackLink,
  vmName,
} from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const VM1 = vmName('vm1');

interface TcQdisc {
  kind: string;
  root?: boolean;
  options?: { rate?: number };
}

async function qdiscs(dev: string): Promise<TcQdisc[]> {
  return JSON.parse((await execa('tc', ['-j', 'qdisc', 'show', 'dev', dev])).stdout) as TcQdisc[];
}

/**
 * What this test's VM did, from its event log: an add that got past preflight publishes
 * DEVICE_ADDED there before any ifb or tap is set up. (Not the host's list of mqi* ifbs: another
 * run on the same host makes and deletes its own.)
 */
const eventsOf = (store: StateStore, vm: string): string[] => {
  try {
    return fs
      .readFileSync(store.eventLogPath(vm), 'utf8')
      .trim()
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { event: string }).event);
  } catch {
    return [];
  }
};

describe('ports: the tap on the host bridge (real QEMU, taps, bridges, tc, a LAN namespace)', function () {
  let store: StateStore;
  beforeEach(() => {
    store = new StateStore(tempDir());
  });
  afterEach(async () => {
    for (const name of store.list()) await stopVm(store, name).catch(() => {});
  });

  const boot = (name = VM1, bridge?: string) => smallVm(store, name, bridge);

  // an uplink MAC lower than any tap's, and one higher than nearly every random tap MAC
  for (const uplinkMac of ['02:00:00:00:00:01', 'fc:ff:ff:00:00:01']) {
    it(`the bridge keeps its MAC (${uplinkMac}) and its MTU (9000) while taps come and go`, async () => {
      const lan = await makeLan({ mac: uplinkMac, mtu: 9000 });
      const before = linkState(lan.bridge);
      expect(before).to.deep.equal({ address: uplinkMac, mtu: 9000 });
      for (const round of [0, 1]) {
        await boot(VM1, lan.bridge);
        const vm = await Controller.open({ name: VM1, store });
        const added: AddResult[] = [];
        for (let i = 0; i < 3; i++) {
          const nic = await vm.addNic({ queues: 4 });
          trackLink(nic.tap);
          added.push(nic);
          expect(linkState(lan.bridge), `round ${round}, after add ${i}`).to.deep.equal(before);
          expect(linkState(nic.tap)).to.deep.equal({ address: `fe${nic.mac.slice(2)}`, mtu: 9000 });
          expect(nic).to.deep.include({ tapMac: `fe${nic.mac.slice(2)}`, tapMtu: 9000 });
        }
        await vm.close();
        await stopVm(store, VM1); // stop deletes the VM's taps
        await pollUntil(() => added.every((n) => !linkExists(n.tap)), 5000);
        expect(added.filter((n) => linkExists(n.tap))).to.deep.equal([]);
        expect(linkState(lan.bridge), `round ${round}, after the taps went`).to.deep.equal(before);
      }
    });
  }

  it('shows that the test would catch the bug: a random-MAC 1500 tap moves and shrinks such a bridge', async () => {
    // what `add` did before: the tap joins as QEMU made it
    const lan = await makeLan({ mac: 'fc:ff:ff:00:00:01', mtu: 9000 });
    const tap = trackLink(`${lan.bridge.slice(0, 12)}x`);
    await execa('ip', ['tuntap', 'add', 'dev', tap, 'mode', 'tap']);
    await execa('ip', ['link', 'set', 'dev', tap, 'address', '02:de:f6:00:00:01']); // as random as the kernel's
    await execa('ip', ['link', 'set', 'dev', tap, 'master', lan.bridge, 'up']);
    expect(linkState(lan.bridge)).to.deep.equal({ address: '02:de:f6:00:00:01', mtu: 1500 });
  });

  it('--mtu tells the guest (host_mtu) and stays within the bridge; nics shows MTU and rate', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:02', mtu: 9000 });
    await boot(VM1, lan.bridge);
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const r = await cli(['add', VM1, '--queues', '2', '--mtu', '8000', '--rate', '200', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const nic = JSON.parse(r.stdout) as AddResult;
    trackLink(nic.tap);
    expect(nic).to.deep.include({ tapMtu: 9000, guestMtu: 8000, rate: 200 });
    const vm = await Controller.open({ name: VM1, store });
    expect(await vm.qmp.execute('qom-get', { path: `/machine/peripheral/${nic.id}`, property: 'host_mtu' })).to.equal(
      8000,
    );
    const [view] = await vm.listNics();
    await vm.close();
    expect(view).to.deep.include({ tapMtu: 9000, guestMtu: 8000, rate: 200, tapMac: nic.tapMac, drift: [] });
    const table = await cli(['nics', VM1], env);
    expect(table.stdout).to.match(/MTU\s+RATE/);
    expect(table.stdout).to.match(/9000 \(guest 8000\)\s+200M/);
  });

  it('--rate shapes both ways with tc: tbf on the tap, ingress redirected to an ifb shaped the same', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:03' });
    await boot(VM1, lan.bridge);
    const vm = await Controller.open({ name: VM1, store });
    const nic = await vm.addNic({ queues: 4, rate: 50 });
    trackLink(nic.tap);
    trackLink(nic.ifb!);
    const tapQ = await qdiscs(nic.tap);
    expect(tapQ.find((q) => q.root)).to.deep.include({ kind: 'tbf' });
    expect(tapQ.find((q) => q.root)!.options!.rate).to.equal(50 * 125_000);
    expect(tapQ.some((q) => q.kind === 'ingress')).to.equal(true);
    const filter = (await execa('tc', ['filter', 'show', 'dev', nic.tap, 'parent', 'ffff:'])).stdout;
    expect(filter).to.match(new RegExp(`mirred \\(Egress Redirect to device ${nic.ifb}\\)`));
    const ifbQ = await qdiscs(nic.ifb!);
    expect(ifbQ[0]).to.deep.include({ kind: 'tbf', root: true });
    expect(ifbQ[0]!.options!.rate).to.equal(50 * 125_000);
    expect((await vm.listNics())[0]!.drift).to.deep.equal([]);

    // knocked about by hand: qdisc gone, MTU and MAC changed, off the bridge; nics sees it all
    await execa('tc', ['qdisc', 'del', 'dev', nic.tap, 'root']);
    await execa('ip', ['link', 'set', 'dev', nic.tap, 'nomaster']);
    await execa('ip', ['link', 'set', 'dev', nic.tap, 'mtu', '1400', 'address', '02:12:34:56:78:9a']);
    expect((await vm.listNics())[0]!.drift).to.deep.equal([
      `tap MAC 02:12:34:56:78:9a, expected ${nic.tapMac}`,
      'tap MTU 1400, expected 1500',
      `tap not on bridge ${lan.bridge}`,
      "no 50 Mbit/s limit on the tap's egress (guest receive)",
    ]);
    // the reconcile reaction restores each and says what it fixed
    const fixed = new Promise<string[]>((resolve) =>
      vm.events$.subscribe((e) => {
        if (e.source === 'controller' && e.event === 'NIC_REATTACHED') resolve(e.data.fixed);
      }),
    );
    const reconciling = vm.startReconcile(vm.events$, 100);
    expect(await fixed).to.have.length(4);
    reconciling.unsubscribe();
    expect((await vm.listNics())[0]!.drift).to.deep.equal([]);
    expect(linkState(nic.tap)).to.deep.equal({ address: nic.tapMac, mtu: 1500 });
    await vm.close();
  });

  it('the ifb of a rate limit goes with its VM: at stop, and when QEMU died (SIGKILL) and stop cleans up', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:07' });
    for (const how of ['stop', 'killed'] as const) {
      await boot(VM1, lan.bridge);
      const vm = await Controller.open({ name: VM1, store });
      const nic = await vm.addNic({ queues: 2, rate: 20 });
      await vm.close();
      trackLink(nic.tap);
      trackLink(nic.ifb!);
      expect(linkExists(nic.ifb!), how).to.equal(true);
      if (how === 'killed') {
        const record = store.read(VM1)!;
        process.kill(record.pid, 'SIGKILL');
        await pollUntil(() => !fs.existsSync(`/proc/${record.pid}/cmdline`) || !linkExists(nic.tap), 5000);
      }
      expect((await stopVm(store, VM1)).how).to.equal(how === 'stop' ? 'quit' : 'already-dead');
      expect(linkExists(nic.ifb!), how).to.equal(false);
    }
  });

  it('a failed bridging with --rate rolls back the ifb too', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:04' });
    await boot(VM1);
    const vm = await Controller.open({ name: VM1, store });
    const { plan, error } = await addOntoVanishingBridge(vm, lan.bridge, 2, { rate: 10 });
    await vm.close();
    expect((error as Error).message).to.match(new RegExp(`ifb ${plan.ifb} deleted`));
    expect(linkExists(plan.ifb!)).to.equal(false);
    // the device may stay (no guest to release it: unplug-pending), its ifb may not
    expect(store.read(VM1)!.nics.filter((n) => n.ifb && linkExists(n.ifb))).to.deep.equal([]);
  });

  it('bad MTUs, rates and fe: MACs: one line each, exit 2, nothing left behind', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:05', mtu: 1500 });
    await boot(VM1, lan.bridge);
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const linksBefore = ourLinks().sort();
    const cases: [string[], RegExp][] = [
      [['--mtu', '67'], /^mq-hotplug: invalid MTU '67': use an integer from 68 to 65535\n$/],
      [['--mtu', '70000'], /^mq-hotplug: invalid MTU '70000'/],
      [['--mtu', 'abc'], /^mq-hotplug: invalid MTU 'abc'/],
      [
        ['--mtu', '9000'],
        new RegExp(`^mq-hotplug: invalid MTU '9000': bridge '${lan.bridge}' has MTU 1500; use at most 1500`),
      ],
      [['--rate', '0'], /^mq-hotplug: invalid rate '0': use an integer from 1 to 100000 \(Mbit\/s\)\n$/],
      [['--rate=-1'], /^mq-hotplug: invalid rate '-1'/],
      [['--rate', 'abc'], /^mq-hotplug: invalid rate 'abc'/],
      [
        ['--mac', 'fe:54:00:12:34:56'],
        /^mq-hotplug: invalid MAC 'fe:54:00:12:34:56': MACs starting with fe are kept for taps/,
      ],
    ];
    for (const [args, message] of cases) {
      const r = await cli(['add', VM1, '--queues', '2', ...args], env);
      expect(r.exitCode, args.join(' ')).to.equal(2);
      expect(r.stderr, args.join(' ')).to.match(message);
      expect(r.stderr.trim().split('\n'), args.join(' ')).to.have.length(1);
    }
    expect(ourLinks().sort()).to.deep.equal(linksBefore);
    expect(eventsOf(store, VM1)).to.deep.equal([]); // refused at preflight: nothing was plugged or set up
    const vm = await Controller.open({ name: VM1, store });
    expect(await vm.listNics()).to.deep.equal([]);
    await vm.close();
  });

  it('--dry-run shows the ifb, tc and ip lines; --trace shows every QMP message, ip and tc line', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:00:06' });
    await boot(VM1, lan.bridge);
    const env = { MQ_HOTPLUG_STATE_DIR: store.root };
    const dry = await cli(
      ['add', VM1, '--queues', '2', '--rate', '10', '--mac', '52:54:00:00:00:66', '--dry-run'],
      env,
    );
    expect(dry.exitCode, dry.stderr).to.equal(0);
    const lines = dry.stdout
      .split('\n')
      .filter((l) => l.startsWith('  '))
      .map((l) => l.trim());
    expect(lines.map((l) => l.split(' ').slice(0, 4).join(' '))).to.deep.equal([
      `{"execute":"netdev_add","arguments":{"type":"tap","id":"nd-nic0","ifname":"${VM1}-nic0","script":"no","downscript":"no","vhost":false,"queues":2}}`,
      '{"execute":"device_add","arguments":{"driver":"virtio-net-pci","id":"nic0","netdev":"nd-nic0","mac":"52:54:00:00:00:66","mq":true,"vectors":6,"bus":"pci.0","addr":"0x2"}}',
      'ip tuntap add dev', // the owned tap, before netdev_add
      'ip link set dev',
      'ip link add name',
      'ip link set dev',
      'tc qdisc add dev',
      'tc qdisc add dev',
      'tc filter add dev',
      'tc qdisc add dev',
      'ip link set dev',
    ]);
    expect(lines.at(-1)).to.equal(
      `ip link set dev ${VM1}-nic0 address fe:54:00:00:00:66 mtu 1500 master ${lan.bridge} up`,
    );
    expect(linkExists(`${VM1}-nic0`)).to.equal(false);

    const traced = await cli(
      ['--trace', 'add', VM1, '--queues', '2', '--rate', '10', '--mac', '52:54:00:00:00:66'],
      env,
    );
    expect(traced.exitCode, traced.stderr).to.equal(0);
    trackLink(`${VM1}-nic0`);
    const stamp = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /;
    const stderr = traced.stderr.split('\n').filter(Boolean);
    const trace = stderr.filter((l) => stamp.test(l));
    // besides the trace, only the notes
    expect(
      stderr.filter((l) => !stamp.test(l)).every((l) => l.startsWith('note: ')),
      traced.stderr,
    ).to.equal(true);
    const body = trace.map((l) => l.replace(stamp, ''));
    expect(body.some((l) => /^qmp > \{"execute":"netdev_add"/.test(l))).to.equal(true);
    expect(body.some((l) => /^qmp < \{"return": \{\}, "id": "mqh-\d+"\}/.test(l))).to.equal(true);
    expect(body.filter((l) => l.startsWith('tc  > '))).to.have.length(4);
    expect(body).to.include(
      `ip  > link set dev ${VM1}-nic0 address fe:54:00:00:00:66 mtu 1500 master ${lan.bridge} up`,
    );
  });
});
