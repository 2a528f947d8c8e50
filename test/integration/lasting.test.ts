/**
 * Lasting NICs against a real QEMU, real taps and bridges (no guest: the guest's view is in
 * test/e2e/lasting.test.ts): definitions, start by name after a stop and after a "host reboot",
 * apply, bad specs and tampered definitions, a crash in the middle of an apply.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import type { VmDefinition } from '../../src/qemu/definition.js';
import type { VmRecord } from '../../src/qemu/state.js';
import { pollUntil } from '../../src/util/time.js';
import {
  CLI,
  cli,
  configDirOf,
  wipeRuntimeState,
  makeBridge,
  tempDir,
  trackLink,
  trackPid,
  vmName,
  killMidway,
  stateEntries,
  linkExists,
  processGone,
} from '../helpers/env.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const LV = vmName('lv');
const EXT = vmName('ext'); // a --qmp VM's label names its taps

interface NicRow {
  id: string;
  mac: string;
  tap: string;
  queues: number;
  bridge: string | null;
  linkUp: boolean;
  rate: number | null;
  drift: string[];
}

describe('lasting NICs: definitions, start by name, apply (real QEMU, no guest)', function () {
  this.timeout(120_000);
  let env: Record<string, string>;
  let config: string;
  let bridge: string;
  beforeEach(async () => {
    const state = tempDir();
    config = configDirOf(state);
    env = { MQ_HOTPLUG_STATE_DIR: state, MQ_HOTPLUG_CONFIG_DIR: config };
    bridge = await makeBridge();
  });
  afterEach(async () => {
    for (const vm of stateEntries(env.MQ_HOTPLUG_STATE_DIR!)) await cli(['stop', vm], env);
  });

  const run = async (args: string[], expectCode = 0) => {
    const r = await cli(args, env);
    expect(r.exitCode, `${args.join(' ')}: ${r.stderr}`).to.equal(expectCode);
    return r;
  };
  const json = async <T>(args: string[]) => JSON.parse((await run([...args, '--json'])).stdout) as T;
  const definition = (vm: string) =>
    JSON.parse(fs.readFileSync(path.join(config, `${vm}.json`), 'utf8')) as VmDefinition;
  const nics = async (vm: string) => (await json<NicRow[]>(['nics', vm])).map((n) => (trackLink(n.tap), n));
  /** Where QEMU has each NIC: bus number and slot, from query-pci. */
  const slots = async (vm: string) => {
    const pci = JSON.parse((await run(['qmp', vm, 'query-pci'])).stdout) as {
      bus: number;
      devices: { slot: number; qdev_id: string; pci_bridge?: { devices?: { qdev_id: string; slot: number }[] } }[];
    }[];
    const where: Record<string, string> = {};
    for (const bus of pci)
      for (const d of bus.devices) {
        if (d.qdev_id) where[d.qdev_id] = `${bus.bus}:${d.slot}`;
        for (const child of d.pci_bridge?.devices ?? []) where[child.qdev_id] = `${d.qdev_id}:${child.slot}`;
      }
    return where;
  };
  /** The ids of the NICs on the VM's QEMU command line (its record keeps the argv it ran). */
  const commandLineNics = (vm: string) => {
    const record = JSON.parse(fs.readFileSync(path.join(env.MQ_HOTPLUG_STATE_DIR!, vm, 'vm.json'), 'utf8')) as VmRecord;
    return record.argv.flatMap((arg, i) =>
      record.argv[i - 1] === '-device' && arg.startsWith('virtio-net-pci,') ? [/,id=([^,]+)/.exec(arg)![1]!] : [],
    );
  };
  const start = (vm: string, machine: 'pc' | 'q35', more: string[] = []) =>
    run([
      'start',
      vm,
      '--memory',
      '128M',
      '--accel',
      'tcg',
      '--machine',
      machine,
      '--hotplug-slots',
      '4',
      '--bridge',
      bridge,
      ...more,
    ]);

  for (const machine of ['pc', 'q35'] as const) {
    it(`${machine}: NICs are kept; after a stop, and after a host reboot (QEMU killed, /run wiped), start brings them back at the same slots`, async () => {
      await start(LV, machine);
      const a = await json<{ id: string; mac: string; tap: string }>(['add', LV, '--queues', '4']);
      const b = await json<{ id: string; mac: string; tap: string }>([
        'add',
        LV,
        '--queues',
        '2',
        '--rate',
        '30',
        '--id',
        'fast',
      ]);
      const t = await json<{ id: string; tap: string }>(['add', LV, '--queues', '1', '--transient']);
      [a, b, t].forEach((n) => trackLink(n.tap));
      expect(definition(LV).nics.map((n) => n.id)).to.deep.equal([a.id, 'fast']);
      const before = await nics(LV);
      const beforeSlots = await slots(LV);

      const check = async (when: string) => {
        const after = await nics(LV);
        expect(
          after.map((n) => [n.id, n.mac, n.tap, n.queues, n.bridge, n.linkUp, n.rate]),
          when,
        ).to.deep.equal(
          before.filter((n) => n.id !== t.id).map((n) => [n.id, n.mac, n.tap, n.queues, bridge, true, n.rate]),
        );
        expect(
          after.every((n) => n.drift.length === 0),
          when,
        ).to.equal(true);
        const now = await slots(LV);
        for (const id of [a.id, 'fast']) expect(now[id], `${when}: ${id}'s slot`).to.equal(beforeSlots[id]);
        expect(JSON.parse((await run(['qmp', LV, 'query-status'])).stdout)).to.deep.include({ running: true });
        // the NIC with its slot went on QEMU's command line; the one with a rate (its ifb) was plugged
        expect(commandLineNics(LV), when).to.deep.equal([a.id]);
      };

      await run(['stop', LV]);
      const listed = await json<{ name: string; state: string; nics: number }[]>(['vms']);
      expect(listed).to.deep.include({ ...listed[0], name: LV, state: 'stopped', nics: 2 });
      const started = await run(['start', LV]);
      expect(started.stdout).to.match(new RegExp(`saved NICs back: ${a.id} \\(${a.mac}, tap ${a.tap}, `));
      await check('after stop + start');

      // a host reboot: QEMU dies without a word, /run is empty again
      const record = JSON.parse(
        fs.readFileSync(path.join(env.MQ_HOTPLUG_STATE_DIR!, LV, 'vm.json'), 'utf8'),
      ) as VmRecord;
      process.kill(record.pid, 'SIGKILL');
      await pollUntil(() => processGone(record.pid), 10_000); // its taps are persistent: the wipe below takes them, as a reboot would
      wipeRuntimeState(env.MQ_HOTPLUG_STATE_DIR!);
      await run(['start', LV]);
      await check('after a host reboot');
    });
  }

  it('start: a saved slot that a --qemu-arg device takes is refused naming the NIC; a saved tap name taken: not started; nothing left either way', async () => {
    await start(LV, 'pc');
    const a = await json<{ id: string; tap: string; addr: string }>(['add', LV, '--queues', '4']);
    trackLink(a.tap);
    await run(['stop', LV]);
    const refused = async (args: string[], says: string) => {
      const r = await run(['start', LV, ...args], 1);
      expect(r.stderr.trim().split('\n'), r.stderr).to.have.length(1);
      expect(r.stderr).to.include(`saved NIC '${a.id}' could not be plugged`).and.include(says);
      expect(stateEntries(env.MQ_HOTPLUG_STATE_DIR!), 'no VM left running').to.deep.equal([]);
    };
    // QEMU refuses the command line: the start is made again the hot-plug way, whose error says why
    await refused(['--qemu-arg=-device', `--qemu-arg=virtio-rng-pci,addr=${a.addr}`], `slot pci.0 addr ${a.addr}`);
    expect(linkExists(a.tap), 'its tap taken back').to.equal(false);
    const other = trackLink(a.tap);
    await execa('ip', ['link', 'add', other, 'type', 'bridge']);
    await refused([], `tap name '${a.tap}' is already taken`);
    expect(linkExists(other), 'what was there is not touched').to.equal(true);
    await execa('ip', ['link', 'del', other]);
    // the refused starts changed nothing: the NIC comes back on the command line at its slot
    await run(['start', LV]);
    expect(commandLineNics(LV)).to.deep.equal([a.id]);
    expect((await nics(LV)).map((n) => [n.id, n.tap, n.drift])).to.deep.equal([[a.id, a.tap, []]]);
  });

  it('start OPTIONS changes a stopped VM saved spec and keeps its NICs; a running VM is refused; undefine', async () => {
    await start(LV, 'pc', ['--cpus', '2']);
    const nic = await json<{ id: string; tap: string }>(['add', LV, '--queues', '2']);
    trackLink(nic.tap);
    const again = await run(['start', LV, '--cpus', '4'], 2);
    expect(again.stderr).to.match(
      new RegExp(`^mq-hotplug: VM '${LV}' is already running \\(pid \\d+\\); stop it first`),
    );
    expect(definition(LV).spec.cpus).to.equal(2);
    const refused = await run(['undefine', LV], 2);
    expect(refused.stderr).to.equal(
      `mq-hotplug: VM '${LV}' is running; stop it first ('mq-hotplug stop ${LV}'), then undefine it\n`,
    );
    await run(['stop', LV]);
    await run(['start', LV, '--cpus', '4']);
    expect(definition(LV).spec).to.deep.include({ cpus: 4, memory: '128M', bridge });
    expect((await nics(LV)).map((n) => n.id)).to.deep.equal([nic.id]);
    expect(JSON.parse((await run(['qmp', LV, 'query-cpus-fast'])).stdout)).to.have.length(4);
    await run(['stop', LV]);
    expect((await run(['undefine', LV])).stdout).to.equal(
      `undefined ${LV}: ${path.join(config, `${LV}.json`)} removed\n`,
    );
    expect(await json<unknown[]>(['vms'])).to.deep.equal([]);
    expect((await run(['undefine', LV], 2)).stderr).to.match(
      new RegExp(`^mq-hotplug: VM '${LV}' has no definition in `),
    );
  });

  it('apply: adds, changes the rate in place, converges; a second apply changes nothing; --dry-run changes nothing; a stopped VM: its definition', async () => {
    await start(LV, 'pc');
    const spec = (nics: object[]) => {
      const file = path.join(tempDir('spec'), 'nics.json');
      fs.writeFileSync(file, JSON.stringify({ nics }));
      return file;
    };
    const first = spec([
      { id: 'net0', queues: 4, mac: '52:54:00:12:34:56' },
      { id: 'net1', queues: 2, rate: 50 },
    ]);
    const dry = await json<{ changed: boolean; added: string[]; dryRun: boolean }>([
      'apply',
      LV,
      '-f',
      first,
      '--dry-run',
    ]);
    expect(dry).to.deep.include({ changed: true, added: ['net0', 'net1'], dryRun: true });
    expect(await nics(LV)).to.deep.equal([]);
    expect(await json(['apply', LV, '-f', first])).to.deep.equal({
      changed: true,
      added: ['net0', 'net1'],
      removed: [],
      replaced: [],
      updated: [],
      unchanged: [],
    });
    const second = await json<{ changed: boolean; unchanged: string[] }>(['apply', LV, '-f', first]);
    expect(second).to.deep.include({ changed: false, unchanged: ['net0', 'net1'] });
    expect((await run(['apply', LV, '-f', first])).stdout).to.equal(`no change: ${LV} has exactly these NICs\n`);

    const faster = spec([
      { id: 'net0', queues: 4, mac: '52:54:00:12:34:56' },
      { id: 'net1', queues: 2, rate: 80 },
    ]);
    expect(await json(['apply', LV, '-f', faster])).to.deep.include({
      changed: true,
      updated: ['net1'],
      unchanged: ['net0'],
    });
    const live = await nics(LV);
    expect(live.map((n) => [n.id, n.rate, n.drift])).to.deep.equal([
      ['net0', null, []],
      ['net1', 80, []],
    ]);
    expect(definition(LV).nics.map((n) => [n.id, n.rate])).to.deep.equal([
      ['net0', undefined],
      ['net1', 80],
    ]);

    // stopped: only the definition changes; the next start brings exactly that
    await run(['stop', LV]);
    const third = spec([
      { id: 'net0', queues: 4, mac: '52:54:00:12:34:56' },
      { id: 'net2', queues: 1 },
    ]);
    expect(await json(['apply', LV, '-f', third])).to.deep.include({
      changed: true,
      added: ['net2'],
      removed: ['net1'],
      definitionOnly: true,
    });
    expect(await json(['apply', LV, '-f', third])).to.deep.include({ changed: false });
    await run(['start', LV]);
    expect((await nics(LV)).map((n) => n.id)).to.deep.equal(['net0', 'net2']);
    expect(await json(['apply', LV, '-f', third])).to.deep.include({ changed: false, unchanged: ['net0', 'net2'] });
  });

  it('apply on a VM given by --qmp works on the live VM (nothing kept)', async () => {
    await start(LV, 'pc');
    const qmp = path.join(env.MQ_HOTPLUG_STATE_DIR!, LV, 'qemu', 'qmp.sock');
    const file = path.join(tempDir('spec'), 'nics.json');
    fs.writeFileSync(
      file,
      JSON.stringify({
        nics: [
          { id: 'x0', queues: 4, bridge },
          { id: 'x1', queues: 2, bridge },
        ],
      }),
    );
    const first = await json<{ changed: boolean; added: string[] }>(['--qmp', qmp, 'apply', EXT, '-f', file]);
    expect(first).to.deep.include({ changed: true, added: ['x0', 'x1'] });
    const live = await json<NicRow[]>(['--qmp', qmp, 'nics', EXT]);
    live.forEach((n) => trackLink(n.tap));
    expect(live.map((n) => [n.id, n.queues, n.bridge]).sort()).to.deep.equal([
      ['x0', 4, bridge],
      ['x1', 2, bridge],
    ]);
    // QEMU and the host are what --qmp knows: the same spec again changes nothing
    expect(await json(['--qmp', qmp, 'apply', EXT, '-f', file])).to.deep.include({
      changed: false,
      unchanged: ['x0', 'x1'],
    });
  });

  it('bad specs and tampered definitions: one line naming the problem, exit 2, nothing changed', async () => {
    await start(LV, 'q35');
    await run(['stop', LV]);
    const defFile = path.join(config, `${LV}.json`);
    const saved = fs.readFileSync(defFile, 'utf8');
    const specDir = tempDir('spec');
    const cases: [string, RegExp][] = [
      ['not json', /^mq-hotplug: spec \S+ is not JSON \(/],
      ['[]', /must be an object with a "nics" array/],
      ['{"nics": [], "extra": 1}', /unknown field 'extra'; the spec has only "nics"/],
      [
        '{"nics": [{"id": "a", "queues": 1, "colour": "red"}]}',
        /nics\[0\] has unknown field 'colour'; valid: id, queues, bridge, mac, ifname, vhost, mtu, rate/,
      ],
      ['{"nics": [{"queues": 1}]}', /nics\[0\] needs an "id"/],
      ['{"nics": [{"id": "a", "queues": 1}, {"id": "a", "queues": 2}]}', /NIC id 'a' is given twice/],
      [
        '{"nics": [{"id": "a", "queues": 1, "mac": "52:54:00:00:00:01"}, {"id": "b", "queues": 1, "mac": "52:54:00:00:00:01"}]}',
        /MAC '52:54:00:00:00:01' is given twice/,
      ],
      ['{"nics": [{"id": "a", "queues": 999}]}', /invalid queue count '999'/],
      [
        JSON.stringify({ nics: ['a', 'b', 'c', 'd', 'e'].map((id) => ({ id, queues: 1 })) }),
        new RegExp(`5 NICs would not fit in VM '${LV}': it has 4 hot-plug slots`),
      ],
    ];
    for (const [text, message] of cases) {
      const file = path.join(specDir, 'spec.json');
      fs.writeFileSync(file, text);
      const r = await run(['apply', LV, '-f', file], 2);
      expect(r.stderr, text).to.match(message);
      expect(r.stderr.trim().split('\n'), text).to.have.length(1);
      expect(fs.readFileSync(defFile, 'utf8'), text).to.equal(saved);
    }
    // the definition itself tampered with
    const tamper: [() => void, RegExp][] = [
      [
        () => fs.writeFileSync(defFile, '{ broken'),
        new RegExp(
          `definition \\S+${LV}\\.json is not valid JSON; fix it, or remove it with 'mq-hotplug undefine ${LV}'`,
        ),
      ],
      [
        () => fs.writeFileSync(defFile, JSON.stringify({ version: 7, name: LV, spec: {}, nics: [] })),
        new RegExp(`is not a version 1 definition of VM '${LV}'`),
      ],
      [
        () => (fs.writeFileSync(defFile, saved), fs.chownSync(defFile, 1234, 1234)),
        new RegExp(`definition \\S+${LV}\\.json is owned by uid 1234, not by us`),
      ],
      [
        () => (fs.rmSync(defFile), fs.symlinkSync('/etc/hostname', defFile)),
        new RegExp(`definition \\S+${LV}\\.json is a symlink; refusing it`),
      ],
    ];
    for (const [spoil, message] of tamper) {
      spoil();
      const r = await run(['start', LV], 2);
      expect(r.stderr).to.match(message);
      expect(r.stderr.trim().split('\n')).to.have.length(1);
      expect(stateEntries(env.MQ_HOTPLUG_STATE_DIR!)).to.deep.equal([]); // nothing started
      fs.rmSync(defFile, { force: true });
      fs.writeFileSync(defFile, saved, { mode: 0o600 });
    }
    const mode = fs.statSync(config).mode & 0o777;
    expect([mode, fs.statSync(defFile).mode & 0o777]).to.deep.equal([0o700, 0o600]);
  });

  it('start killed after the taps of its saved NICs were made, before QEMU answered: the next start deletes them and brings the NICs back', async () => {
    await start(LV, 'pc');
    const a = await json<{ id: string; tap: string }>(['add', LV, '--queues', '2']);
    trackLink(a.tap);
    await run(['stop', LV]);
    // a QEMU that never opens its monitor, run as the VM's user: it says its pid where that user can write
    const dir = tempDir('hung-qemu');
    fs.chmodSync(dir, 0o777);
    const hung = path.join(dir, 'qemu');
    fs.writeFileSync(hung, `#!/bin/sh\necho $$ > ${dir}/pid\nexec sleep 60\n`, { mode: 0o755 });
    const proc = execa(process.execPath, [CLI, 'start', LV, '--qemu', hung], { env, reject: false });
    trackPid(proc.pid!);
    const pid = await pollUntil(
      () => fs.existsSync(`${dir}/pid`) && Number(fs.readFileSync(`${dir}/pid`, 'utf8')),
      20_000,
      5,
    );
    trackPid(pid!);
    expect(linkExists(a.tap), 'its tap made before QEMU was spawned').to.equal(true);
    await killMidway(proc, env); // through an agent, the agent too
    process.kill(pid!, 'SIGKILL');
    // the tap is left (marked as the VM's), with no record of QEMU: the next start takes it and starts
    expect(linkExists(a.tap)).to.equal(true);
    await run(['start', LV]);
    expect(commandLineNics(LV)).to.deep.equal([a.id]);
    expect((await nics(LV)).map((n) => [n.id, n.tap, n.linkUp, n.drift])).to.deep.equal([[a.id, a.tap, true, []]]);
    expect(definition(LV).spec.qemu, 'the killed start changed no saved spec').to.not.equal(hung);
  });

  it('mq-hotplug killed in the middle of an apply: the next apply converges, and the definition matches the VM', async () => {
    await start(LV, 'pc');
    const file = path.join(tempDir('spec'), 'nics.json');
    const wanted = Array.from({ length: 12 }, (_, i) => ({ id: `n${i}`, queues: 4 }));
    fs.writeFileSync(file, JSON.stringify({ nics: wanted }));
    const proc = execa(process.execPath, [CLI, 'apply', LV, '-f', file], { env, reject: false });
    trackPid(proc.pid!);
    // kill it once some NICs are in, most likely in the middle of one
    await pollUntil(
      () => fs.readdirSync('/sys/class/net').filter((n) => new RegExp(`^${LV}-n\\d+$`).test(n)).length >= 3,
      20_000,
      5,
    );
    await killMidway(proc, env); // through an agent, the agent too
    const converged = await json<{ added: string[]; unchanged: string[] }>(['apply', LV, '-f', file]);
    expect([...converged.added, ...converged.unchanged].sort()).to.deep.equal(wanted.map((w) => w.id).sort());
    // it really died midway: some NICs were in, some were not
    expect(converged.added.length * converged.unchanged.length, JSON.stringify(converged)).to.be.above(0);
    const live = await nics(LV);
    expect(live.map((n) => n.id).sort()).to.deep.equal(wanted.map((w) => w.id).sort());
    expect(live.every((n) => n.drift.length === 0 && n.bridge === bridge && n.linkUp)).to.equal(true);
    expect(
      definition(LV)
        .nics.map((n) => n.id)
        .sort(),
    ).to.deep.equal(wanted.map((w) => w.id).sort());
    expect(await json(['apply', LV, '-f', file])).to.deep.include({ changed: false });
  });
});
