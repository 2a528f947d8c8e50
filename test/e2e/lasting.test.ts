/**
 * Lasting NICs as a real guest (TCG) sees them: after a host reboot its NICs come back with the
 * same MACs, queue counts and names; apply adds, removes and replaces NICs the guest confirms; and
 * a QEMU killed in the middle of an apply is converged by a start and the next apply.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import type { ApplyResult } from '../../src/hotplug/apply.js';
import { pollUntil } from '../../src/util/time.js';
import {
  CLI,
  cli,
  expectUnprivileged,
  makeBridge,
  linkExists,
  tapQueues,
  tapsOf,
  tempDir,
  trackLink,
  trackPid,
  vmName,
} from '../helpers/env.js';
import { readTap } from '../../src/host/tap.js';
import { Guest, guestImage } from '../helpers/guest.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const LA = vmName('la');
const LK = vmName('lk');

describe('lasting NICs seen from a real guest (TCG)', function () {
  this.timeout(300_000);
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

  const specFile = (nics: object[]) => {
    const file = path.join(tempDir('spec'), 'nics.json');
    fs.writeFileSync(file, JSON.stringify({ nics }));
    return file;
  };
  const apply = async (g: Guest, file: string, more: string[] = []) => {
    const r = await cli(['apply', g.options.name, '-f', file, '--json', ...more], g.env);
    expect(r.exitCode, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as ApplyResult;
  };
  /** What the guest shows of each NIC, by MAC: its name and its channels. */
  const view = (g: Guest) =>
    Object.fromEntries([...g.nics.values()].map((n) => [n.mac, `${n.ifname} ${n.combinedMax}/${n.irqIn}`]));

  for (const machine of ['pc', 'q35'] as const) {
    it(`${machine}: after a host reboot the guest finds the same NICs: MACs, queue counts, names, slots`, async () => {
      guest = await Guest.boot({ name: vmName(`lr${machine}`), stateDir: tempDir(), cpus: 4, machine, bridge });
      const a = await guest.add(['--queues', '4']);
      const b = await guest.add(['--queues', '2', '--rate', '100']);
      await guest.waitFor(
        () => guest!.nics.get(a.mac)?.combinedMax === 4 && guest!.nics.get(b.mac)?.combinedMax === 2,
        'both NICs',
      );
      const before = view(guest);
      const slots = (await cli(['qmp', guest.options.name, 'query-pci'], guest.env)).stdout;
      const slotOf = (text: string, id: string) => new RegExp(`"slot": (\\d+)[^}]*?"qdev_id": "${id}"`).exec(text)?.[1];

      await guest.rebootHost();
      const g = guest;
      await g.waitFor(
        () => Object.keys(view(g)).length === 2 && [...g.nics.values()].every((n) => n.combinedMax > 0),
        'the NICs after the reboot',
      );
      expect(view(g)).to.deep.equal(before);
      const after = (await cli(['qmp', g.options.name, 'query-pci'], g.env)).stdout;
      for (const id of [a.id, b.id]) expect(slotOf(after, id), id).to.equal(slotOf(slots, id));
      const rows = JSON.parse((await cli(['nics', g.options.name, '--json'], g.env)).stdout) as {
        id: string;
        bridge: string;
        linkUp: boolean;
        rate: number | null;
        drift: string[];
      }[];
      expect(rows.map((r) => [r.id, r.bridge, r.linkUp, r.rate, r.drift])).to.deep.equal([
        [a.id, bridge, true, null, []],
        [b.id, bridge, true, 100, []],
      ]);
      // the NIC that came back on QEMU's command line unplugs as a hot-plugged one does
      const removed = await cli(['remove', g.options.name, a.id], g.env);
      expect(removed.exitCode, removed.stderr).to.equal(0);
      await g.waitFor(() => g.gone.includes(a.mac), `${a.id} gone from the guest`);
      expect(linkExists(a.tap)).to.equal(false);
    });
  }

  it('apply: adds, replaces and removes NICs, confirmed by the guest; a second apply changes nothing', async () => {
    guest = await Guest.boot({ name: LA, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge });
    const g = guest;
    const first = specFile([
      { id: 'net0', queues: 2, mac: '52:54:00:aa:00:00' },
      { id: 'net1', queues: 1, mac: '52:54:00:aa:00:01' },
    ]);
    expect(await apply(g, first)).to.deep.include({ changed: true, added: ['net0', 'net1'] });
    await g.waitFor(
      () => g.nics.get('52:54:00:aa:00:00')?.combinedMax === 2 && g.nics.get('52:54:00:aa:00:01'),
      'net0 and net1',
    );
    ['net0', 'net1'].forEach((id) => trackLink(`${LA}-${id}`));
    expect(await apply(g, first)).to.deep.include({ changed: false, unchanged: ['net0', 'net1'] });

    const second = specFile([
      { id: 'net0', queues: 4, mac: '52:54:00:aa:00:00' }, // replaced: more queues, same MAC
      { id: 'net2', queues: 2, mac: '52:54:00:aa:00:02' }, // added; net1 is removed
    ]);
    const dry = await apply(g, second, ['--dry-run']);
    expect(dry).to.deep.include({
      changed: true,
      added: ['net2'],
      removed: ['net1'],
      replaced: ['net0'],
      dryRun: true,
    } as object);
    expect(g.nics.get('52:54:00:aa:00:01')).to.not.equal(undefined); // the dry run took nothing away
    expect(await apply(g, second)).to.deep.include({
      changed: true,
      added: ['net2'],
      removed: ['net1'],
      replaced: ['net0'],
    });
    trackLink(`${LA}-net2`);
    await g.waitFor(
      () =>
        !g.nics.has('52:54:00:aa:00:01') &&
        g.nics.get('52:54:00:aa:00:00')?.combinedMax === 4 &&
        g.nics.get('52:54:00:aa:00:02')?.combinedMax === 2,
      'net1 gone, net0 with 4 channels, net2 with 2',
    );
    expect(g.gone).to.include('52:54:00:aa:00:01');
    // on the host: net1's tap is gone, net0's was made anew with 4 queues, each owned by QEMU's uid
    const { uid } = expectUnprivileged(g.pid());
    expect(tapsOf(LA).sort()).to.deep.equal([`${LA}-net0`, `${LA}-net2`]);
    expect([tapQueues(`${LA}-net0`), tapQueues(`${LA}-net2`)]).to.deep.equal([4, 2]);
    for (const tap of tapsOf(LA)) expect(readTap(tap)?.owner, tap).to.equal(uid);
    expect(await apply(g, second)).to.deep.include({ changed: false });
  });

  it('QEMU killed in the middle of an apply: start and the next apply converge; the guest has every NIC', async () => {
    guest = await Guest.boot({ name: LK, stateDir: tempDir(), cpus: 2, machine: 'q35', bridge, hotplugSlots: 6 });
    const g = guest;
    const wanted = Array.from({ length: 6 }, (_, i) => ({ id: `k${i}`, queues: 2, mac: `52:54:00:bb:00:0${i}` }));
    const file = specFile(wanted);
    const applying = execa(process.execPath, [CLI, 'apply', g.options.name, '-f', file], { env: g.env, reject: false });
    trackPid(applying.pid!);
    // the host sees each tap at once (the guest a little later): kill QEMU when two are in
    await pollUntil(
      () => fs.readdirSync('/sys/class/net').filter((n) => new RegExp(`^${LK}-k\\d$`).test(n)).length >= 2,
      30_000,
      2,
    );
    const record = JSON.parse(fs.readFileSync(path.join(g.options.stateDir, g.options.name, 'vm.json'), 'utf8')) as {
      pid: number;
    };
    process.kill(record.pid, 'SIGKILL');
    const failed = await applying;
    expect(failed.exitCode).to.not.equal(0);
    wanted.forEach((w) => trackLink(`${LK}-${w.id}`));

    g.restarted();
    const started = await cli(['start', g.options.name], g.env);
    expect(started.exitCode, started.stderr).to.equal(0);
    await g.waitForLine((l) => l.startsWith('MQH READY'), 60_000);
    const converged = await apply(g, file);
    expect([...converged.added, ...converged.unchanged].sort()).to.deep.equal(wanted.map((w) => w.id));
    await g.waitFor(
      () => wanted.every((w) => g.nics.get(w.mac)?.combinedMax === 2),
      'all six NICs in the guest',
      60_000,
    );
    expect(await apply(g, file)).to.deep.include({ changed: false });
  });
});
