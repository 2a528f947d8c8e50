import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { QmpClient } from '../../src/qmp/client.js';
import { StateStore, type VmRecord, qemuAlive } from '../../src/qemu/state.js';
import {
  QEMU,
  cli,
  expectUnprivileged,
  linkExists,
  sleep,
  spawnCli,
  tempDir,
  trackLink,
  trackPid,
  until,
  vmName,
  stateEntries,
} from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const VM1 = vmName('vm1');
const A = vmName('a');
const B = vmName('b');

const mode = (p: string) => (fs.statSync(p).mode & 0o777).toString(8);

describe('VMs with only QMP: start, stop, vms, doctor, qmp (CLI, real QEMU)', () => {
  let stateDir: string;
  let env: Record<string, string>;
  beforeEach(() => {
    stateDir = tempDir();
    env = { MQ_HOTPLUG_STATE_DIR: stateDir };
  });

  for (const [machine, slots] of [
    ['pc', '0'],
    ['q35', '0'],
    ['q35', '4'],
  ] as const) {
    it(`starts a ${machine} VM with ${slots} hot-plug slots: no NIC, two monitors, private state; stops it`, async () => {
      const started = await cli(
        ['start', VM1, '--machine', machine, '--hotplug-slots', slots, '--memory', '128M', '--json'],
        env,
      );
      expect(started.exitCode, started.stderr).to.equal(0);
      const record = JSON.parse(started.stdout) as VmRecord;
      const argv = record.argv.join(' ');
      expect(argv).not.to.match(/-netdev|-nic\b|-net\b|virtio-net/);
      expect(record.argv.filter((a) => a === '-qmp')).to.have.length(2);
      expect(argv)
        .to.include(`unix:${record.qmp},server=on,wait=off`)
        .and.include(`unix:${record.eventsQmp},server=on,wait=off`);
      expect((argv.match(/pcie-root-port/g) ?? []).length).to.equal(machine === 'q35' ? Number(slots) : 0);
      expect(fs.readFileSync(`/proc/${record.pid}/cmdline`, 'utf8').split('\0')).to.include(
        `unix:${record.qmp},server=on,wait=off`,
      );
      // QEMU as the VM's own user, in its sandbox; its user owns only its own directory
      const { uid } = expectUnprivileged(record.pid);
      expect(record.user).to.deep.include({ name: `mqh-${VM1}`, uid, made: true });
      const passwd = fs.readFileSync('/etc/passwd', 'utf8');
      expect(passwd).to.include(`mqh-${VM1}:x:${uid}:`);
      expect(record.argv).to.include('-sandbox');
      // the way through is 0711 (enter, not list); mq-hotplug's files are root's, 0600
      expect(mode(stateDir)).to.equal('711');
      expect(mode(path.join(stateDir, VM1))).to.equal('711');
      for (const f of ['vm.json', 'qemu.log']) {
        expect(mode(path.join(stateDir, VM1, f)), f).to.equal('600');
        expect(fs.statSync(path.join(stateDir, VM1, f)).uid, f).to.equal(0);
      }
      const qemuDir = path.join(stateDir, VM1, 'qemu');
      expect([mode(qemuDir), fs.statSync(qemuDir).uid]).to.deep.equal(['700', uid]);
      for (const f of ['qmp.sock', 'events.sock']) {
        expect(mode(path.join(qemuDir, f)), f).to.equal('600');
        expect(fs.statSync(path.join(qemuDir, f)).uid, f).to.equal(uid);
      }

      const vms = await cli(['vms', '--json'], env);
      expect(JSON.parse(vms.stdout)).to.deep.equal([
        {
          name: VM1,
          pid: record.pid,
          state: 'running',
          machine,
          cpus: 2,
          memory: '128M',
          accel: record.spec.accel,
          nics: 0,
          qmp: record.qmp,
          defined: true, // start defines a new VM
          qemu: record.qemuVersion, // as QEMU greeted at start
          user: `mqh-${VM1}`,
        },
      ]);
      expect(record.qemuVersion).to.match(/^\d+\.\d+\.\d+$/);
      const stopped = await cli(['stop', VM1], env);
      expect(stopped.exitCode, stopped.stderr).to.equal(0);
      expect(stopped.stdout).to.equal(`stopped ${VM1}\n`);
      expect(fs.existsSync(path.join(stateDir, VM1))).to.equal(false);
      expect(
        fs.existsSync(`/proc/${record.pid}/cmdline`) &&
          fs.readFileSync(`/proc/${record.pid}/cmdline`, 'utf8').includes(record.qmp),
      ).to.equal(false);
    });
  }

  it('runs two VMs at once, each with its own sockets', async () => {
    const [a, b] = await Promise.all([
      cli(['start', A, '--memory', '128M'], env),
      cli(['start', B, '--memory', '128M', '--machine', 'q35'], env),
    ]);
    expect(a.exitCode, a.stderr).to.equal(0);
    expect(b.exitCode, b.stderr).to.equal(0);
    const table = (await cli(['vms'], env)).stdout;
    expect(table)
      .to.match(new RegExp(`^${A}\\s+\\d+\\s+running\\s+pc`, 'm'))
      .and.match(new RegExp(`^${B}\\s+\\d+\\s+running\\s+q35`, 'm'));
    expect((await cli(['start', A], env)).stderr).to.match(new RegExp(`VM '${A}' is already running`));
    await Promise.all([cli(['stop', A], env), cli(['stop', B], env)]);
    expect(stateEntries(stateDir)).to.deep.equal([]);
  });

  it('detects stale state after kill -9 of QEMU; stop cleans it up and says so', async () => {
    expect((await cli(['start', VM1, '--memory', '128M'], env)).exitCode).to.equal(0);
    const record = new StateStore(stateDir).read(VM1)!;
    process.kill(record.pid, 'SIGKILL');
    await until(() => !qemuAlive(record), 'QEMU gone after SIGKILL', 5000);
    expect((await cli(['vms'], env)).stdout).to.match(new RegExp(`^${VM1}\\s+\\d+\\s+dead`, 'm'));
    const add = await cli(['add', VM1, '--queues', '2', '--no-bridge'], env);
    expect(add.exitCode).to.equal(2);
    expect(add.stderr).to.match(new RegExp(`VM '${VM1}' is not running`));
    const stopped = await cli(['stop', VM1], env);
    expect(stopped.exitCode).to.equal(0);
    expect(stopped.stdout).to.match(/already dead; its state is cleaned up/);
    expect(fs.existsSync(path.join(stateDir, VM1))).to.equal(false);
  });

  it("prints QEMU's own error when it fails to start, and leaves no state", async () => {
    const r = await cli(['start', VM1, '--qemu-arg=-device', '--qemu-arg=no-such-device'], env);
    expect(r.exitCode).to.equal(1);
    expect(r.stderr).to.match(
      /^mq-hotplug: QEMU failed to start: .*'no-such-device' is not a valid device model name\n$/,
    );
    expect(stateEntries(stateDir)).to.deep.equal([]);
    const missing = await cli(['start', VM1, '--qemu', '/nonexistent/qemu'], env);
    expect(missing.exitCode).to.equal(1);
    expect(missing.stderr).to.match(/nonexistent\/qemu/);
    expect(stateEntries(stateDir)).to.deep.equal([]);
  });

  it('refuses bad start options with one line naming the value', async () => {
    for (const [args, message] of [
      [['--cpus', '0'], /invalid CPU count '0': use an integer from 1 to 1024/],
      [['--memory', 'lots'], /invalid memory 'lots'/],
      [['--machine', 'virt'], /argument 'virt' is invalid. Allowed choices are pc, q35/],
      [['--kernel', '/nonexistent'], /kernel '\/nonexistent' does not exist/],
    ] as const) {
      const r = await cli(['start', VM1, ...args], env);
      expect(r.exitCode, args.join(' ')).to.equal(2);
      expect(r.stderr.split('\n')[0]).to.match(message);
    }
    expect((await cli(['start', '../evil'], env)).stderr).to.match(/invalid VM name '..\/evil'/);
    expect(stateEntries(stateDir)).to.deep.equal([]);
  });

  it('qmp sends one command and prints its return; a QMP error exits non-zero', async () => {
    expect((await cli(['start', VM1, '--memory', '128M'], env)).exitCode).to.equal(0);
    const r = await cli(['qmp', VM1, 'qom-get', '{"path":"/machine","property":"type"}'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    expect(JSON.parse(r.stdout)).to.match(/^pc-i440fx-\d+\.\d+-machine$/); // 7.2 or 10.0
    const bad = await cli(['qmp', VM1, 'device_del', '{"id":"nosuch"}'], env);
    expect(bad.exitCode).to.equal(1);
    expect(bad.stderr).to.equal("mq-hotplug: DeviceNotFound: Device 'nosuch' not found\n");
    expect((await cli(['qmp', VM1, 'query-status', '[1]'], env)).exitCode).to.equal(2);
    await cli(['stop', VM1], env);
  });

  it('drives a QEMU it did not start through --qmp; once that QEMU is gone, watch --reconcile deletes the taps it left', async () => {
    const dir = tempDir('ext');
    const [sock, events] = [path.join(dir, 'ext.sock'), path.join(dir, 'events.sock')];
    const qemu = execa(
      QEMU,
      [
        ...['-M', 'pc', '-accel', 'tcg', '-nodefaults', '-display', 'none'],
        ...['-qmp', `unix:${sock},server=on,wait=off`, '-qmp', `unix:${events},server=on,wait=off`],
      ],
      { reject: false },
    );
    trackPid(qemu.pid!);
    while (!fs.existsSync(sock)) await sleep(5);
    const ext = vmName('ext'); // names its taps, which are host-wide
    const r = await cli(['--qmp', sock, 'qmp', ext, 'query-status'], env);
    expect(JSON.parse(r.stdout)).to.deep.include({ running: true });
    const add = await cli(['--qmp', sock, 'add', ext, '--queues', '4', '--no-bridge', '--json'], env);
    expect(add.exitCode, add.stderr).to.equal(0);
    const nic = JSON.parse(add.stdout) as { id: string; tap: string };
    trackLink(nic.tap);
    const nics = JSON.parse((await cli(['--qmp', sock, 'nics', ext, '--json'], env)).stdout) as {
      id: string;
      tap: string;
      queues: number;
    }[];
    expect(nics).to.have.length(1);
    expect(nics[0]).to.deep.include({ id: nic.id, tap: nic.tap, queues: 4 });
    // the tap is persistent: it outlives a QEMU of the user's own, until a reconciling watcher sees it go
    const watcher = spawnCli(['--qmp', sock, '--events-qmp', events, 'watch', ext, '--reconcile'], env);
    await until(() => watcher.err().includes(`watching ${ext}`), 'the watcher connected');
    const client = await QmpClient.connect(sock);
    await client.execute('quit').catch(() => {});
    await client.closed;
    await qemu;
    await until(() => !linkExists(nic.tap), `the tap deleted by the watcher (it said: ${watcher.err()})`);
    await until(() => watcher.err().includes(`its QEMU is gone; deleted tap ${nic.tap}`), "the watcher's words");
    expect((await watcher.proc).exitCode, watcher.err()).to.equal(0);
  });

  it('doctor reports each check on one line, ok/warn/fail', async () => {
    const r = await cli(['doctor', '--json']);
    const checks = JSON.parse(r.stdout) as { check: string; status: string; detail: string }[];
    expect(checks.map((c) => c.check)).to.deep.equal([
      'qemu',
      '/dev/net/tun',
      '/dev/vhost-net',
      'vm users',
      'kvm',
      'ip',
      'bridges',
      'openvswitch',
    ]);
    // OVS where its database answers, else Linux bridges only: either way not a failure
    const ovs = checks.find((c) => c.check === 'openvswitch')!;
    expect(ovs.detail).to.match(/^(not here \(.*\): Linux bridges only|database at \S+ answers; bridges: .*)$/);
    expect(checks.find((c) => c.check === 'qemu')!.detail).to.match(/QEMU emulator version \d+/);
    const vhost = checks.find((c) => c.check === '/dev/vhost-net')!;
    expect(vhost.status).to.equal(fs.existsSync('/dev/vhost-net') ? 'ok' : 'warn');
    const kvm = checks.find((c) => c.check === 'kvm')!;
    // what this host lacks decides the words: no /dev/kvm at all, or only the nested kvm_pvm
    if (!fs.existsSync('/dev/kvm')) {
      expect(kvm).to.deep.include({ status: 'warn' });
      expect(kvm.detail).to.match(/\/dev\/kvm is missing.*picks tcg/);
    } else if (fs.existsSync('/sys/module/kvm_pvm')) {
      expect(kvm).to.deep.include({ status: 'warn' });
      expect(kvm.detail).to.match(/kvm_pvm.*picks tcg/);
    }
    const text = await cli(['doctor']);
    expect(text.stdout.trim().split('\n')).to.have.length(checks.length);
    expect(checks.find((c) => c.check === 'vm users')!.detail).to.match(/useradd and setpriv found/);
  });
});
