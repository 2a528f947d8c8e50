/**
 * The proof: the guest sees the queues. A real Linux guest (TCG) per test, NICs hot-plugged
 * through the CLI, and both sides checked: the guest's ethtool/interrupts/sysfs and the host's tap.
 */
import { expect } from 'chai';
import { showLink } from '../../src/host/ip.js';
import { Controller } from '../../src/hotplug/controller.js';
import { HotplugError } from '../../src/hotplug/errors.js';
import { StateStore } from '../../src/qemu/state.js';
import { addOntoVanishingBridge, cli, linkExists, makeBridge, tempDir, vmName } from '../helpers/env.js';
import { Guest, guestImage } from '../helpers/guest.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const GMIX = vmName('gmix');
const GRB = vmName('grb');
const GRM = vmName('grm');
const GSMALL = vmName('gsm');

interface NicRow {
  id: string;
  mac: string;
  tap: string;
  queues: number;
  activeQueues: number;
  disabledQueues: number;
  bridge: string;
  linkUp: boolean;
  state: string;
  drift: string[];
}

describe('proof in a real guest (TCG)', function () {
  this.timeout(180_000);
  let guest: Guest | undefined;
  let bridge: string;

  before(async () => {
    await guestImage();
  });
  beforeEach(async () => {
    bridge = await makeBridge();
  });
  afterEach(async () => {
    await guest?.stop();
    guest = undefined;
  });

  async function nics(): Promise<NicRow[]> {
    return JSON.parse((await cli(['nics', guest!.options.name, '--json'], guest!.env)).stdout) as NicRow[];
  }

  for (const machine of ['pc', 'q35'] as const) {
    it(`${machine}, 8 vCPUs: an 8-queue NIC shows 8 combined channels and 8+8 queue interrupts; the tap has 8 active queues`, async () => {
      guest = await Guest.boot({ name: vmName(`g${machine}`), stateDir: tempDir(), cpus: 8, machine, bridge });
      const nic = await guest.add(['--queues', '8', '--wait-guest', '30']);
      expect(nic).to.deep.include({ queues: 8, vectors: 18, bridge, guestReady: true });
      const seen = await guest.waitFor(() => {
        const n = guest!.nics.get(nic.mac);
        return n && n.combinedMax === 8 && n.irqIn === 8 ? n : undefined;
      }, `NIC ${nic.mac} with 8 channels`);
      expect(seen).to.deep.include({ combinedMax: 8, combinedCur: 8, irqIn: 8, irqOut: 8, rxq: 8, txq: 8 });
      const link = (await showLink(nic.tap))!;
      expect(link).to.deep.include({ multiQueue: true, master: bridge, up: true, numQueues: 8, numDisabled: 0 });
      const [row] = await nics();
      expect(row).to.deep.include({
        id: nic.id,
        queues: 8,
        activeQueues: 8,
        disabledQueues: 0,
        bridge,
        linkUp: true,
        state: 'active',
      });
      expect(row!.drift).to.deep.equal([]);
    });
  }

  it('2 vCPUs, 8 queues: the guest starts with 2 pairs; after ethtool -L combined 8, nics shows 8 active', async () => {
    guest = await Guest.boot({ name: GSMALL, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge });
    const nic = await guest.add(['--queues', '8', '--wait-guest']);
    const before = await guest.waitFor(() => guest!.nics.get(nic.mac), 'the NIC');
    expect(before).to.deep.include({ combinedMax: 8, combinedCur: 2, rxq: 2, txq: 2, irqIn: 8, irqOut: 8 });
    expect((await nics())[0]).to.deep.include({ activeQueues: 2, disabledQueues: 6 });
    expect((await guest.run(`ethtool -L ${before.ifname} combined 8`)).rc).to.equal(0);
    const after = await guest.waitFor(() => {
      const n = guest!.nics.get(nic.mac);
      // one report may straddle the change (queues read before, ethtool after): wait for a whole one
      return n && n.combinedCur === 8 && n.rxq === 8 && n.txq === 8 ? n : undefined;
    }, 'combined 8 with 8 rx and tx queues');
    expect(after).to.deep.include({ combinedCur: 8, rxq: 8, txq: 8 });
    expect((await nics())[0]).to.deep.include({ activeQueues: 8, disabledQueues: 0 });
  });

  it('remove: the guest loses the NIC, DEVICE_DELETED is matched, the tap goes, nics is empty', async () => {
    guest = await Guest.boot({ name: GRM, stateDir: tempDir(), cpus: 2, machine: 'q35', bridge });
    const nic = await guest.add(['--queues', '4', '--wait-guest']);
    await guest.waitFor(() => guest!.nics.get(nic.mac), 'the NIC');
    const r = await cli(['remove', GRM, nic.id, '--json'], guest.env);
    expect(r.exitCode, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.deep.include({ id: nic.id, netdev: nic.netdev, tap: nic.tap, mac: nic.mac });
    await guest.waitFor(() => guest!.gone.includes(nic.mac), 'the NIC gone');
    expect(linkExists(nic.tap)).to.equal(false);
    expect(await nics()).to.deep.equal([]);
  });

  it('several NICs in one VM, added and removed in mixed order', async () => {
    guest = await Guest.boot({ name: GMIX, stateDir: tempDir(), cpus: 4, machine: 'pc', bridge });
    const a = await guest.add(['--queues', '2']);
    const b = await guest.add(['--queues', '4', '--no-bridge']);
    await guest.waitFor(() => guest!.nics.has(a.mac) && guest!.nics.has(b.mac), 'NICs a and b');
    expect((await cli(['remove', GMIX, a.tap], guest.env)).exitCode).to.equal(0);
    const c = await guest.add(['--queues', '8']);
    await guest.waitFor(() => guest!.nics.get(c.mac)?.combinedMax === 8 && !guest!.nics.has(a.mac), 'c in, a out');
    expect((await nics()).map((n) => [n.id, n.queues, n.bridge])).to.deep.equal([
      [b.id, 4, null],
      [c.id, 8, bridge],
    ]);
    expect((await cli(['remove', GMIX, b.mac], guest.env)).exitCode).to.equal(0);
    expect((await cli(['remove', GMIX, c.id], guest.env)).exitCode).to.equal(0);
    await guest.waitFor(() => guest!.nics.size === 0, 'no NICs');
    expect(await nics()).to.deep.equal([]);
    for (const n of [a, b, c]) expect(linkExists(n.tap), n.tap).to.equal(false);
    expect(guest.nics.get(b.mac)).to.equal(undefined);
  });

  it('rollback of a failed bridging with a guest leaves nothing: no device, no netdev, no tap', async () => {
    guest = await Guest.boot({ name: GRB, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge });
    const store = new StateStore(guest.options.stateDir);
    const vm = await Controller.open({ name: GRB, store });
    try {
      const { plan, error: err } = await addOntoVanishingBridge(vm, bridge);
      expect(err).to.be.instanceOf(HotplugError);
      expect((err as Error).message).to.match(
        /; undone: device nic0 deleted, netdev nd-nic0 deleted, tap \S+ deleted$/,
      );
      const peripherals = await vm.qmp.execute<{ name: string }[]>('qom-list', { path: '/machine/peripheral' });
      expect(peripherals.map((p) => p.name)).not.to.include('nic0');
      const network = await vm.qmp.execute<string>('human-monitor-command', { 'command-line': 'info network' });
      expect(network).not.to.include('nd-nic0');
      expect(linkExists(plan.tap)).to.equal(false);
      expect(store.read(GRB)!.nics).to.deep.equal([]);
    } finally {
      await vm.close();
    }
  });
});
