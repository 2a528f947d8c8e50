/**
 * Honest guest readiness and native PCIe unplug, with a real guest (TCG):
 *  - a guest whose driver binds the NIC but that leaves the link down (no network config for it, as
 *    on most real guests): --wait-guest says yes (the driver, DRIVER_OK) and reports the link apart;
 *  - a VM with no guest OS: --wait-guest says no, exit 1 in text and JSON mode alike;
 *  - q35 with native PCIe hot-plug (ACPI hot-plug of root ports off): remove works, although
 *    QEMU refuses the device_del sent again while the first is in progress.
 */
import { expect } from 'chai';
import type { AddTimings } from '../../src/hotplug/add/transaction.js';
import { QEMU, cli, makeBridge, tempDir, trackLink, vmName } from '../helpers/env.js';
import { Guest, guestImage } from '../helpers/guest.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const NAT = vmName('nat');
const NOG = vmName('nog');

interface Added {
  id: string;
  mac: string;
  tap: string;
  guestReady?: boolean;
  guestLinkUp?: boolean;
  guestMq?: boolean;
  activeQueues?: number;
  timings: AddTimings;
}

describe('guest readiness and native PCIe unplug (real guest, TCG)', function () {
  this.timeout(240_000);
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

  for (const machine of ['pc', 'q35'] as const) {
    it(`${machine}: a guest that binds the driver but leaves the link down is ready; the link is reported apart`, async () => {
      guest = await Guest.boot({
        name: vmName(`w${machine}`),
        stateDir: tempDir(),
        cpus: 2,
        machine,
        bridge,
        append: 'mqh.noup',
      });
      const g = guest;
      const r = await cli(['add', g.options.name, '--queues', '4', '--wait-guest', '30', '--json'], g.env);
      expect(r.exitCode, r.stderr).to.equal(0);
      const nic = JSON.parse(r.stdout) as Added;
      trackLink(nic.tap);
      expect(nic).to.deep.include({ guestReady: true, guestLinkUp: false, guestMq: true, activeQueues: 2 });
      // the guest agrees: its driver has the NIC with 4 channels, and the link is down
      const seen = await g.waitFor(() => g.nics.get(nic.mac), 'the NIC in the guest');
      expect(seen.combinedMax).to.equal(4);
      expect((await g.run(`cat /sys/class/net/${seen.ifname}/operstate`)).output).to.deep.equal(['down']);
      // preflight is measured, and the guest wait is not part of the add's total
      const t = nic.timings;
      expect(t.total).to.be.closeTo(t.preflight + t.tap + t.plug + t.bridging + t.confirm, 0.05);
      expect(t.guestWait).to.be.a('number');

      const text = await cli(['add', g.options.name, '--queues', '2', '--wait-guest', '30'], g.env);
      expect(text.exitCode, text.stderr).to.equal(0);
      expect(text.stdout).to.match(/^guest driver took nic1 after \d+ ms: 2 of 2 queue pairs active, link not up yet/m);
      trackLink(`${g.options.name}-nic1`);
    });
  }

  it('no guest OS: --wait-guest says no, exit 1 in text and JSON mode alike', async () => {
    const state = tempDir();
    const env = { MQ_HOTPLUG_STATE_DIR: state };
    const started = await cli(['start', NOG, '--memory', '128M', '--accel', 'tcg', '--qemu', QEMU], env);
    expect(started.exitCode, started.stderr).to.equal(0);
    try {
      const json = await cli(['add', NOG, '--queues', '2', '--no-bridge', '--wait-guest', '1', '--json'], env);
      expect(json.exitCode).to.equal(1);
      const nic = JSON.parse(json.stdout) as Added;
      trackLink(nic.tap);
      expect(nic).to.deep.include({ guestReady: false, guestLinkUp: false });
      const text = await cli(['add', NOG, '--queues', '2', '--no-bridge', '--wait-guest', '1'], env);
      expect(text.exitCode).to.equal(1);
      expect(text.stdout).to.match(/^guest driver did not take nic1 within the wait/m);
      trackLink(`${NOG}-nic1`);
    } finally {
      await cli(['stop', NOG], env);
    }
  });

  it('q35 with native PCIe hot-plug: remove waits through the refused re-sends and completes', async () => {
    guest = await Guest.boot({
      name: NAT,
      stateDir: tempDir(),
      cpus: 2,
      machine: 'q35',
      bridge,
      qemuArgs: ['-global', 'ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off'],
    });
    const g = guest;
    const nic = await g.add(['--queues', '2', '--wait-guest', '30']);
    await g.waitFor(() => g.nics.get(nic.mac), 'the NIC in the guest');
    const r = await cli(['--trace', 'remove', g.options.name, nic.id, '--timeout', '20', '--json'], g.env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const removed = JSON.parse(r.stdout) as { unplugMs: number };
    // native PCIe: the guest waits 5 s before it lets go, so device_del went again and was refused
    expect(removed.unplugMs).to.be.above(5000);
    expect(r.stderr).to.match(
      / qmp < \{.*"error": \{"class": "GenericError", "desc": "[^"]*already in the process of unplug/,
    );
    await g.waitFor(() => g.gone.includes(nic.mac), 'the NIC gone from the guest');
    const left = JSON.parse((await cli(['nics', g.options.name, '--json'], g.env)).stdout) as unknown[];
    expect(left).to.deep.equal([]);
  });
});
