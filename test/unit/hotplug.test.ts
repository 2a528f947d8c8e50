/**
 * The hot-plug layer against in-memory ports (test/helpers/ports.ts): preflight and plan, the add
 * transaction and its rollbacks, remove, nics joining, reconcile. No root, no QEMU, no ip.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { planNic } from '../../src/hotplug/add/plan.js';
import { addNic, executeAdd } from '../../src/hotplug/add/transaction.js';
import { recoverAdds } from '../../src/hotplug/add/recovery.js';
import { HotplugError, UnplugPendingError } from '../../src/hotplug/errors.js';
import { listNics } from '../../src/hotplug/nics.js';
import { startReconcile } from '../../src/hotplug/reconcile.js';
import { removeNic } from '../../src/hotplug/remove.js';
import { applyLive, parseApplySpec } from '../../src/hotplug/apply.js';
import { decideVhost, vhostNetUsable } from '../../src/host/ip.js';
import { EXIT_CODES, MqHotplugError, StateError, UsageError, exitCodeOf } from '../../src/errors.js';
import { QmpDisconnectedError, QmpError } from '../../src/qmp/errors.js';
import { World } from '../helpers/ports.js';
import { pollUntil, sleep } from '../../src/util/time.js';
import { recordOf } from '../../src/model/nic.js';
import { ownedTapLines, tapMark } from '../../src/host/tap.js';

/** A world with a bridge br0, and a context (its bridging reaction runs until stop). */
function setup(options: ConstructorParameters<typeof World>[0] = {}) {
  const world = new World(options);
  world.addLink('br0', { kind: 'bridge', up: true });
  const ctx = world.context();
  return { world, ctx, stop: () => ctx.close() };
}

/** The two ip lines that make a NIC's tap before netdev_add: owned by QEMU's uid (0 here), marked for the VM. */
const tapLines = (tap: string, queues: number, mac: string, mtu: number, uid = 0) => [
  ['tuntap', 'add', 'dev', tap, 'mode', 'tap', ...(queues > 1 ? ['multi_queue'] : []), 'vnet_hdr', 'user', String(uid)],
  ['link', 'set', 'dev', tap, 'address', mac, 'mtu', String(mtu), 'alias', tapMark('vm')],
];

describe('hot-plug layer (in-memory ports, no root, no QEMU)', () => {
  describe('plan (preflight)', () => {
    it('pc: picks nic0, nd-nic0, tap vm-nic0, 2N+2 vectors on pci.0; sends only queries', async () => {
      const { world, ctx, stop } = setup({ machine: 'pc', cpus: 8 });
      const plan = await planNic(ctx, { queues: 8, bridge: 'br0' });
      expect(plan).to.deep.include({
        id: 'nic0',
        netdev: 'nd-nic0',
        tap: 'vm-nic0',
        queues: 8,
        vectors: 18,
        vhost: false,
        bridge: 'br0',
        bus: 'pci.0',
      });
      expect(plan.commands).to.deep.equal([
        {
          execute: 'netdev_add',
          arguments: {
            type: 'tap',
            id: 'nd-nic0',
            ifname: 'vm-nic0',
            script: 'no',
            downscript: 'no',
            vhost: false,
            queues: 8,
          },
        },
        {
          execute: 'device_add',
          arguments: {
            driver: 'virtio-net-pci',
            id: 'nic0',
            netdev: 'nd-nic0',
            mac: plan.mac,
            mq: true,
            vectors: 18,
            bus: 'pci.0',
            addr: '0x2', // the first free slot, pinned
          },
        },
      ]);
      expect(plan.hostCommands.at(-1)).to.deep.equal([
        ...['ip', 'link', 'set', 'dev', 'vm-nic0', 'address', `fe${plan.mac.slice(2)}`, 'mtu', '1500'],
        ...['master', 'br0', 'up'],
      ]);
      expect(plan.mac).to.match(/^52:54:00(:[0-9a-f]{2}){3}$/);
      expect(plan.notes).to.deep.equal(["vhost off: /dev/vhost-net is missing or QEMU's user cannot open it"]);
      expect(world.changes()).to.deep.equal([]);
      stop();
    });

    it('q35: the first free root port, at addr 0; full ports are refused', async () => {
      const { ctx, stop } = setup({ machine: 'q35', rootPorts: 2 });
      const first = await addNic(ctx, { queues: 2, bridge: 'br0' });
      expect(first.bus).to.equal('mqh-port0');
      const plan = await planNic(ctx, { queues: 2, bridge: 'br0' });
      expect(plan.bus).to.equal('mqh-port1');
      expect(plan.commands[1].arguments).to.include({ bus: 'mqh-port1', addr: '0' });
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      const err = await planNic(ctx, { queues: 2 }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(UsageError);
      expect((err as Error).message).to.equal(
        "VM 'vm' has no free hot-plug slot: every pcie-root-port is taken (start it with more --hotplug-slots)",
      );
      stop();
    });

    it('refuses every bad input before sending anything that changes the VM', async () => {
      const cases: [Parameters<typeof planNic>[1], RegExp, ConstructorParameters<typeof World>[0]?][] = [
        [{ queues: 0 }, /^invalid queue count '0': use an integer from 1 to 256$/],
        [{ queues: 257 }, /^invalid queue count '257'/],
        [{ queues: 'abc' }, /^invalid queue count 'abc'/],
        [{ queues: 2, bridge: 'nosuch' }, /^bridge 'nosuch' does not exist/],
        [{ queues: 2, bridge: 'tap9' }, /^'tap9' is not a bridge/],
        [{ queues: 2, bridge: 'bad name' }, /^invalid bridge name 'bad name'/],
        [{ queues: 2, mac: '01:00:00:00:00:01' }, /multicast/],
        [{ queues: 2, id: '9x' }, /^invalid NIC id '9x'/],
        [{ queues: 2, ifname: 'tap9' }, /^tap name 'tap9' is taken by a tap made without multi_queue/],
        [{ queues: 2, vhost: 'on' }, /^vhost 'on' needs \/dev\/vhost-net/],
        [{ queues: 2, vhost: 'maybe' as 'on' }, /^invalid vhost 'maybe'/],
        [{ queues: 2 }, /^VM 'vm' is paused, not running/, { status: 'paused' }],
        [{ queues: 2 }, /^'ip' not found in PATH/, { ipInstalled: false }],
        [{ queues: 2 }, /^VM 'vm' has no free slot on pci.0$/, { usedSlots: 30 }],
      ];
      for (const [request, message, options] of cases) {
        const { world, ctx, stop } = setup(options);
        world.addLink('tap9', { kind: 'tap', up: true });
        const err = await planNic(ctx, request).catch((e: unknown) => e);
        expect(err, JSON.stringify(request)).to.be.instanceOf(UsageError);
        expect((err as Error).message, JSON.stringify(request)).to.match(message);
        expect(world.changes(), JSON.stringify(request)).to.deep.equal([]);
        stop();
      }
    });

    it('ids and MACs already used, by our NICs or by others, are refused or skipped', async () => {
      const { world, ctx, stop } = setup();
      const a = await addNic(ctx, { queues: 1, mac: '52:54:00:00:00:01' });
      // a NIC nobody recorded (added by hand)
      world.devices.set('nic1', { driver: 'virtio-net-pci', mac: '52:54:00:00:00:02', netdev: 'x', bus: 'pci.0' });
      expect(a.id).to.equal('nic0');
      expect((await planNic(ctx, { queues: 1 })).id).to.equal('nic2');
      for (const [request, message] of [
        [{ queues: 1, id: 'nic0' }, /^NIC id 'nic0' is already used/],
        [{ queues: 1, mac: '52:54:00:00:00:01' }, /^MAC '52:54:00:00:00:01' is already used/],
        [{ queues: 1, mac: '52:54:00:00:00:02' }, /^MAC '52:54:00:00:00:02' is already used/],
      ] as const) {
        expect(await planNic(ctx, request).catch((e: Error) => e.message)).to.match(message);
      }
      stop();
    });
  });

  describe('add transaction', () => {
    it('plugs, publishes DEVICE_ADDED then NIC_BRIDGED, bridges through the host port, records, confirms', async () => {
      const { world, ctx, stop } = setup();
      const r = await addNic(ctx, { queues: 4, bridge: 'br0' });
      expect(world.changes()).to.deep.equal(['netdev_add', 'device_add']);
      expect(world.sent.at(-1)).to.deep.equal({
        command: 'qom-get',
        args: { path: '/machine/peripheral/nic0', property: 'netdev' },
      });
      expect(world.published.map((e) => e.event)).to.deep.equal(['DEVICE_ADDED', 'NIC_BRIDGED', 'NIC_ADDED']);
      expect(world.ipLines).to.deep.equal([
        ...tapLines('vm-nic0', 4, `fe${r.mac.slice(2)}`, 1500),
        ['link', 'set', 'dev', 'vm-nic0', 'address', `fe${r.mac.slice(2)}`, 'mtu', '1500', 'master', 'br0', 'up'],
      ]);
      expect(world.links.get('vm-nic0')).to.deep.include({ owner: 0, alias: tapMark('vm'), multiQueue: true });
      expect(world.links.get('vm-nic0')).to.deep.include({ master: 'br0', up: true, queues: 4 });
      expect(world.record!.nics).to.have.length(1);
      expect(world.record!.nics[0]).to.deep.include({
        id: 'nic0',
        tap: 'vm-nic0',
        bridge: 'br0',
        state: 'active',
        queues: 4,
        vectors: 10,
      });
      expect(r.timings.total).to.be.at.least(r.timings.preflight + r.timings.plug);
      stop();
    });

    it('device_add fails: netdev_del undoes the netdev and its tap; nothing recorded', async () => {
      const { world, ctx, stop } = setup();
      world.failNext('device_add', 'Bus pci.0 is full');
      const err = (await addNic(ctx, { queues: 2 }).catch((e: unknown) => e)) as HotplugError;
      expect(err).to.be.instanceOf(HotplugError).and.include({ step: 'device_add', devicePlugged: false });
      expect(err.undone).to.deep.equal(['netdev nd-nic0 deleted', 'tap vm-nic0 deleted']);
      expect(err.pending).to.deep.equal([]);
      expect(err.cause).to.be.instanceOf(QmpError);
      expect(world.changes()).to.deep.equal(['netdev_add', 'device_add', 'netdev_del']);
      expect(world.netdevs.size + world.devices.size).to.equal(0);
      expect(world.record!.nics).to.deep.equal([]);
      stop();
    });

    it('bridging fails, guest present: device_del, DEVICE_DELETED, netdev_del; all undone', async () => {
      const { world, ctx, stop } = setup({ guest: true });
      world.failNextIp('RTNETLINK answers: Operation not supported');
      const err = (await addNic(ctx, { queues: 2, bridge: 'br0' }).catch((e: unknown) => e)) as HotplugError;
      expect(err.message).to.match(
        /^attaching vm-nic0 to br0 failed: RTNETLINK answers: Operation not supported; undone: device nic0 deleted, netdev nd-nic0 deleted, tap vm-nic0 deleted$/,
      );
      expect(err.devicePlugged).to.equal(false);
      expect(world.published.map((e) => e.event)).to.deep.equal([
        'DEVICE_ADDED',
        'NIC_BRIDGE_FAILED',
        'NIC_ADD_FAILED',
      ]);
      expect(world.published.at(-1)!.data).to.include({ device: 'nic0', kind: 'HotplugError' });
      expect(world.devices.size + world.netdevs.size + world.links.size).to.equal(1); // only br0
      expect(world.record!.nics).to.deep.equal([]);
      stop();
    });

    it('bridging fails, no guest OS: the device stays, reported and recorded as unplug-pending', async function () {
      this.timeout(10_000);
      const { world, ctx, stop } = setup({ guest: false });
      world.failNextIp('boom');
      const err = (await executeAdd(ctx, await planNic(ctx, { queues: 2, bridge: 'br0' })).catch(
        (e: unknown) => e,
      )) as HotplugError;
      expect(err.devicePlugged).to.equal(true);
      expect(err.pending).to.deep.equal([
        'device nic0 (the guest has not released it; recorded as unplug-pending)',
        'tap vm-nic0 (kept with device nic0)', // remove deletes it with the NIC
      ]);
      expect(err.undone).to.deep.equal(['netdev nd-nic0 deleted']);
      expect(world.links.has('vm-nic0')).to.equal(true);
      expect(world.record!.nics.map((n) => [n.id, n.state])).to.deep.equal([['nic0', 'unplug-pending']]);
      stop();
    });

    it('the QMP connection is lost at device_add: nothing more is sent, the error says what may be left', async () => {
      const { world, ctx, stop } = setup();
      world.failNext('device_add', new QmpDisconnectedError('fake', 'device_add', 'EOF'));
      const err = (await addNic(ctx, { queues: 2 }).catch((e: unknown) => e)) as HotplugError;
      expect(err.message).to.match(
        /^device_add failed: the QMP connection was lost \(.*\); check with 'mq-hotplug nics vm'/,
      );
      expect(err.pending).to.deep.equal(['netdev nd-nic0 and tap vm-nic0', 'device nic0 if QEMU made it']);
      expect(world.changes()).to.deep.equal(['netdev_add', 'device_add']);
      stop();
    });

    it('QEMU exited mid-add: the error says so, and that its tap, netdev and device went with it', async () => {
      const { world, ctx, stop } = setup();
      world.qemuGone = true;
      world.failNext('netdev_add', new QmpDisconnectedError('fake', 'netdev_add', 'EOF'));
      const err = (await addNic(ctx, { queues: 2 }).catch((e: unknown) => e)) as HotplugError;
      expect(err.message).to.match(
        /^netdev_add failed: QEMU of VM 'vm' exited during the hot-plug .*went with it, its tap is deleted$/,
      );
      stop();
    });

    it('the confirmation sees a different netdev: the record is taken back and the NIC undone', async () => {
      const { world, ctx, stop } = setup({ guest: true });
      const plan = await planNic(ctx, { queues: 2 });
      const qmp = ctx.qmp;
      const lying = world.context({
        isReady: true,
        execute: async <T>(c: string, a?: object) => (c === 'qom-get' ? ('other' as T) : qmp.execute<T>(c, a)),
      });
      const err = (await executeAdd(lying, plan).catch((e: unknown) => e)) as HotplugError;
      lying.close();
      expect(err.message).to.match(
        /^confirming nic0 failed: device nic0 has netdev 'other', expected 'nd-nic0'; undone: device nic0 deleted/,
      );
      expect(world.record!.nics).to.deep.equal([]);
      stop();
    });

    it('on a VM given by --qmp nothing is recorded and vCPUs are asked of QEMU', async () => {
      const { world, ctx, stop } = setup({ recorded: false, cpus: 4 });
      const r = await addNic(ctx, { queues: 6 });
      expect(r.notes).to.include("6 queues for 4 vCPUs: the guest enables 4 pairs until 'ethtool -L <if> combined 6'");
      expect(world.sent.map((s) => s.command)).to.include('query-cpus-fast');
      expect(world.record).to.equal(undefined);
      stop();
    });
  });

  describe('remove', () => {
    it('with a guest: device_del, DEVICE_DELETED matched on data.device, netdev_del, forgotten, NIC_REMOVED', async () => {
      const { world, ctx, stop } = setup({ guest: true });
      const nic = await addNic(ctx, { queues: 2, bridge: 'br0' });
      const r = await removeNic(ctx, nic.mac.toUpperCase());
      expect(r).to.include({ id: 'nic0', netdev: 'nd-nic0', tap: 'vm-nic0' });
      expect(world.changes().slice(2)).to.deep.equal(['device_del', 'netdev_del']);
      expect(world.record!.nics).to.deep.equal([]);
      const removed = world.published.at(-1)!;
      expect(removed.event).to.equal('NIC_REMOVED');
      expect(removed.data).to.deep.include({
        ...{ device: 'nic0', netdev: 'nd-nic0', tap: 'vm-nic0', mac: nic.mac, tapGone: true, reason: 'remove' },
      });
      expect((removed.data as { ms: number }).ms, 'device_del to the end')
        .to.be.a('number')
        .and.at.least(0);
      stop();
    });

    it('without a guest: re-sends device_del, then records unplug-pending (exit kind pending)', async function () {
      this.timeout(10_000);
      const { world, ctx, stop } = setup({ guest: false });
      await addNic(ctx, { queues: 2 });
      const err = await removeNic(ctx, 'nic0', 1500).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(UnplugPendingError);
      expect(exitCodeOf(err)).to.equal(3);
      expect(world.changes().filter((c) => c === 'device_del').length).to.be.at.least(2); // at 0 s, 1 s (and the deadline)
      expect(world.record!.nics[0]!.state).to.equal('unplug-pending');
      expect(world.published.at(-1)!.event).to.equal('NIC_UNPLUG_PENDING');
      stop();
    });

    it('an unknown NIC is a usage error listing the NICs there are', async () => {
      const { ctx, stop } = setup();
      await addNic(ctx, { queues: 1, mac: '52:54:00:00:00:07' });
      const err = await removeNic(ctx, 'nic9').catch((e: unknown) => e);
      expect(err).to.be.instanceOf(UsageError);
      expect((err as Error).message).to.equal("no NIC 'nic9' in VM 'vm'; its NICs: nic0 (vm-nic0, 52:54:00:00:00:07)");
      stop();
    });
  });

  /** A NIC plugged by someone else (no record of ours). */
  const HAND_MADE_NIC = {
    driver: 'virtio-net-pci',
    mac: '52:54:00:aa:bb:cc',
    netdev: 'ndh',
    mq: false,
    vectors: 3,
    bus: 'pci.0',
  };

  describe('nics: QOM joined with the host and the record', () => {
    it('reports drift: tap off its bridge, tap down, unrecorded NIC, recorded but missing', async () => {
      const { world, ctx, stop } = setup();
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      world.links.get('vm-nic0')!.master = undefined;
      world.links.get('vm-nic1')!.up = false;
      world.devices.set('hand', HAND_MADE_NIC);
      world.devices.delete('nic1');
      const views = await listNics(ctx);
      const byId = new Map(views.map((v) => [v.id, v]));
      expect(views.map((v) => v.id)).to.deep.equal(['nic0', 'hand', 'nic1']);
      expect(byId.get('nic0')!.drift).to.deep.equal(['tap not on bridge br0']);
      expect(byId.get('hand')).to.deep.include({
        state: 'unrecorded',
        drift: ['not in the record (added outside mq-hotplug?)'],
      });
      expect(byId.get('nic1')).to.deep.include({ state: 'missing', drift: ['recorded but not in the VM'] });
      stop();
    });

    it('on a --qmp VM a NIC is not drift for lacking a record', async () => {
      const { world, ctx, stop } = setup({ recorded: false });
      world.devices.set('hand', HAND_MADE_NIC);
      expect((await listNics(ctx))[0]).to.deep.include({ id: 'hand', state: 'unrecorded', drift: [] });
      stop();
    });
  });

  describe('reconcile', () => {
    it("a reaction to an add's own event waits for the add: it never reads taps while a NIC is 'adding'", async () => {
      const { world, ctx, stop } = setup();
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      // events only (a period longer than the test): DEVICE_ADDED, NIC_BRIDGED ... each start a check
      const reconciling = startReconcile(ctx, ctx.events$, 3_600_000);
      const reads: { tap: string; midAdd: boolean }[] = [];
      const readLink = ctx.host.readLink;
      Object.assign(ctx.host, {
        readLink: (name: string) => {
          reads.push({ tap: name, midAdd: world.record!.nics.some((n) => n.state === 'adding') });
          return readLink(name);
        },
      });
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      // the checks that the add's events started run once the add has let go of the lock
      await pollUntil(() => reads.some((r) => r.tap === 'vm-nic1'), 5000);
      expect(reads.filter((r) => r.midAdd)).to.deep.equal([]);
      expect(reads.map((r) => r.tap)).to.include.members(['vm-nic0', 'vm-nic1']);
      // the add's events queued one check, not one each (nothing else asks for one here)
      await sleep(100);
      expect(reads.filter((r) => r.tap === 'vm-nic1')).to.have.length(1);
      reconciling.unsubscribe();
      stop();
    });

    it('re-attaches a tap that left its bridge, and forgets a NIC the guest ejected', async () => {
      const { world, ctx, stop } = setup({ guest: true });
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      await addNic(ctx, { queues: 2, bridge: 'br0' });
      const reconciling = startReconcile(ctx, ctx.events$, 20);
      world.links.get('vm-nic0')!.master = undefined;
      // a few 20 ms rounds; waited for, not timed, as CI machines are slow at times
      await pollUntil(() => world.published.some((e) => e.event === 'NIC_REATTACHED'), 5000);
      expect(world.links.get('vm-nic0')!.master).to.equal('br0');
      expect(world.published.find((e) => e.event === 'NIC_REATTACHED')?.data).to.deep.equal({
        device: 'nic0',
        tap: 'vm-nic0',
        bridge: 'br0',
        was: null,
        fixed: ['tap not on bridge br0'],
      });
      // the guest ejects nic1: QEMU sends DEVICE_DELETED that no remove asked for
      world.devices.delete('nic1');
      world.qemuEvents.next({
        event: 'DEVICE_DELETED',
        data: { device: 'nic1', path: '/machine/peripheral/nic1' },
        timestamp: { seconds: 0, microseconds: 0 },
      });
      await pollUntil(() => world.published.at(-1)?.event === 'NIC_REMOVED', 5000);
      expect(world.record!.nics.map((n) => n.id)).to.deep.equal(['nic0']);
      expect(world.published.at(-1)).to.deep.include({ event: 'NIC_REMOVED' });
      expect(world.published.at(-1)!.data).to.include({ device: 'nic1', reason: 'guest-initiated unplug' });
      reconciling.unsubscribe();
      stop();
    });
  });
});

describe('ports: the tap as a good citizen of its bridge (in-memory ports)', () => {
  it('the tap gets fe + the guest MAC and the bridge MTU, in the one ip line, before it joins', async () => {
    const { world, ctx, stop } = setup();
    world.links.get('br0')!.mtu = 9000;
    const r = await addNic(ctx, { queues: 2, bridge: 'br0', mac: '52:54:00:12:34:56' });
    expect(r).to.deep.include({ tapMac: 'fe:54:00:12:34:56', tapMtu: 9000 });
    expect(r).to.not.have.property('guestMtu');
    expect(world.ipLines).to.deep.equal([
      ...tapLines('vm-nic0', 2, 'fe:54:00:12:34:56', 9000),
      ['link', 'set', 'dev', 'vm-nic0', 'address', 'fe:54:00:12:34:56', 'mtu', '9000', 'master', 'br0', 'up'],
    ]);
    expect(world.sent.find((c) => c.command === 'device_add')!.args).to.not.have.property('host_mtu');
    expect(world.record!.nics[0]).to.deep.include({ tapMac: 'fe:54:00:12:34:56', tapMtu: 9000 });
    stop();
  });

  it('--mtu tells the guest (host_mtu); the tap keeps the bridge MTU; without a bridge the tap takes --mtu', async () => {
    const { world, ctx, stop } = setup();
    world.links.get('br0')!.mtu = 9000;
    const a = await planNic(ctx, { queues: 1, bridge: 'br0', guestMtu: 1400 });
    expect(a).to.deep.include({ tapMtu: 9000, guestMtu: 1400 });
    expect(a.commands[1].arguments).to.include({ host_mtu: 1400 });
    const b = await planNic(ctx, { queues: 1, bridge: null, guestMtu: '4000' });
    expect(b).to.deep.include({ tapMtu: 4000, guestMtu: 4000, bridge: null });
    expect(b.hostCommands.at(-1)).to.deep.equal([
      'ip',
      'link',
      'set',
      'dev',
      'vm-nic0',
      'address',
      b.tapMac,
      'mtu',
      '4000',
      'up',
    ]);
    const c = await planNic(ctx, { queues: 1, bridge: null });
    expect(c).to.not.have.property('tapMtu');
    expect(c.hostCommands.at(-1)).to.deep.equal(['ip', 'link', 'set', 'dev', 'vm-nic0', 'address', c.tapMac, 'up']);
    stop();
  });

  it("refuses bad MTUs and rates, an MTU above the bridge's, and fe: MACs, before anything changes", async () => {
    const cases: [Parameters<typeof planNic>[1], RegExp][] = [
      [{ queues: 1, guestMtu: 67 }, /^invalid MTU '67': use an integer from 68 to 65535$/],
      [{ queues: 1, guestMtu: 70000 }, /^invalid MTU '70000'/],
      [{ queues: 1, guestMtu: 'abc' }, /^invalid MTU 'abc'/],
      [
        { queues: 1, bridge: 'br0', guestMtu: 1501 },
        /^invalid MTU '1501': bridge 'br0' has MTU 1500; use at most 1500/,
      ],
      [{ queues: 1, rate: 0 }, /^invalid rate '0': use an integer from 1 to 100000 \(Mbit\/s\)$/],
      [{ queues: 1, rate: '-1' }, /^invalid rate '-1'/],
      [{ queues: 1, rate: 'abc' }, /^invalid rate 'abc'/],
      [
        { queues: 1, mac: 'FE:54:00:12:34:56' },
        /^invalid MAC 'FE:54:00:12:34:56': MACs starting with fe are kept for taps/,
      ],
    ];
    for (const [request, message] of cases) {
      const { world, ctx, stop } = setup();
      const err = await planNic(ctx, request).catch((e: unknown) => e);
      expect(err, JSON.stringify(request)).to.be.instanceOf(UsageError);
      expect((err as Error).message, JSON.stringify(request)).to.match(message);
      expect(world.changes()).to.deep.equal([]);
      stop();
    }
  });

  it('--rate: an ifb, tbf on the tap and the ifb, the ingress redirect; shaping before the ip line', async () => {
    const { world, ctx, stop } = setup();
    const plan = await planNic(ctx, { queues: 2, bridge: 'br0', rate: 100 });
    const ifb = plan.ifb!;
    expect(ifb).to.match(/^mqi[0-9a-f]{6}$/);
    expect(plan.hostCommands.map((c) => c.slice(0, 4).join(' '))).to.deep.equal([
      'ip tuntap add dev',
      'ip link set dev',
      `ip link add name`,
      `ip link set dev`,
      'tc qdisc add dev',
      'tc qdisc add dev',
      'tc filter add dev',
      'tc qdisc add dev',
      'ip link set dev',
    ]);
    await executeAdd(ctx, plan);
    expect(world.links.get(ifb)).to.deep.include({ kind: 'ifb', up: true });
    expect(world.qdiscMap.get('vm-nic0')).to.deep.equal([
      { kind: 'tbf', root: true, rate: 12_500_000 },
      { kind: 'ingress', root: false, rate: undefined },
    ]);
    expect(world.qdiscMap.get(ifb)).to.deep.equal([{ kind: 'tbf', root: true, rate: 12_500_000 }]);
    expect(world.tcLines[2]).to.deep.equal([
      'filter',
      'add',
      'dev',
      'vm-nic0',
      'parent',
      'ffff:',
      'protocol',
      'all',
      'u32',
      'match',
      'u32',
      '0',
      '0',
      'action',
      'mirred',
      'egress',
      'redirect',
      'dev',
      ifb,
    ]);
    expect(world.ipLines.at(-1)!.slice(0, 4)).to.deep.equal(['link', 'set', 'dev', 'vm-nic0']);
    expect(world.record!.nics[0]).to.deep.include({ rate: 100, ifb });
    stop();
  });

  it('a failed tc rolls back: no device, netdev, tap or ifb left', async () => {
    const { world, ctx, stop } = setup({ guest: true });
    world.failNextTc('RTNETLINK answers: No such file or directory');
    const err = (await addNic(ctx, { queues: 2, bridge: 'br0', rate: 10 }).catch((e: unknown) => e)) as HotplugError;
    expect(err).to.be.instanceOf(HotplugError);
    expect(err.undone.at(-1)).to.match(/^ifb mqi[0-9a-f]{6} deleted$/);
    expect([...world.links.keys()]).to.deep.equal(['br0']);
    expect(world.devices.size + world.netdevs.size).to.equal(0);
    stop();
  });

  it('remove deletes the ifb too', async () => {
    const { world, ctx, stop } = setup({ guest: true });
    const nic = await addNic(ctx, { queues: 2, bridge: 'br0', rate: 10 });
    expect(world.links.has(nic.ifb!)).to.equal(true);
    await removeNic(ctx, nic.id);
    expect([...world.links.keys()]).to.deep.equal(['br0']);
    stop();
  });

  it('nics reports MAC, MTU and qdisc drift; reconcile restores each and says what it fixed', async () => {
    const { world, ctx, stop } = setup();
    const nic = await addNic(ctx, { queues: 2, bridge: 'br0', rate: 10, mac: '52:54:00:00:00:09' });
    expect((await listNics(ctx))[0]).to.deep.include({
      tapMac: 'fe:54:00:00:00:09',
      tapMtu: 1500,
      rate: 10,
      drift: [],
    });
    const tap = world.links.get(nic.tap)!;
    tap.address = '02:11:22:33:44:55';
    tap.mtu = 1400;
    world.qdiscMap.set(
      nic.tap,
      world.qdiscMap.get(nic.tap)!.filter((q) => q.kind !== 'tbf'),
    );
    world.links.delete(nic.ifb!); // its qdiscs go with it
    world.qdiscMap.delete(nic.ifb!);
    expect((await listNics(ctx))[0]!.drift).to.deep.equal([
      'tap MAC 02:11:22:33:44:55, expected fe:54:00:00:00:09',
      'tap MTU 1400, expected 1500',
      "no 10 Mbit/s limit on the tap's egress (guest receive)",
      `ifb ${nic.ifb} missing`,
    ]);
    const reconciling = startReconcile(ctx, ctx.events$, 20);
    await pollUntil(() => world.published.some((e) => e.event === 'NIC_REATTACHED'), 5000);
    reconciling.unsubscribe();
    expect((await listNics(ctx))[0]!.drift).to.deep.equal([]);
    const fixed = world.published.find((e) => e.event === 'NIC_REATTACHED')!.data as { fixed: string[] };
    expect(fixed.fixed).to.have.length(4);
    stop();
  });
});

describe('slots and definitions (in-memory ports)', () => {
  it('pc: slots are pinned in order, a saved slot is taken again, a taken one is refused', async () => {
    const { ctx, stop } = setup();
    const a = await addNic(ctx, { queues: 1 });
    const b = await addNic(ctx, { queues: 1 });
    expect([a.bus, a.addr, b.addr]).to.deep.equal(['pci.0', '0x2', '0x3']);
    const c = await addNic(ctx, { queues: 1, slot: { bus: 'pci.0', addr: '0x1f' } });
    expect(c.addr).to.equal('0x1f');
    const err = await planNic(ctx, { queues: 1, id: 'again', slot: { bus: 'pci.0', addr: '0x3' } }).catch(
      (e: Error) => e,
    );
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal("slot pci.0 addr 0x3 for NIC 'again' is taken in VM 'vm'");
    stop();
  });

  it('q35: a saved root port is taken again', async () => {
    const { ctx, stop } = setup({ machine: 'q35', rootPorts: 3 });
    const r = await addNic(ctx, { queues: 1, slot: { bus: 'mqh-port2', addr: '0' } });
    expect([r.bus, r.addr]).to.deep.equal(['mqh-port2', '0']);
    stop();
  });

  it('a paused VM before boot takes NICs only when asked to (the restore path)', async () => {
    const { ctx, stop } = setup({ status: 'prelaunch' });
    expect(await planNic(ctx, { queues: 1 }).catch((e: Error) => e.message)).to.match(
      /^VM 'vm' is prelaunch, not running/,
    );
    expect((await planNic(ctx, { queues: 1, beforeBoot: true })).id).to.equal('nic0');
    stop();
  });

  it('add keeps the NIC in the definition (what it was asked, what it got); remove drops it; persist false does neither', async () => {
    const { world, ctx, stop } = setup({ defined: true, guest: true });
    const nic = await addNic(ctx, { queues: 4, bridge: 'br0', guestMtu: 1400, rate: 20, mac: '52:54:00:00:00:01' });
    expect(world.definition).to.deep.equal([
      {
        id: 'nic0',
        mac: '52:54:00:00:00:01',
        tap: 'vm-nic0',
        queues: 4,
        bridge: 'br0',
        vhost: 'auto',
        guestMtu: 1400,
        rate: 20,
        bus: 'pci.0',
        addr: '0x2',
      },
    ]);
    await addNic(ctx, { queues: 1, persist: false });
    expect(world.definition!.map((n) => n.id)).to.deep.equal(['nic0']);
    await removeNic(ctx, 'nic1', 1000, { persist: false });
    await removeNic(ctx, nic.id);
    expect(world.definition).to.deep.equal([]);
    stop();
  });
});

describe('recovery of an add whose process died (in-memory ports)', () => {
  /** A world where an add got as far as `step` and its process died: the record says 'adding'. */
  async function diedAfter(step: 'intent' | 'unmarked tap' | 'tap' | 'netdev_add' | 'device_add') {
    const { world, ctx, stop } = setup({ defined: true });
    const plan = await planNic(ctx, { queues: 2, bridge: 'br0', rate: 10 });
    world.record!.nics.push(recordOf(plan, 'adding'));
    // 'unmarked tap': the tap made (owned by QEMU's uid), the process gone before its alias
    if (step === 'unmarked tap')
      await ctx.host.ip(ownedTapLines({ ...plan, owner: ctx.taps.owner, mark: 'not reached' })[0]);
    else if (step !== 'intent') await ctx.taps.prepare(plan);
    if (step === 'netdev_add' || step === 'device_add') await ctx.qmp.execute('netdev_add', plan.commands[0].arguments);
    if (step === 'device_add') await ctx.qmp.execute('device_add', plan.commands[1].arguments);
    return { world, ctx, stop, plan };
  }

  it('the device was in: the next add finishes it (port, record active, definition) and goes on', async () => {
    const { world, ctx, stop, plan } = await diedAfter('device_add');
    const next = await addNic(ctx, { queues: 1 });
    expect(next.id).to.equal('nic1');
    expect(world.record!.nics.map((n) => [n.id, n.state])).to.deep.equal([
      ['nic0', 'active'],
      ['nic1', 'active'],
    ]);
    expect(world.links.get(plan.tap)).to.deep.include({ master: 'br0', up: true, address: plan.tapMac });
    expect(world.qdiscMap.get(plan.tap)!.map((q) => q.kind)).to.deep.equal(['tbf', 'ingress']);
    expect(world.definition!.map((n) => n.id)).to.deep.equal(['nic0', 'nic1']);
    expect(world.published.find((e) => e.event === 'NIC_RECOVERED')!.data).to.deep.equal({
      device: 'nic0',
      outcome: 'finished',
    });
    stop();
  });

  for (const step of ['netdev_add', 'tap', 'unmarked tap', 'intent'] as const) {
    it(`died after ${step}: the next add undoes it (no netdev, no tap) and takes its place`, async () => {
      const { world, ctx, stop } = await diedAfter(step);
      const made = world.ipLines.length;
      const next = await addNic(ctx, { queues: 1 });
      // the dead add's tap is deleted before the next add makes its own of the same name
      const deleted = world.ipLines.slice(made).some((l) => l.join(' ') === 'link del dev vm-nic0');
      expect(deleted).to.equal(step !== 'intent');
      expect(world.links.get('vm-nic0')).to.deep.include({ multiQueue: false }); // the new one-queue tap
      expect(next.id).to.equal('nic0'); // the id is free again
      expect([...world.netdevs.keys()]).to.deep.equal(['nd-nic0']);
      expect(world.changes().filter((c) => c === 'netdev_del').length).to.equal(step === 'netdev_add' ? 1 : 0);
      expect(world.published.find((e) => e.event === 'NIC_RECOVERED')!.data).to.deep.equal({
        device: 'nic0',
        outcome: 'undone',
      });
      stop();
    });
  }

  it("a tap of the dead add's name that is not ours (another owner, or another VM's mark) is never deleted", async () => {
    for (const stranger of [{ owner: 4242 }, { owner: 0, alias: tapMark('/elsewhere/vm') }]) {
      const { world, ctx, stop } = setup({ defined: true });
      const plan = await planNic(ctx, { queues: 2 });
      world.record!.nics.push(recordOf(plan, 'adding')); // died before making its tap; then someone made one
      world.links.set(plan.tap, { kind: 'tap', up: false, ...stranger });
      await recoverAdds(ctx);
      expect(world.links.get(plan.tap), JSON.stringify(stranger)).to.deep.include(stranger);
      expect(world.ipLines.filter((l) => l[1] === 'del')).to.deep.equal([]);
      expect(world.record!.nics).to.deep.equal([]); // the record forgets the add it undid
      stop();
    }
  });
});

describe('limits and traps (in-memory ports)', () => {
  it('the MSI-X budget: 7 NICs of 256 queues fit (3598 vectors), an 8th is refused naming the numbers', async () => {
    const { world, ctx, stop } = setup();
    for (let i = 0; i < 7; i++) await addNic(ctx, { queues: 256 });
    // one NIC nobody recorded counts too: its vectors are asked of QEMU
    world.devices.set('hand', {
      driver: 'virtio-net-pci',
      mac: '52:54:00:aa:bb:cc',
      netdev: 'x',
      vectors: 200,
      bus: 'pci.0',
      addr: '0x1e',
    });
    const err = await planNic(ctx, { queues: 256 }).catch((e: Error) => e);
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.equal(
      "a 256-queue NIC needs 514 MSI-X vectors (2N+2); the NICs of VM 'vm' have 3798, and 4312 would pass the budget of 3840 " +
        '(KVM routes at most 4096 interrupts per VM; 256 are kept for its other devices); use fewer queues',
    );
    expect((await planNic(ctx, { queues: 20 })).vectors).to.equal(42); // 3840 - 3798 = 42 still fit
    stop();
  });

  it('--queues auto: one pair per vCPU, from the record or (for a --qmp VM) from QEMU', async () => {
    const ours = setup({ cpus: 6 });
    expect((await planNic(ours.ctx, { queues: 'auto' })).queues).to.equal(6);
    ours.stop();
    const theirs = setup({ cpus: 3, recorded: false });
    expect((await planNic(theirs.ctx, { queues: 'auto' })).queues).to.equal(3);
    expect(theirs.world.sent.map((c) => c.command)).to.include('query-cpus-fast');
    theirs.stop();
  });

  it('a tap made by hand without multi_queue is named for what it is, with what to do', async () => {
    const { world, ctx, stop } = setup();
    world.addLink('tap0', { kind: 'tap', up: false, queues: 1 }); // tunctl tap0
    const err = await planNic(ctx, { queues: 8, ifname: 'tap0' }).catch((e: Error) => e.message);
    expect(err).to.equal(
      "tap name 'tap0' is taken by a tap made without multi_queue (tunctl, or 'ip tuntap add' without multi_queue), " +
        "which QEMU cannot open with 8 queues; mq-hotplug makes its own tap for each NIC: delete it ('ip link del tap0') or pick another --ifname",
    );
    world.addLink('eth9', { kind: 'veth', up: true });
    expect(await planNic(ctx, { queues: 8, ifname: 'eth9' }).catch((e: Error) => e.message)).to.equal(
      "tap name 'eth9' is already taken by a host interface; pick another --ifname",
    );
    stop();
  });
});

describe('vhost decision', () => {
  const usable = () => true;
  const absent = () => false;
  it('auto/on/off with vhost-net usable or not', () => {
    expect(decideVhost('off', usable)).to.deep.equal({ vhost: false });
    expect(decideVhost('auto', usable)).to.deep.equal({ vhost: true });
    expect(decideVhost('on', usable)).to.deep.equal({ vhost: true });
    expect(decideVhost('off', absent)).to.deep.equal({ vhost: false });
    expect(decideVhost('auto', absent)).to.deep.equal({
      vhost: false,
      note: "vhost off: /dev/vhost-net is missing or QEMU's user cannot open it",
    });
    expect(() => decideVhost('on', absent)).to.throw(UsageError, /^vhost 'on' needs \/dev\/vhost-net/);
  });

  it('vhostNetUsable opens the device: present, absent, and a node with no driver behind it', function () {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-vhost-'));
    try {
      const file = path.join(dir, 'present');
      fs.writeFileSync(file, '');
      expect(vhostNetUsable(file)).to.equal(true);
      expect(vhostNetUsable(path.join(dir, 'absent'))).to.equal(false);
      // vhost-net's own major:minor: where its driver is missing, open() fails with ENODEV
      // although access() would pass (needs root to make the node, and a host without vhost-net)
      if (process.getuid?.() !== 0 || fs.existsSync('/dev/vhost-net')) return;
      const node = path.join(dir, 'vhost-net');
      execFileSync('mknod', [node, 'c', '10', '238']);
      fs.accessSync(node, fs.constants.R_OK | fs.constants.W_OK);
      expect(vhostNetUsable(node)).to.equal(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('error tree', () => {
  it('one root; exit kind by class: usage 2, failed 1, pending 3', () => {
    const cases: [Error, number][] = [
      [new UsageError('x'), 2],
      [new StateError('x'), 2],
      [new HotplugError('step', new Error('x')), 1],
      [new UnplugPendingError('x'), 3],
      [new QmpDisconnectedError('t'), 1],
      [new Error('plain'), 1],
    ];
    for (const [e, code] of cases) expect(exitCodeOf(e), e.name).to.equal(code);
    for (const [e] of cases.slice(0, 5)) expect(e).to.be.instanceOf(MqHotplugError);
    expect(EXIT_CODES).to.deep.equal({ failed: 1, usage: 2, pending: 3 });
    const cause = new Error('root cause');
    expect(new HotplugError('s', cause).cause).to.equal(cause);
  });
});

describe('apply (in-memory ports; its lock re-enters as the real one does)', () => {
  it('adds, replaces, changes the rate in place and removes; a second apply changes nothing', async () => {
    const { world, ctx, stop } = setup({ guest: true, defined: true });
    await addNic(ctx, { id: 'old', queues: 1, bridge: 'br0' });
    await addNic(ctx, { id: 'keep', queues: 2, bridge: 'br0', mac: '52:54:00:00:00:02' });
    await addNic(ctx, { id: 'rate', queues: 2, bridge: 'br0', rate: 10 });
    const spec = parseApplySpec(
      JSON.stringify({
        nics: [
          { id: 'keep', queues: 4, bridge: 'br0' },
          { id: 'rate', queues: 2, bridge: 'br0', rate: 20 },
          { id: 'new', queues: 1, bridge: 'br0', mtu: 1400 },
        ],
      }),
      'test',
    );
    const result = await applyLive(ctx, spec, { removeTimeoutMs: 1000 });
    expect(result).to.deep.include({
      changed: true,
      added: ['new'],
      removed: ['old'],
      replaced: ['keep'],
      updated: ['rate'],
    });
    const byId = new Map(world.record!.nics.map((n) => [n.id, n]));
    expect([...byId.keys()].sort()).to.deep.equal(['keep', 'new', 'rate']);
    expect(byId.get('keep')).to.deep.include({ queues: 4, mac: '52:54:00:00:00:02' }); // replaced, MAC kept
    // the removed NIC's tap is deleted; the replaced one's was deleted and made anew, multi_queue now
    expect(world.links.has('vm-old')).to.equal(false);
    expect(world.links.get('vm-keep')).to.deep.include({ multiQueue: true, alias: tapMark('vm') });
    const tapLines = world.ipLines.map((l) => l.slice(0, 4).join(' '));
    expect(tapLines.filter((l) => l === 'link del dev vm-keep' || l === 'tuntap add dev vm-keep')).to.deep.equal([
      'tuntap add dev vm-keep', // the first add
      'link del dev vm-keep',
      'tuntap add dev vm-keep',
    ]);
    expect(byId.get('rate')!.rate).to.equal(20);
    expect(world.qdiscMap.get(byId.get('rate')!.ifb!)?.[0]).to.include({ kind: 'tbf', rate: 20 * 125_000 });
    expect(byId.get('new')!.guestMtu).to.equal(1400);
    expect(world.definition!.map((n) => n.id).sort()).to.deep.equal(['keep', 'new', 'rate']);
    const again = await applyLive(ctx, spec);
    expect(again).to.deep.include({ changed: false, unchanged: ['keep', 'rate', 'new'] });
    stop();
  });

  it('checks every NIC before it changes anything; a dry run sends no change', async () => {
    const { world, ctx, stop } = setup({ guest: true });
    await addNic(ctx, { id: 'a', queues: 1, bridge: 'br0' });
    const before = world.changes().length;
    const bad = parseApplySpec(
      JSON.stringify({
        nics: [
          { id: 'b', queues: 1 },
          { id: 'c', queues: 999 },
        ],
      }),
      't',
    );
    const err = await applyLive(ctx, bad).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(UsageError);
    expect((err as Error).message).to.match(/^invalid queue count '999'/);
    const dry = await applyLive(ctx, parseApplySpec('{"nics": [{"id": "b", "queues": 2}]}', 't'), { dryRun: true });
    expect(dry).to.deep.include({ dryRun: true, added: ['b'], removed: ['a'] });
    expect(world.changes().length).to.equal(before);
    expect(world.record!.nics.map((n) => n.id)).to.deep.equal(['a']);
    stop();
  });

  it('spec files: unknown fields, duplicates and non-JSON are one-line usage errors', () => {
    const cases: [string, RegExp][] = [
      ['{"nics": [{"id": "a", "queues": 1, "mtuu": 1}]}', /unknown field 'mtuu'; valid: id, queues/],
      ['{"nics": [{"id": "a", "queues": 1}, {"id": "a", "queues": 2}]}', /NIC id 'a' is given twice/],
      ['nope', /is not JSON/],
      ['{"nic": []}', /must be an object with a "nics" array/],
    ];
    for (const [text, message] of cases) expect(() => parseApplySpec(text, 'f.json')).to.throw(UsageError, message);
  });
});

describe('QEMU 7.2 and 10.0: what is sent, and what differs (in-memory ports)', () => {
  for (const [kind, qemuVersion] of [
    ['7.2', { major: 7, minor: 2, micro: 22 }],
    ['10.0', { major: 10, minor: 0, micro: 2 }],
  ] as const) {
    it(`QEMU ${kind}: netdev_add and device_add carry JSON numbers and booleans, exactly`, async () => {
      const { world, ctx, stop } = setup({ qemuVersion, cpus: 4 });
      await addNic(ctx, { queues: 4, bridge: 'br0', mac: '52:54:00:00:00:07', guestMtu: 1400 });
      const sent = (command: string) => world.sent.find((c) => c.command === command)!.args;
      // QEMU 9.2 and later refuse "on" for mq and "10" for vectors: the same typed arguments serve both
      expect(JSON.stringify(sent('netdev_add'))).to.equal(
        '{"type":"tap","id":"nd-nic0","ifname":"vm-nic0","script":"no","downscript":"no","vhost":false,"queues":4}',
      );
      expect(JSON.stringify(sent('device_add'))).to.equal(
        '{"driver":"virtio-net-pci","id":"nic0","netdev":"nd-nic0","mac":"52:54:00:00:00:07","mq":true,"vectors":10,"bus":"pci.0","addr":"0x2","host_mtu":1400}',
      );
      stop();
    });
  }

  it('--vhost on without /dev/vhost-net is refused before QEMU is asked, saying what each QEMU would do', async () => {
    for (const [qemuVersion, why] of [
      [{ major: 7, minor: 2, micro: 22 }, 'QEMU 7.2.22 would abort the whole VM on it'],
      [{ major: 10, minor: 0, micro: 2 }, 'QEMU 10.0.2 would refuse it'],
    ] as const) {
      const { world, ctx, stop } = setup({ qemuVersion });
      const err = await planNic(ctx, { queues: 2, vhost: 'on' }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(UsageError);
      expect((err as Error).message).to.include(`(${why})`);
      expect(world.changes()).to.deep.equal([]);
      stop();
    }
  });

  it("a rolled-back add whose device the guest keeps: 10.0's tap is reported pending until the guest lets go", async () => {
    const { world, ctx, stop } = setup({ qemuVersion: { major: 10, minor: 0, micro: 2 }, guest: false });
    const plan = await planNic(ctx, { queues: 2, bridge: 'br0' });
    world.failNextIp('Device does not exist');
    // as 10.0 does: netdev_del while the unplug is pending keeps the tap
    const netdevDel = ctx.qmp.execute.bind(ctx.qmp);
    Object.assign(ctx.qmp, {
      execute: async <T>(c: string, a?: object) => {
        if (c !== 'netdev_del') return netdevDel<T>(c, a);
        const tap = world.links.get(plan.tap)!;
        const result = await netdevDel<T>(c, a);
        world.links.set(plan.tap, tap);
        return result;
      },
    });
    const err = (await executeAdd(ctx, plan).catch((e: unknown) => e)) as HotplugError;
    expect(err.pending).to.deep.equal([
      'device nic0 (the guest has not released it; recorded as unplug-pending)',
      'tap vm-nic0 (kept with device nic0)',
    ]);
    stop();
  });
});
