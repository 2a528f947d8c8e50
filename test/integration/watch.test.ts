/** watch and agent across VM restarts and deaths (real QEMU, no guest needed). */
import fs from 'node:fs';
import { expect } from 'chai';
import { StateStore } from '../../src/qemu/state.js';
import { cli, makeBridge, spawnCli, tapsOf, tempDir, until, vmName } from '../helpers/env.js';

const VMD = vmName('vmd'); // this run's own (its taps are host-wide)

/** VM names of this run (their taps are host-wide): see vmName. */
const VMF = vmName('vmf');

describe('watch --follow and agent across VM restarts (real QEMU)', function () {
  let env: Record<string, string>;
  let bridge: string;
  beforeEach(async () => {
    env = { MQ_HOTPLUG_STATE_DIR: tempDir() };
    bridge = await makeBridge();
  });

  it('watch --follow reconnects when a VM of that name starts again, and sees its events', async () => {
    expect((await cli(['start', VMF, '--memory', '128M', '--bridge', bridge], env)).exitCode).to.equal(0);
    const w = spawnCli(['watch', VMF, '--json', '--follow'], env);
    await until(() => w.err().includes(`watching ${VMF}`), 'first connection');
    expect((await cli(['stop', VMF], env)).exitCode).to.equal(0);
    await until(() => w.err().includes(`${VMF}: waiting for it to start again (--follow)`), 'waiting after stop');
    expect(w.err()).to.include(`${VMF}: the VM shut down`);
    expect((await cli(['start', VMF, '--memory', '128M', '--bridge', bridge], env)).exitCode).to.equal(0);
    await until(() => w.err().split(`watching ${VMF} `).length - 1 === 2, 'second connection');
    const added = await cli(['add', VMF, '--queues', '2', '--json'], env);
    expect(added.exitCode, added.stderr).to.equal(0);
    await until(() => w.out().includes('"DEVICE_ADDED"'), 'DEVICE_ADDED after the restart');
    const events = w
      .out()
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { event: string; vm: string });
    expect(events.map((e) => e.event)).to.include.ordered.members(['SHUTDOWN']);
    expect(events.filter((e) => e.event === 'DEVICE_ADDED')).to.have.length(1);
    w.proc.kill('SIGTERM');
    expect((await w.proc).exitCode).to.equal(0);
    await cli(['stop', VMF], env);
  });

  it('agent leaves no stale state when QEMU dies, and watch without --follow exits saying so', async () => {
    expect((await cli(['start', VMD, '--memory', '128M'], env)).exitCode).to.equal(0);
    const added = await cli(['add', VMD, '--queues', '2', '--no-bridge'], env);
    expect(added.exitCode, added.stderr).to.equal(0);
    expect(tapsOf(VMD)).to.have.length(1); // persistent: it does not go with its QEMU
    const store = new StateStore(env.MQ_HOTPLUG_STATE_DIR);
    const agent = spawnCli(['agent', VMD], env);
    // the agent holds the events monitor (one client per monitor): this watcher uses the control one
    const watcher = spawnCli(['--qmp', store.read(VMD)!.qmp, 'watch', VMD], env);
    await until(
      () => agent.err().includes(`watching ${VMD}`) && watcher.err().includes(`watching ${VMD}`),
      'both connected',
    );
    process.kill(store.read(VMD)!.pid, 'SIGKILL');
    await until(() => !fs.existsSync(store.vmDir(VMD)), 'state directory removed by the agent');
    expect(tapsOf(VMD), 'the tap of the dead VM, deleted by the agent').to.deep.equal([]);
    // a defined VM keeps its user (undefine takes it)
    expect(fs.readFileSync('/etc/passwd', 'utf8')).to.include(`mqh-${VMD}:`);
    const w = await watcher.proc;
    expect(w.exitCode).to.equal(0);
    expect(watcher.err()).to.include(`${VMD}: its QMP connection closed`);
    agent.proc.kill('SIGTERM');
    expect((await agent.proc).exitCode).to.equal(0);
  });
});
