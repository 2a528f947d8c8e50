/**
 * Open vSwitch bridges and VLANs against a real OVS (this run's own ovsdb-server and ovs-vswitchd,
 * userspace datapath), real QEMU and real taps: the port as OVS-aware tools expect it, VLAN
 * changes in place, drift and its repair, the port's life through stop, a dead QEMU, a host
 * reboot and a crashed add, and bad input refused with nothing left. Traffic across VLANs, seen
 * from a real guest, is in test/e2e/vlan.test.ts.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { Controller } from '../../src/hotplug/controller.js';
import { type AddResult, executeAdd } from '../../src/hotplug/add/transaction.js';
import { HotplugError } from '../../src/hotplug/errors.js';
import { stopVm } from '../../src/qemu/launcher.js';
import { StateStore } from '../../src/qemu/state.js';
import { pollUntil } from '../../src/util/time.js';
import {
  cli,
  expectUnprivileged,
  configDirOf,
  linkExists,
  makeBridge,
  ourLinks,
  smallVm,
  tapQueues,
  tempDir,
  trackLink,
  vmName,
  wipeRuntimeState,
} from '../helpers/env.js';
import { type Ovs, startOvs } from '../helpers/ovs.js';

const VM = vmName('ov');

interface PortRow {
  name: string;
  tag: string;
  trunks: string;
  vlan_mode: string;
  ofport: number;
  error: string;
  mtu_request: string;
  external_ids: Record<string, string>;
}

describe('Open vSwitch bridges and VLANs (real OVS, userspace datapath; real QEMU and taps)', function () {
  this.timeout(120_000);
  let ovs: Ovs;
  let bridge: string;
  let store: StateStore;
  let env: Record<string, string>;
  const savedRundir = process.env.OVS_RUNDIR;

  before(async () => {
    ovs = await startOvs();
    process.env.OVS_RUNDIR = ovs.dir; // the library in this process finds this run's OVS, as the CLI does
  });
  after(() => {
    if (savedRundir === undefined) delete process.env.OVS_RUNDIR;
    else process.env.OVS_RUNDIR = savedRundir;
    ovs.stop();
  });
  beforeEach(async () => {
    bridge = await ovs.addBridge();
    store = new StateStore(tempDir());
    env = { MQ_HOTPLUG_STATE_DIR: store.root, ...ovs.env };
  });
  afterEach(async () => {
    for (const name of store?.list() ?? []) await stopVm(store, name).catch(() => {});
    if (bridge) await ovs.vsctl(['--if-exists', 'del-br', bridge]);
  });

  /** A defined VM (its NICs kept for the next start), as `start` makes one; unprivileged (checked). */
  async function startDefined() {
    const r = await cli(['start', VM, '--memory', '128M', '--accel', 'tcg', '--machine', 'pc'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const record = store.read(VM)!;
    expectUnprivileged(record.pid);
    return record;
  }

  /** Port and Interface columns of a port, as ovs-vsctl reads them (OVS's word, not ours). */
  async function port(name: string): Promise<PortRow | undefined> {
    const ports = (await ovs.vsctl(['list-ports', bridge])).split('\n').filter(Boolean);
    if (!ports.includes(name)) return undefined;
    const get = async (table: string, column: string) =>
      (await ovs.vsctl(['get', table, name, column])).trim().replace(/^"|"$/g, '');
    const ids = JSON.parse(
      (await ovs.vsctl(['--format=json', '--columns=external_ids', 'list', 'Interface', name])).trim(),
    ) as { data: [[['map', [string, string][]]]] };
    return {
      name,
      tag: await get('Port', 'tag'),
      trunks: await get('Port', 'trunks'),
      vlan_mode: await get('Port', 'vlan_mode'),
      ofport: Number(await get('Interface', 'ofport')),
      error: await get('Interface', 'error'),
      mtu_request: await get('Interface', 'mtu_request'),
      external_ids: Object.fromEntries(ids.data[0]![0]![1]),
    };
  }
  /** Every port in OVS's database but the bridges' own. */
  const allPorts = async () => {
    const bridges = new Set((await ovs.vsctl(['list-br'])).split('\n'));
    return (await ovs.vsctl(['--columns=name', '--format=csv', '--no-headings', 'list', 'Port']))
      .split('\n')
      .map((l) => l.replace(/"/g, ''))
      .filter((n) => n && !bridges.has(n))
      .sort();
  };

  it("add --vlan: an access port with libvirt's external-ids and the bridge's MTU; the tap keeps its queues and owner; nics shows it", async () => {
    const record = await startDefined();
    const dry = await cli(['add', VM, '--queues', '4', '--bridge', bridge, '--vlan', '10', '--dry-run'], env);
    expect(dry.exitCode, dry.stderr).to.equal(0);
    expect(dry.stdout).to.match(new RegExp(`ovs-vsctl -- add-port ${bridge} ${VM}-nic0 tag=10 vlan_mode=access `));
    expect(await allPorts()).to.deep.equal([]);
    const r = await cli(['add', VM, '--queues', '4', '--bridge', bridge, '--vlan', '10', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const nic = JSON.parse(r.stdout) as AddResult;
    trackLink(nic.tap);
    expect(nic).to.deep.include({ bridge, bridgeKind: 'ovs', vlan: 10 });
    const p = (await port(nic.tap))!;
    expect(p).to.deep.include({ tag: '10', trunks: '[]', vlan_mode: 'access', error: '[]', mtu_request: '1500' });
    expect(p.ofport).to.be.above(0);
    expect(p.external_ids).to.deep.include({ 'attached-mac': nic.mac, 'vm-id': VM, 'iface-status': 'active' });
    expect(p.external_ids['iface-id']).to.match(/^[0-9a-f-]{36}$/);
    expect(p.external_ids['iface-id']).to.equal(nic.ifaceId);
    // the tap on OVS: all 4 queues, owned by the VM's QEMU, MAC and MTU as on a Linux bridge
    expect(tapQueues(nic.tap)).to.equal(4);
    expect(fs.readFileSync(`/sys/class/net/${nic.tap}/owner`, 'utf8').trim()).to.equal(String(record.user!.uid));
    expect(fs.readFileSync(`/sys/class/net/${nic.tap}/address`, 'utf8').trim()).to.equal(nic.tapMac);
    const table = await cli(['nics', VM], env);
    expect(table.stdout).to.match(new RegExp(`${bridge} \\(ovs\\)\\s+10\\s+1500`));
    const [view] = JSON.parse((await cli(['nics', VM, '--json'], env)).stdout) as { drift: string[]; bridge: string }[];
    expect(view).to.deep.include({ bridge, drift: [] });
    // the definition keeps the VLAN and the iface id, for the next start
    const def = JSON.parse(fs.readFileSync(path.join(configDirOf(store.root), `${VM}.json`), 'utf8')) as {
      nics: { vlan?: number; ifaceId?: string }[];
    };
    expect(def.nics[0]).to.deep.include({ vlan: 10, ifaceId: nic.ifaceId });
  });

  it('trunks with a native VLAN, and a VLAN change in place through apply (updated, no replug); drift is seen and put right', async () => {
    await smallVm(store, VM);
    const spec = (nic: object) => {
      const file = path.join(tempDir('spec'), 'spec.json');
      fs.writeFileSync(file, JSON.stringify({ nics: [{ id: 'net0', queues: 2, bridge, ...nic }] }));
      return file;
    };
    const first = await cli(['apply', VM, '-f', spec({ vlan: 5, trunks: '20,30-32' }), '--json'], env);
    expect(first.exitCode, first.stderr).to.equal(0);
    expect(JSON.parse(first.stdout)).to.deep.include({ added: ['net0'] });
    const tap = trackLink(`${VM}-net0`);
    expect(await port(tap)).to.deep.include({ tag: '5', trunks: '[20, 30, 31, 32]', vlan_mode: 'native-untagged' });
    const ofport = (await port(tap))!.ofport;
    const netdevsBefore = await cli(['qmp', VM, 'query-pci'], env);

    const moved = await cli(['apply', VM, '-f', spec({ vlan: 7 }), '--json'], env);
    expect(moved.exitCode, moved.stderr).to.equal(0);
    expect(JSON.parse(moved.stdout)).to.deep.include({ updated: ['net0'], replaced: [], added: [] });
    expect(await port(tap)).to.deep.include({ tag: '7', trunks: '[]', vlan_mode: 'access', ofport });
    expect((await cli(['qmp', VM, 'query-pci'], env)).stdout).to.equal(netdevsBefore.stdout); // same device, same slot
    const again = await cli(['apply', VM, '-f', spec({ vlan: 7 }), '--json'], env);
    expect(JSON.parse(again.stdout)).to.deep.include({ changed: false, unchanged: ['net0'] });

    // knocked about: the tag changed by hand, then the port deleted; nics says so, reconcile puts it right
    const vm = await Controller.open({ name: VM, store });
    await ovs.vsctl(['set', 'Port', tap, 'tag=99']);
    expect((await vm.listNics())[0]!.drift).to.deep.equal(['VLAN tag 99, expected 7']);
    await ovs.vsctl(['del-port', tap]);
    expect((await vm.listNics())[0]!.drift).to.deep.equal([`no OVS port for the tap on bridge ${bridge}`]);
    const reconciling = vm.startReconcile(vm.events$, 100);
    await pollUntil(async () => (await port(tap))?.tag === '7', 10_000);
    reconciling.unsubscribe();
    expect(await port(tap)).to.deep.include({ tag: '7', vlan_mode: 'access', error: '[]' });
    expect((await port(tap))!.ofport).to.be.above(0);
    expect((await vm.listNics())[0]!.drift).to.deep.equal([]);
    await vm.close();
    // a rate given in place: a QoS and a meter on OVS, and no ifb in the record (that is the Linux bridge's)
    const rated = await cli(['apply', VM, '-f', spec({ vlan: 7, rate: 10 }), '--json'], env);
    expect(rated.exitCode, rated.stderr).to.equal(0);
    expect(JSON.parse(rated.stdout)).to.deep.include({ updated: ['net0'], replaced: [] });
    expect(store.read(VM)!.nics[0]).to.deep.include({ rate: 10 }).and.not.have.property('ifb');
  });

  it('--rate on OVS: a linux-htb QoS on the port and a meter on what the tap sends; drift seen and put right; a dead VM leaves neither', async () => {
    const record = await smallVm(store, VM);
    const r = await cli(['add', VM, '--queues', '2', '--bridge', bridge, '--rate', '5', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const nic = JSON.parse(r.stdout) as AddResult;
    trackLink(nic.tap);
    expect(nic.ifb, 'no ifb on OVS').to.equal(undefined);
    const ofctl = async (args: string[]) =>
      (await execa('ovs-ofctl', ['-O', 'OpenFlow13', ...args], { env: ovs.env })).stdout;
    const qos = async () => (await ovs.vsctl(['--columns=type,other_config', 'list', 'qos'])).replace(/\s+/g, ' ');
    expect(await qos()).to.match(/type : linux-htb other_config : \{max-rate="5000000"\}/);
    const { ofport } = (await port(nic.tap))!;
    const flows = await ofctl(['dump-flows', bridge]);
    expect(flows).to.match(new RegExp(`priority=1000,in_port=${ofport} actions=meter:\\d+,NORMAL`));
    expect(await ofctl(['dump-meters', bridge])).to.match(/kbps burst .*rate=5000 burst_size=1088/s);
    const [view] = JSON.parse((await cli(['nics', VM, '--json'], env)).stdout) as { drift: string[]; rate: number }[];
    expect(view).to.deep.include({ drift: [], rate: 5 });

    // the meter deleted by hand (its flow goes with it): nics says so, reconcile puts both back
    await ofctl(['del-meters', bridge]);
    const vm = await Controller.open({ name: VM, store });
    expect((await vm.listNics())[0]!.drift).to.deep.equal(['no 5 Mbit/s meter on the OVS port (guest transmit)']);
    const reconciling = vm.startReconcile(vm.events$, 100);
    const settled = async () =>
      /meter:/.test(await ofctl(['dump-flows', bridge])) && (await vm.listNics())[0]!.drift.length === 0;
    expect(await pollUntil(settled, 10_000), 'meter back, no drift').to.equal(true);
    reconciling.unsubscribe();
    expect((await ovs.vsctl(['--columns=_uuid', 'list', 'qos'])).trim().split('\n'), 'one QoS, not two').to.have.length(
      1,
    );
    await vm.close();

    // a dead QEMU, cleaned up by stop: no port, no QoS, no meter, no flow
    process.kill(record.pid, 'SIGKILL');
    await pollUntil(() => !fs.existsSync(`/proc/${record.pid}`), 5000);
    expect((await stopVm(store, VM)).how).to.equal('already-dead');
    expect(await allPorts()).to.deep.equal([]);
    expect((await ovs.vsctl(['--columns=_uuid', 'list', 'qos'])).trim()).to.equal('');
    expect(await ofctl(['dump-meters', bridge])).to.not.match(/meter=/);
    expect(await ofctl(['dump-flows', bridge])).to.not.match(/meter:/);
  });

  it('no port outlives its VM: stop, a dead QEMU, a crashed add; a host reboot brings the ports back with their VLANs', async () => {
    // stop
    await startDefined();
    let r = await cli(['add', VM, '--queues', '2', '--bridge', bridge, '--vlan', '12', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const nic = JSON.parse(r.stdout) as AddResult;
    trackLink(nic.tap);
    await stopVm(store, VM);
    expect(await allPorts(), 'after stop').to.deep.equal([]);

    // a host reboot: QEMU and the tap gone, /run wiped, OVS's database kept (with no port: stop took it);
    // the defined VM's start brings the port back with its VLAN and iface id
    await startDefined();
    expect((await port(nic.tap))?.tag, 'after start').to.equal('12');
    const record = store.read(VM)!;
    process.kill(record.pid, 'SIGKILL');
    await pollUntil(() => !fs.existsSync(`/proc/${record.pid}`), 5000);
    await execa('ip', ['link', 'del', 'dev', nic.tap]);
    wipeRuntimeState(store.root);
    expect((await port(nic.tap))?.tag, 'a dead port stays in OVSDB').to.equal('12');
    await startDefined();
    const back = (await port(nic.tap))!;
    expect(back).to.deep.include({ tag: '12', error: '[]' });
    expect(back.ofport, 'the stale port was replaced, not left dead').to.be.above(0);
    expect(back.external_ids['iface-id']).to.equal(nic.ifaceId);
    expect(store.read(VM)!.argv, "the saved NIC on QEMU's command line").to.include(
      `virtio-net-pci,id=${nic.id},netdev=${nic.netdev},mac=${nic.mac},mq=on,vectors=6,bus=${nic.bus},addr=${nic.addr}`,
    );

    // a dead QEMU, cleaned up by stop
    const again = store.read(VM)!;
    process.kill(again.pid, 'SIGKILL');
    await pollUntil(() => !fs.existsSync(`/proc/${again.pid}`), 5000);
    expect((await stopVm(store, VM)).how).to.equal('already-dead');
    expect(await allPorts(), 'after SIGKILL + stop').to.deep.equal([]);

    // an add whose process died after OVS got the port (record 'adding', the device never plugged):
    // the next operation undoes it, port and tap
    expect((await cli(['undefine', VM], env)).exitCode).to.equal(0);
    await smallVm(store, VM);
    const vm = await Controller.open({ name: VM, store });
    const plan = await vm.planNic({ queues: 2, bridge, vlan: 14, id: 'nicx' });
    trackLink(plan.tap);
    vm.context.record.saveNic({ ...plan, state: 'adding', addedAt: new Date().toISOString() });
    await vm.context.taps.prepare(plan);
    await vm.context.network.attach(plan);
    expect((await port(plan.tap))?.tag).to.equal('14');
    await vm.close();
    // the next add finishes the dead one's work first: its port and tap go, the new NIC's port comes
    r = await cli(['add', VM, '--queues', '2', '--bridge', bridge, '--vlan', '15', '--json'], env);
    expect(r.exitCode, r.stderr).to.equal(0);
    const next = trackLink((JSON.parse(r.stdout) as AddResult).tap);
    expect(await allPorts(), 'after the crashed add was undone').to.deep.equal([next]);
    expect(linkExists(plan.tap)).to.equal(false);
  });

  it('an OVS bridge that vanished between preflight and attach: rolled back, nothing left in OVSDB or on the host', async () => {
    await smallVm(store, VM);
    const vm = await Controller.open({ name: VM, store });
    const plan = await vm.planNic({ queues: 2, bridge, vlan: 10 });
    trackLink(plan.tap);
    await ovs.vsctl(['del-br', bridge]);
    const error = await executeAdd(vm.context, plan).then(
      () => new Error('the add succeeded onto a deleted bridge'),
      (e: unknown) => e,
    );
    expect(error).to.be.instanceOf(HotplugError);
    expect((error as Error).message).to.contain(`Open vSwitch bridge '${bridge}' no longer exists`);
    expect(await allPorts()).to.deep.equal([]);
    // with no guest OS the device stays (unplug-pending), and its tap with it: remove deletes both
    expect((error as Error).message).to.contain(`tap ${plan.tap} (kept with device ${plan.id})`);
    expect((await vm.qmp.execute<{ status: string }>('query-status')).status).to.equal('running');
    await vm.close();
  });

  it('bad input: one line, exit 2, nothing made (VLAN 0, 4095, abc; trunks with junk or twice; --vlan on a Linux bridge or none; --rate 0)', async () => {
    await smallVm(store, VM);
    const linux = await makeBridge();
    const linksBefore = ourLinks().sort();
    const cases: [string[], RegExp][] = [
      [['--vlan', '0'], /^mq-hotplug: invalid VLAN '0': use an integer from 1 to 4094/],
      [['--vlan', '4095'], /^mq-hotplug: invalid VLAN '4095': use an integer from 1 to 4094/],
      [['--vlan', 'abc'], /^mq-hotplug: invalid VLAN 'abc'/],
      [['--trunks', '10,x'], /^mq-hotplug: invalid trunks '10,x': 'x' is not a VLAN id or a range/],
      [['--trunks', '10,5-12'], /^mq-hotplug: invalid trunks '10,5-12': VLAN 10 is given twice/],
      [['--trunks', '20-10'], /^mq-hotplug: invalid trunks '20-10': range 20-10 runs backwards/],
      [['--vlan', '10', '--trunks', '10,20'], /^mq-hotplug: invalid VLAN '10': with trunks it is the native VLAN/],
      [['--rate', '0'], /^mq-hotplug: invalid rate '0'/],
    ];
    for (const [args, message] of cases) {
      const r = await cli(['add', VM, '--queues', '2', '--bridge', bridge, ...args], env);
      expect(r.exitCode, args.join(' ')).to.equal(2);
      expect(r.stderr, args.join(' ')).to.match(message);
      expect(r.stderr.trim().split('\n'), args.join(' ')).to.have.length(1);
    }
    const onLinux = await cli(['add', VM, '--queues', '2', '--bridge', linux, '--vlan', '10'], env);
    expect(onLinux.exitCode).to.equal(2);
    expect(onLinux.stderr).to.match(
      new RegExp(`^mq-hotplug: --vlan needs an Open vSwitch bridge: '${linux}' is a Linux bridge`),
    );
    const none = await cli(['add', VM, '--queues', '2', '--no-bridge', '--trunks', '10'], env);
    expect(none.exitCode).to.equal(2);
    expect(none.stderr).to.match(/^mq-hotplug: --trunks needs a bridge/);
    expect(await allPorts()).to.deep.equal([]);
    expect(ourLinks().sort()).to.deep.equal(linksBefore);
    expect(JSON.parse((await cli(['nics', VM, '--json'], env)).stdout)).to.deep.equal([]);
  });

  it('telling bridges apart: a Linux bridge and an OVS bridge of one name are refused; a missing OVS database is named', async () => {
    await smallVm(store, VM);
    // OVS cannot make the interface of a bridge whose name a Linux bridge has
    const both = await makeBridge();
    await ovs.vsctl(['add-br', both, '--', 'set', 'bridge', both, 'datapath_type=netdev']);
    const r = await cli(['add', VM, '--queues', '2', '--bridge', both], env);
    expect(r.exitCode).to.equal(2);
    expect(r.stderr).to.match(
      new RegExp(`^mq-hotplug: '${both}' is a Linux bridge and an Open vSwitch bridge at once`),
    );
    await ovs.vsctl(['del-br', both]);
    // no database where OVS_RUNDIR points: the OVS bridge's own interface is only "not a bridge", and says why
    const elsewhere = { ...env, OVS_RUNDIR: tempDir('noovs') };
    const down = await cli(['add', VM, '--queues', '2', '--bridge', bridge], elsewhere);
    expect(down.exitCode).to.equal(2);
    expect(down.stderr).to.match(
      new RegExp(
        `^mq-hotplug: '${bridge}' is not a bridge: neither a Linux bridge nor an Open vSwitch bridge; no Open vSwitch database answers at .*/db.sock`,
      ),
    );
    expect(await allPorts()).to.deep.equal([]);
    const doctor = await cli(['doctor'], env);
    expect(doctor.stdout).to.match(
      new RegExp(
        `^ok +openvswitch +database at .* answers; bridges: .*${bridge}.*; ovs-vswitchd applies changes$`,
        'm',
      ),
    );
  });
});
