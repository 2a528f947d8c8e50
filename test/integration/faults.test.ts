/**
 * Faults and hostile input: each one gives a clear message and a non-zero exit, leaves the VM (if
 * alive) running, and undoes or reports every partial step. Real QEMU where it can be made to fail;
 * the fake QMP server for what it cannot (garbage mid-transaction).
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import sinon from 'sinon';
import { execa } from 'execa';
import { Controller } from '../../src/hotplug/controller.js';
import { HotplugError } from '../../src/hotplug/errors.js';
import { stopVm } from '../../src/qemu/launcher.js';
import { StateStore, qemuAlive } from '../../src/qemu/state.js';
import { QmpClient } from '../../src/qmp/client.js';
import { QmpTimeoutError } from '../../src/qmp/errors.js';
import { ofEvent } from '../../src/qmp/events.js';
import { holdLock } from '../helpers/lock.js';
import {
  VIA_AGENT,
  cli,
  linkExists,
  makeBridge,
  smallVm,
  tapsOf,
  tempDir,
  trackLink,
  until,
  vmName,
} from '../helpers/env.js';
import { FakeQmpServer } from '../helpers/fake-qmp.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const VM1 = vmName('vm1');
const FAKE = vmName('fake'); // its tap is real and host-wide

describe('faults, bad input and security', function () {
  let store: StateStore;
  let bridge: string;
  beforeEach(async () => {
    store = new StateStore(tempDir());
    bridge = await makeBridge();
  });
  afterEach(async () => {
    sinon.restore();
    for (const name of store.list()) await stopVm(store, name).catch(() => {});
  });
  const boot = (name = VM1) => smallVm(store, name, bridge);
  const env = () => ({ MQ_HOTPLUG_STATE_DIR: store.root });

  it('QEMU killed between netdev_add and device_add: a clear error, nothing recorded, no tap left', async () => {
    const record = await boot();
    const vm = await Controller.open({ name: VM1, store });
    const execute = vm.qmp.execute.bind(vm.qmp);
    let netdevAdded: Promise<unknown> | undefined;
    sinon.stub(vm.qmp, 'execute').callsFake(async (command: string, args?: object, options?: object) => {
      if (command === 'netdev_add') return (netdevAdded = execute(command, args, options));
      if (command === 'device_add') {
        await netdevAdded; // answered: the netdev and its tap exist
        process.kill(record.pid, 'SIGKILL');
        await vm.qmp.closed;
      }
      return execute(command, args, options);
    });
    const err = await vm.addNic({ queues: 4 }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(HotplugError);
    expect((err as Error).message).to.match(
      new RegExp(
        `^device_add failed: QEMU of VM '${VM1}' exited during the hot-plug \\(QMP connection to .* closed.*\\); its netdev and device went with it, its tap is deleted$`,
      ),
    );
    expect(linkExists(`${VM1}-nic0`)).to.equal(false); // its persistent tap is deleted
    expect(store.read(VM1)!.nics).to.deep.equal([]);
    expect(qemuAlive(record)).to.equal(false);
    await vm.close();
    expect((await cli(['vms'], env())).stdout).to.match(new RegExp(`^${VM1}\\s+\\d+\\s+dead`, 'm'));
  });

  it('QEMU killed between device_add and bridging: a clear error, nothing recorded, no tap left', async () => {
    const record = await boot();
    const vm = await Controller.open({ name: VM1, store });
    vm.events$.pipe(ofEvent('DEVICE_ADDED')).subscribe(() => process.kill(record.pid, 'SIGKILL'));
    const err = await vm.addNic({ queues: 4 }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(HotplugError);
    // depending on how far QEMU's teardown got, bridging or the final confirmation is what fails
    expect((err as Error).message).to.match(
      new RegExp(
        `^(attaching ${VM1}-nic0 to \\S+|confirming nic0) failed: .*QEMU of VM '${VM1}' exited during the hot-plug`,
      ),
    );
    expect(store.read(VM1)!.nics).to.deep.equal([]);
    await until(() => !linkExists(`${VM1}-nic0`), 'the tap gone with its QEMU', 5000);
    await vm.close();
  });

  it('QEMU answering nothing (SIGSTOP): preflight times out, nothing changes, the VM runs on after SIGCONT', async () => {
    const record = await boot();
    const vm = await Controller.open({ name: VM1, store, commandTimeoutMs: 500 });
    process.kill(record.pid, 'SIGSTOP');
    try {
      const err = await vm.addNic({ queues: 4 }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(QmpTimeoutError);
      expect((err as Error).message).to.match(/^'query-status' was not answered within 500 ms$/);
    } finally {
      process.kill(record.pid, 'SIGCONT');
    }
    expect(await vm.qmp.execute('query-status')).to.deep.include({ running: true });
    const peripherals = await vm.qmp.execute<{ type: string }[]>('qom-list', { path: '/machine/peripheral' });
    expect(peripherals.filter((p) => p.type.includes('virtio-net'))).to.deep.equal([]);
    expect(linkExists(`${VM1}-nic0`)).to.equal(false);
    await vm.close();
  });

  it('garbage from QEMU in the middle of a hot-plug (fake server): clear error, what may be left reported pending', async () => {
    const fake = await FakeQmpServer.start();
    try {
      const opening = Controller.open({ qmp: fake.path, name: FAKE });
      trackLink(`${FAKE}-nic0`); // made before netdev_add, and left pending by the lost connection
      const conn = await fake.nextConnection();
      await conn.negotiate();
      const vm = await opening;
      const adding = vm.addNic({ queues: 2, bridge: null }).catch((e: unknown) => e);
      const canned: Record<string, unknown> = {
        'query-status': { running: true, status: 'running' },
        'query-cpus-fast': [{}, {}],
        'qom-get': 'pc-i440fx-7.2-machine',
        'qom-list': [],
        'query-pci': [{ bus: 0, devices: [{ slot: 0 }, { slot: 1 }] }],
        'query-rx-filter': [],
        netdev_add: {},
      };
      for (;;) {
        const cmd = await conn.nextCommand();
        if (cmd.execute === 'device_add') {
          await conn.send('{"return": {}, "id": "' + cmd.id + '"\u0000garbage\r\n');
          break;
        }
        await conn.sendJson({ return: canned[cmd.execute], id: cmd.id });
      }
      const err = await adding;
      expect(err).to.be.instanceOf(HotplugError);
      expect((err as Error).message).to.match(
        new RegExp(
          `^device_add failed: the QMP connection was lost \\(.*invalid JSON.*\\); check with 'mq-hotplug nics ${FAKE}'; still pending: netdev nd-nic0 and tap ${FAKE}-nic0, device nic0 if QEMU made it$`,
        ),
      );
      await vm.close();
    } finally {
      await fake.close();
      if (linkExists(`${FAKE}-nic0`)) await execa('ip', ['link', 'del', 'dev', `${FAKE}-nic0`]); // the pending tap
    }
  });

  it('ip missing from PATH: refused in preflight, nothing changed', async () => {
    await boot();
    const r = await cli(['add', VM1, '--queues', '2'], { ...env(), MQ_HOTPLUG_IP: '/nonexistent/ip' });
    expect(r.exitCode).to.equal(2);
    expect(r.stderr).to.match(
      /'\/nonexistent\/ip' not found in PATH: the tap could not be bridged \(install iproute2\)/,
    );
    expect(tapsOf(VM1)).to.deep.equal([]); // no tap made
  });

  it('the control socket held by another client: a bounded wait, then a clear "busy" error', async () => {
    const record = await boot();
    const holder = await QmpClient.connect(record.qmp);
    // the CLI on its own (with a host agent or not) opens the control monitor, and waits
    const r = await cli(['add', VM1, '--queues', '2'], { ...env(), MQ_HOTPLUG_NO_AGENT: '1' });
    expect(r.exitCode).to.equal(1);
    expect(r.stderr).to.equal(
      `mq-hotplug: QMP monitor ${record.qmp} is busy: connected but no greeting within 3000 ms (QEMU serves one client per monitor: another client holds it, or QEMU is not responding)\n`,
    );
    if (VIA_AGENT) {
      // through a host agent the command runs on the agent's own events monitor: it is not stopped
      const through = await cli(['add', VM1, '--queues', '2', '--json'], env());
      expect(through.exitCode, through.stderr).to.equal(0);
      trackLink((JSON.parse(through.stdout) as { tap: string }).tap);
    }
    await holder.close();
    const ok = await cli(['add', VM1, '--queues', '2', '--json'], env());
    expect(ok.exitCode, ok.stderr).to.equal(0);
    trackLink((JSON.parse(ok.stdout) as { tap: string }).tap);
  });

  it('stale state: a lock holder killed with SIGKILL leaves no lock behind; a record from another version is refused clearly', async () => {
    await boot();
    const holder = holdLock(store.root, VM1);
    await holder.holding;
    const blocked = await cli(['add', VM1, '--queues', '2'], { ...env(), MQ_HOTPLUG_LOCK_TIMEOUT_MS: '300' });
    expect(blocked.exitCode).to.equal(2);
    expect(blocked.stderr).to.equal(
      `mq-hotplug: VM '${VM1}' is locked by pid ${holder.pid} (still held after the wait)\n`,
    );
    holder.kill('SIGKILL');
    await holder.exited;
    const r = await cli(['add', VM1, '--queues', '2', '--json'], env());
    expect(r.exitCode, r.stderr).to.equal(0);
    trackLink((JSON.parse(r.stdout) as { tap: string }).tap);

    const file = path.join(store.vmDir(VM1), 'vm.json');
    const record = JSON.parse(fs.readFileSync(file, 'utf8')) as { version: number; pid: number };
    fs.writeFileSync(file, JSON.stringify({ ...record, version: 0 }));
    const old = await cli(['nics', VM1], env());
    expect(old.exitCode).to.equal(2);
    expect(old.stderr).to.match(/vm\.json has state version 0, this mq-hotplug reads version 1/);
    const vms = await cli(['vms'], env());
    expect(vms.exitCode).to.equal(0);
    expect(vms.stderr).to.match(/state version 0/);
    fs.writeFileSync(file, JSON.stringify(record));
  });

  it('security: refuses a state directory that is a symlink, owned by another user or writable by others', async () => {
    const base = tempDir('sec');
    const real = path.join(base, 'real');
    fs.mkdirSync(real, { mode: 0o700 });
    fs.symlinkSync(real, path.join(base, 'link'));
    const loose = path.join(base, 'loose');
    fs.mkdirSync(loose);
    fs.chmodSync(loose, 0o777);
    const foreign = path.join(base, 'foreign');
    fs.mkdirSync(foreign, { mode: 0o700 });
    fs.chownSync(foreign, 65534, 65534);
    for (const [dir, message] of [
      [path.join(base, 'link'), /is not a directory \(a symlink or file is refused\)/],
      [loose, /is writable by others \(mode 777\); refusing it/],
      [foreign, /is owned by uid 65534, not by us \(uid 0\); refusing it/],
    ] as const) {
      const r = await cli(['start', VM1, '--memory', '128M'], { MQ_HOTPLUG_STATE_DIR: dir });
      expect(r.exitCode, dir).to.equal(2);
      expect(r.stderr, dir).to.match(message);
    }
    expect(fs.readdirSync(real)).to.deep.equal([]);
  });

  it('security: names that would smuggle QEMU options or ip arguments are refused; commas in paths are escaped', async () => {
    await boot();
    for (const args of [
      ['--ifname', 'tap0,script=/tmp/x'],
      ['--ifname', '-tap'],
      ['--id', 'x,bus=pci.0'],
      ['--id', 'a"b'],
      ['--bridge', 'br0 up'],
      ['--mac', '52:54:00:00:00:01,vectors=0'],
    ]) {
      const r = await cli(['add', VM1, '--queues', '2', ...args], env());
      expect(r.exitCode, args.join(' ')).to.equal(2);
      expect(r.stderr, args.join(' ')).to.match(/^mq-hotplug: invalid (tap name|NIC id|bridge name|MAC) /);
    }
    const diskDir = tempDir('disk');
    fs.chmodSync(diskDir, 0o711); // QEMU's user must reach and open the disk
    const evil = path.join(diskDir, 'a,file=b,format=qcow2');
    fs.writeFileSync(evil, '');
    fs.chmodSync(evil, 0o666); // a mode given to writeFileSync goes through the umask
    const r = await cli(['start', vmName('vm2'), '--memory', '128M', '--disk', evil, '--json'], env());
    expect(r.exitCode, r.stderr).to.equal(0);
    const record = JSON.parse(r.stdout) as { argv: string[] };
    expect(record.argv).to.include(`file=${evil.replaceAll(',', ',,')},if=virtio,format=raw,index=0`);
  });
});
