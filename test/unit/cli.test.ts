/**
 * The CLI's rules, as the library has them (hotplug/vms.ts, hotplug/doctor.ts), and the commands
 * with their output and stores injected: no root, no QEMU. State and config directories are temp
 * directories; a "running" VM is a process whose command line holds its monitor's path, which is
 * what qemuAlive looks for.
 */
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { UsageError } from '../../src/errors.js';
import { type CommandEnv, type Output, commandEnv } from '../../src/cli/env.js';
import { doctor } from '../../src/cli/commands/doctor.js';
import { start, type StartOptions } from '../../src/cli/commands/start.js';
import { vms } from '../../src/cli/commands/vms.js';
import { applyByName, checkStartRequest, mergeStartSpec, undefineVm } from '../../src/hotplug/vms.js';
import type { Probes } from '../../src/hotplug/doctor.js';
import { definitionNicFromJson } from '../../src/model/nic.js';
import { DEFINITION_VERSION, type StartRequest } from '../../src/qemu/definition.js';
import { STATE_VERSION, type VmRecord } from '../../src/qemu/state.js';
import { pollUntil } from '../../src/util/time.js';

const spec = (name: string, more: Partial<StartRequest> = {}): StartRequest => ({
  ...{ name, cpus: 2, memory: '1G', machine: 'pc', accel: 'auto', disks: [], hotplugSlots: 8 },
  ...{ qemu: 'qemu-system-x86_64', qemuArgs: [] },
  ...more,
});

const roots: string[] = [];

/** An environment on fresh temp directories, whose output is kept. */
function env(): CommandEnv & { printed: { out: string; err: string } } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-cli-'));
  roots.push(root);
  const printed = { out: '', err: '' };
  const output: Output = { out: (t) => (printed.out += t), err: (t) => (printed.err += t) };
  const e = commandEnv({ stateDir: path.join(root, 'state'), configDir: path.join(root, 'config') }, output);
  return Object.assign(e, { printed });
}

describe('CLI rules in the library, and commands with injected output (no root, no QEMU)', () => {
  const children: number[] = [];
  after(() => {
    children.forEach((pid) => process.kill(pid, 'SIGKILL'));
    roots.forEach((root) => fs.rmSync(root, { recursive: true, force: true }));
  });

  /** A record whose "QEMU" is a live process holding the monitor path in its command line. */
  async function fakeRunning(e: CommandEnv, name: string): Promise<VmRecord> {
    const paths = e.store.createVmDir(name);
    const child = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)', paths.qmp], { stdio: 'ignore' });
    children.push(child.pid!);
    await pollUntil(() => fs.readFileSync(`/proc/${child.pid}/cmdline`, 'utf8').includes(paths.qmp), 5000);
    const record = {
      ...{ version: STATE_VERSION, name, spec: { ...spec(name), accel: 'tcg' as const }, argv: [], pid: child.pid! },
      ...{ startedAt: new Date().toISOString(), accelReason: 'requested', ...paths, nics: [] },
    };
    e.store.write(record);
    return record;
  }

  it('start: a saved spec changes only where an option was given; a new VM takes the request', () => {
    const saved = spec('vm', { cpus: 4, memory: '2G', bridge: 'br0', disks: ['/d.img'] });
    const requested = spec('vm', { cpus: 8 }); // defaults elsewhere: memory 1G, no bridge, no disks
    expect(mergeStartSpec(saved, requested, new Set(['cpus']))).to.deep.equal({ ...saved, cpus: 8 });
    expect(mergeStartSpec(saved, requested, new Set())).to.deep.equal(saved);
    expect(mergeStartSpec(saved, requested, new Set(['disks']))).to.deep.equal({ ...saved, disks: [] });
    expect(mergeStartSpec(undefined, requested, new Set(['cpus']))).to.equal(requested);
  });

  it('start: bad memory, missing files and a missing bridge are one-line usage errors', async () => {
    const refusal = (request: StartRequest) =>
      checkStartRequest(request).then(
        () => undefined,
        (e: unknown) => e,
      );
    const cases: [StartRequest, RegExp][] = [
      [spec('vm', { memory: '1 GB' }), /^invalid memory '1 GB': use a size like 512M or 2G$/],
      [spec('vm', { disks: ['/nonexistent/d.img'] }), /^disk '\/nonexistent\/d.img' does not exist$/],
      [
        spec('vm', { bridge: 'mqhnobr0' }),
        /^bridge 'mqhnobr0' does not exist \(create it: ip link add mqhnobr0 type bridge, or ovs-vsctl add-br mqhnobr0\)/,
      ],
    ];
    for (const [request, message] of cases) {
      const e = await refusal(request);
      expect(e).to.be.instanceOf(UsageError);
      expect((e as Error).message).to.match(message);
    }
    expect(await refusal(spec('vm'))).to.equal(undefined);
  });

  it('start: a running VM is refused, or with --if-not-running said and left alone; no definition is written', async () => {
    const e = env();
    const record = await fakeRunning(e, 'run1');
    const options: StartOptions = {
      ...{ cpus: '2', memory: '1G', machine: 'pc', accel: 'auto', disk: [], hotplugSlots: '8' },
      ...{ qemu: 'qemu-system-x86_64', qemuArg: [] },
    };
    const refused = await start('run1', options, new Set(), e).catch((err: unknown) => err);
    expect(refused).to.be.instanceOf(UsageError);
    expect((refused as Error).message).to.equal(
      `VM 'run1' is already running (pid ${record.pid}); stop it first or pick another name`,
    );
    await start('run1', { ...options, ifNotRunning: true }, new Set(), e);
    expect(e.printed.out).to.equal(`run1 is already running (pid ${record.pid})\n`);
    expect(e.definitions.read('run1')).to.equal(undefined);
  });

  it('undefine: a VM without a definition, a running VM: refused; a stopped one: its file goes', async () => {
    const e = env();
    const none = await undefineVm(e, 'nodef').catch((err: unknown) => err);
    expect((none as Error).message).to.match(/^VM 'nodef' has no definition in .*\(see 'mq-hotplug vms'\)$/);
    e.definitions.write({ version: DEFINITION_VERSION, name: 'run2', spec: spec('run2'), nics: [] });
    await fakeRunning(e, 'run2');
    const running = await undefineVm(e, 'run2').catch((err: unknown) => err);
    expect((running as Error).message).to.equal(
      "VM 'run2' is running; stop it first ('mq-hotplug stop run2'), then undefine it",
    );
    e.definitions.write({ version: DEFINITION_VERSION, name: 'off', spec: spec('off'), nics: [] });
    expect(await undefineVm(e, 'off')).to.equal(e.definitions.file('off'));
    expect(fs.existsSync(e.definitions.file('off'))).to.equal(false);
  });

  it('apply: a defined VM that is not running gets only its definition changed; a dry run writes nothing', async () => {
    const e = env();
    e.definitions.write({ version: DEFINITION_VERSION, name: 'off', spec: spec('off'), nics: [] });
    const wanted = [{ id: 'net0', queues: 2, bridge: null, guestMtu: 1400 }];
    const dry = await applyByName(e, 'off', wanted, { dryRun: true });
    expect(dry).to.deep.include({ definitionOnly: true, dryRun: true, added: ['net0'] });
    expect(e.definitions.read('off')!.nics).to.deep.equal([]);
    const applied = await applyByName(e, 'off', wanted);
    expect(applied).to.deep.include({ changed: true, definitionOnly: true, added: ['net0'] });
    expect(e.definitions.read('off')!.nics[0]).to.deep.include({ id: 'net0', queues: 2, bridge: null, guestMtu: 1400 });
    const neither = await applyByName(e, 'ghost', wanted).catch((err: unknown) => err);
    expect((neither as Error).message).to.match(/^no VM named 'ghost': it is neither running nor defined in /);
  });

  it('definitions saved before the one NIC model (mtu for the guest) still load', () => {
    expect(
      definitionNicFromJson({ id: 'n', mac: 'm', tap: 't', queues: 2, bridge: 'b', vhost: 'auto', mtu: 9000 }),
    ).to.deep.equal({ id: 'n', mac: 'm', tap: 't', queues: 2, bridge: 'b', vhost: 'auto', guestMtu: 9000 });
  });

  it('vms: defined VMs show stopped; a broken definition is a note on stderr and the rest are listed', async () => {
    const e = env();
    e.definitions.write({ version: DEFINITION_VERSION, name: 'a1', spec: spec('a1'), nics: [] });
    fs.writeFileSync(e.definitions.file('bad'), 'not json', { mode: 0o600 });
    await vms({ json: true }, e);
    const rows = JSON.parse(e.printed.out) as { name: string; state: string; defined: boolean }[];
    expect(rows.map((r) => [r.name, r.state, r.defined])).to.deep.equal([['a1', 'stopped', true]]);
    expect(e.printed.err).to.match(/^note: definition .*bad\.json is not valid JSON/);
  });

  it('doctor: a failing probe makes exit 1; warnings do not', async () => {
    const probes: Probes = {
      qemuVersion: async () => {
        throw new Error('ENOENT');
      },
      tunUsable: () => true,
      vhostNetUsable: () => false,
      kvm: () => ({ usable: false, reason: 'no /dev/kvm' }),
      bridges: async () => ['br0'],
      vmUserCannot: () => undefined,
      found: () => true,
      ovs: async () => ({ state: 'answering', socket: '/run/ovs/db.sock', bridges: ['obr0'], vswitchd: false }),
    };
    const e = env();
    expect(await doctor({ qemu: '/no/qemu' }, e, probes)).to.equal(1);
    expect(e.printed.out).to.match(/^fail {2}qemu +\/no\/qemu not found/m);
    expect(e.printed.out).to.match(/^warn {2}kvm +no \/dev\/kvm; --accel auto picks tcg$/m);
    const ok = env();
    expect(await doctor({ qemu: 'q', json: true }, ok, { ...probes, qemuVersion: async () => 'QEMU 7.2' })).to.equal(0);
    expect(JSON.parse(ok.printed.out).map((c: { status: string }) => c.status)).to.deep.equal([
      'ok',
      'ok',
      'warn',
      'ok',
      'warn',
      'ok',
      'ok',
      'warn',
    ]);
    expect(ok.printed.out).to.contain('bridges: obr0; ovs-vswitchd does not apply changes (is it running?)');
    // a tun device a VM's own user cannot open fails: its QEMU could not attach its taps
    const closed = env();
    const tunClosed = { ...probes, qemuVersion: async () => 'QEMU 7.2', vmUserCannot: () => 'mode 0600' };
    expect(await doctor({ qemu: 'q' }, closed, tunClosed)).to.equal(1);
    expect(closed.printed.out).to.match(/^fail {2}\/dev\/net\/tun +a VM's own user cannot open it \(mode 0600\)/m);
  });
});
