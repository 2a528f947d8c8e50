/**
 * Issue 22 on a real host: each VM's QEMU runs as its own user, its taps are owned by that uid,
 * so no other uid can attach a queue to them, and none of them outlives its VM.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa, execaSync } from 'execa';
import { exitCodeOf } from '../../src/errors.js';
import { readTap, tapMark } from '../../src/host/tap.js';
import { type StartRequest, startVm } from '../../src/qemu/launcher.js';
import { StateStore, type VmRecord, qemuAlive } from '../../src/qemu/state.js';
import {
  QEMU,
  cli,
  configDirOf,
  expectUnprivileged,
  makeUser,
  processGone,
  tapQueues,
  tapsOf,
  tempDir,
  trackPid,
  until,
  vmName,
  wipeRuntimeState,
  stateEntries,
} from '../helpers/env.js';

const A = vmName('isa');
const B = vmName('isb');
const C = vmName('isc');
const D = vmName('isd');

/**
 * Tries, as `who`, what a process of that uid can do to a tap: open /dev/net/tun and attach two
 * queues by name (a QEMU of its own, in the sandbox's place, with no capabilities). Resolves once
 * the probe either attached (the kernel's count went up; then it is ended) or exited refused.
 */
async function attachAs(who: { uid: number; gid: number }, tap: string): Promise<{ attached: boolean; err: string }> {
  const before = tapQueues(tap);
  const probe = execa(
    'setpriv',
    [
      ...['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', '--no-new-privs', '--'],
      ...[QEMU, '-machine', 'none', '-nodefaults', '-display', 'none', '-S'],
      ...['-netdev', `tap,id=probe,ifname=${tap},script=no,downscript=no,queues=2,vhost=off`],
    ],
    { reject: false, stdin: 'ignore' },
  );
  trackPid(probe.pid!);
  let exited = false;
  void probe.finally(() => (exited = true));
  await until(() => exited || tapQueues(tap) > before, `the probe as uid ${who.uid} attached to ${tap} or exited`);
  const attached = tapQueues(tap) > before;
  if (!exited) probe.kill('SIGKILL');
  const { stderr } = await probe;
  return { attached, err: stderr };
}

describe('QEMU without root: owned taps no other uid can open (real QEMU, real taps)', () => {
  let stateDir: string;
  let env: Record<string, string>;
  let store: StateStore;
  beforeEach(() => {
    stateDir = tempDir();
    env = { MQ_HOTPLUG_STATE_DIR: stateDir };
    store = new StateStore(stateDir);
  });
  afterEach(async () => {
    for (const vm of store.list()) await cli(['stop', vm], env);
  });

  const start = async (vm: string, ...more: string[]): Promise<VmRecord> => {
    const r = await cli(['start', vm, '--memory', '128M', '--accel', 'tcg', ...more, '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const record = JSON.parse(r.stdout) as VmRecord;
    expectUnprivileged(record.pid);
    return record;
  };
  const add = async (vm: string, queues: number): Promise<{ id: string; tap: string }> => {
    const r = await cli(['add', vm, '--queues', String(queues), '--no-bridge', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    return JSON.parse(r.stdout) as { id: string; tap: string };
  };

  it("another VM's QEMU user, an unrelated user and another VM's QEMU over QMP cannot attach to a VM's tap; its own uid can", async () => {
    const a = await start(A);
    const b = await start(B);
    expect(a.user!.uid).not.to.equal(b.user!.uid);
    const { tap } = await add(A, 4);
    expect(readTap(tap)).to.deep.equal({ owner: a.user!.uid, mark: tapMark(path.join(stateDir, A)) });
    expect(tapQueues(tap)).to.equal(4);

    const refused = new RegExp(`could not configure /dev/net/tun \\(${tap}\\): Operation not permitted`);
    for (const [who, creds] of [
      [`VM ${B}'s user`, b.user!],
      ['an unrelated user', makeUser()],
    ] as const) {
      const probe = await attachAs(creds, tap);
      expect(probe.attached, who).to.equal(false);
      expect(probe.err, who).to.match(refused);
      expect(tapQueues(tap), who).to.equal(4);
    }
    // the control: the same probe as the tap's owner attaches, so the refusals above are the kernel's
    const own = await attachAs(a.user!, tap);
    expect(own.attached, own.err).to.equal(true);
    await until(() => tapQueues(tap) === 4, 'the control probe detached');

    // B's own QEMU, told over QMP to open A's tap: refused, and both VMs live on
    const steal = await cli(
      ['qmp', B, 'netdev_add', JSON.stringify({ type: 'tap', id: 'steal', ifname: tap, script: 'no', queues: 2 })],
      env,
    );
    expect(steal.exitCode).to.equal(1);
    expect(steal.stderr).to.match(refused);
    // nor can a QEMU make a tap of its own by a new name (that takes CAP_NET_ADMIN)
    const fresh = `${B}-new`;
    const made = await cli(
      ['qmp', B, 'netdev_add', JSON.stringify({ type: 'tap', id: 'new', ifname: fresh, script: 'no' })],
      env,
    );
    expect(made.exitCode).to.equal(1);
    expect(made.stderr).to.match(
      new RegExp(`could not configure /dev/net/tun \\(${fresh}\\): Operation not permitted`),
    );
    expect(fs.existsSync(`/sys/class/net/${fresh}`)).to.equal(false);
    for (const vm of [a, b]) expect(qemuAlive(vm), vm.name).to.equal(true);
    expect(JSON.parse((await cli(['qmp', B, 'query-status'], env)).stdout)).to.deep.include({ running: true });
    expect(tapQueues(tap)).to.equal(4);
  });

  it('no tap outlives its VM: stop, SIGKILL + stop, SIGKILL + start over stale state, a host reboot', async () => {
    // each of the VM's taps on the host: owner, mark and attached queues
    const owned = () => Object.fromEntries(tapsOf(C).map((t) => [t, { ...readTap(t), queues: tapQueues(t) }]));
    const mark = tapMark(path.join(stateDir, C));
    let record = await start(C);
    const nics = [await add(C, 2), await add(C, 3)];
    const expected = (uid: number) =>
      Object.fromEntries(nics.map((n, i) => [n.tap, { owner: uid, mark, queues: [2, 3][i] }]));
    expect(owned()).to.deep.equal(expected(record.user!.uid));

    expect((await cli(['stop', C], env)).exitCode).to.equal(0);
    expect(tapsOf(C), 'after stop').to.deep.equal([]);

    // the definition brings both NICs back on the next start, on taps made anew
    record = await start(C);
    expect(owned()).to.deep.equal(expected(record.user!.uid));
    const kill = async () => {
      process.kill(record.pid, 'SIGKILL');
      await until(() => processGone(record.pid), 'every thread of QEMU gone after SIGKILL', 10_000);
    };
    await kill();
    // persistent: they stay when their QEMU dies (no queue attached), until mq-hotplug deletes them
    expect(tapsOf(C).map((t) => tapQueues(t))).to.deep.equal([0, 0]);
    const stopped = await cli(['stop', C], env);
    expect(stopped.stdout).to.match(/already dead; its state is cleaned up/);
    expect(tapsOf(C), 'after SIGKILL + stop').to.deep.equal([]);

    record = await start(C);
    await kill();
    record = await start(C); // over the dead QEMU's state: its taps are swept, the new ones attached
    expect(owned(), 'after SIGKILL + start').to.deep.equal(expected(record.user!.uid));

    await kill();
    wipeRuntimeState(path.join(stateDir, C)); // a reboot: /run and every link are gone
    expect(tapsOf(C)).to.deep.equal([]);
    record = await start(C);
    expect(owned(), 'after a reboot').to.deep.equal(expected(record.user!.uid));
    expect((await cli(['stop', C], env)).exitCode).to.equal(0);
    expect(tapsOf(C), 'after the last stop').to.deep.equal([]);
  });

  it("refuses an unknown --run-as user, a disk or tun device QEMU's user cannot open: one line, exit 2, nothing started or left", async () => {
    const nothingLeft = (what: string) => {
      expect(stateEntries(stateDir), what).to.deep.equal([]);
      expect(fs.readFileSync('/etc/passwd', 'utf8'), what).not.to.include(`mqh-${D}:`);
      expect(fs.existsSync(path.join(configDirOf(stateDir), `${D}.json`)), what).to.equal(false);
    };
    const oneLine = (stderr: string, pattern: RegExp) => {
      expect(stderr.split('\n').filter(Boolean)).to.have.length(1);
      expect(stderr).to.match(pattern);
    };
    const unknown = `${D}nosuch`;
    const r1 = await cli(['start', D, '--run-as', unknown], env);
    expect(r1.exitCode).to.equal(2);
    oneLine(r1.stderr, new RegExp(`^mq-hotplug: unknown user '${unknown}' for --run-as: give a user that exists`));
    nothingLeft('unknown user');

    const disk = path.join(tempDir('disk'), 'root-only.img');
    fs.writeFileSync(disk, '');
    fs.chmodSync(disk, 0o600);
    const r2 = await cli(['start', D, '--disk', disk], env);
    expect(r2.exitCode).to.equal(2);
    oneLine(
      r2.stderr,
      new RegExp(`^mq-hotplug: disk '${disk}' cannot be opened read-write by mqh-${D} \\(uid \\d+\\), the user QEMU`),
    );
    nothingLeft('a disk it cannot open'); // the user made for this start went with it

    // a tun device as these machines ship it (0600 root): a node of its own, so no other run is touched
    const tunDir = tempDir('tun');
    fs.chmodSync(tunDir, 0o711);
    const tun = path.join(tunDir, 'tun');
    execaSync('mknod', ['-m', '0600', tun, 'c', '10', '200']);
    const request: StartRequest = {
      ...{ name: D, cpus: 1, memory: '128M', machine: 'pc', accel: 'tcg', disks: [], hotplugSlots: 0 },
      ...{ qemu: QEMU, qemuArgs: [] },
    };
    const error = await startVm(store, request, { tunDevice: tun }).then(
      () => new Error('started'),
      (e: Error) => e,
    );
    expect(exitCodeOf(error)).to.equal(2);
    expect(error.message.split('\n')).to.have.length(1);
    expect(error.message).to.match(
      new RegExp(`^${tun} cannot be opened by mqh-${D} \\(uid \\d+\\).*\\(mode 0600, owner uid 0, group root\\)`),
    );
    nothingLeft('a tun device it cannot open');
  });
});
