/**
 * VLANs proven with traffic, not only OVS's word: a real guest (TCG) on this run's own Open vSwitch
 * (userspace datapath), and network namespaces as LAN hosts, each on a VLAN of its own (a veth
 * whose host end is an OVS access port). Counted at the namespaces, both ways, ping and TCP, over
 * IPv6 link-local addresses, bounded in count and time.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, linkLocal, makeLanHost, tapQueues, tempDir, vmName } from '../helpers/env.js';
import { Guest, type GuestNic, guestImage } from '../helpers/guest.js';
import { type Ovs, startOvs } from '../helpers/ovs.js';
import { ratesBothWays } from '../helpers/traffic.js';

const GA = vmName('va');
const GT = vmName('vt');
const GR = vmName('vr');

interface VlanHost {
  vlan: number;
  ns: string;
  peer: string;
  address: string;
}

describe('VLANs and rate limits on Open vSwitch seen from a real guest (TCG): access ports, a change in place, trunks, --rate', function () {
  this.timeout(300_000);
  let ovs: Ovs;
  let guest: Guest | undefined;
  const savedRundir = process.env.OVS_RUNDIR;

  before(async () => {
    await guestImage();
    ovs = await startOvs();
    process.env.OVS_RUNDIR = ovs.dir; // for every mq-hotplug the test runs
  });
  after(() => {
    if (savedRundir === undefined) delete process.env.OVS_RUNDIR;
    else process.env.OVS_RUNDIR = savedRundir;
    ovs.stop();
  });
  afterEach(async () => {
    await guest?.stop();
    guest = undefined;
  });

  /** A namespace on `vlan` of the OVS bridge: its veth's host end an access port with that tag. */
  async function hostOn(bridge: string, vlan: number): Promise<VlanHost> {
    const { uplink, ns, peer } = await makeLanHost();
    await ovs.vsctl(['add-port', bridge, uplink, `tag=${vlan}`]);
    await execa('ip', ['link', 'set', 'dev', uplink, 'up']);
    return { vlan, ns, peer, address: await linkLocal(peer, ns) };
  }

  /** Echo requests that reached the namespace's IPv6 stack (its own counter; other traffic on the VLAN does not count). */
  const echoesIn = async (h: VlanHost) => {
    const { stdout } = await execa('ip', ['netns', 'exec', h.ns, 'cat', '/proc/net/snmp6']);
    return Number(/^Icmp6InEchos\s+(\d+)$/m.exec(stdout)![1]);
  };

  /** Pings from the guest out of `ifname`; how many answers came, and how many of its requests reached the host. */
  async function pingFromGuest(g: Guest, ifname: string, h: VlanHost, count: number) {
    const before = await echoesIn(h);
    const r = await g.run(`ping -c ${count} -W 2 ${h.address}%${ifname}`, 30_000);
    const m = /(\d+) packets received/.exec(r.output.join('\n'));
    return { received: m ? Number(m[1]) : -1, arrived: (await echoesIn(h)) - before, output: r.output.join(' | ') };
  }

  /** Pings the guest from the namespace; answers received. */
  async function pingToGuest(h: VlanHost, guestAddress: string, count: number) {
    const r = await execa(
      'ip',
      ['netns', 'exec', h.ns, 'ping', '-c', String(count), '-W', '2', `${guestAddress}%${h.peer}`],
      { reject: false },
    );
    const m = /(\d+) received/.exec(r.stdout);
    return m ? Number(m[1]) : -1;
  }

  /** A bounded TCP transfer from the guest to the namespace host (it gives up after 30 s); the bytes it counted. */
  async function tcpFromGuest(g: Guest, ifname: string, h: VlanHost, bytes = 64 * 1024): Promise<number> {
    const peer = execa(
      'ip',
      [
        'netns',
        'exec',
        h.ns,
        process.execPath,
        path.join(ROOT, 'test/helpers/lan-peer.mjs'),
        'recv',
        '5003',
        String(bytes),
      ],
      {
        timeout: 30_000,
        reject: false,
        buffer: true,
      },
    );
    await new Promise<void>((resolve) => peer.stderr!.once('data', () => resolve())); // listening
    await g.run(
      `dd if=/dev/zero bs=1024 count=${bytes / 1024} 2>/dev/null | nc -w 4 ${h.address}%${ifname} 5003`,
      30_000,
    );
    const out = (await peer).stdout;
    const result = out ? (JSON.parse(out) as { bytes?: number }) : {};
    return result.bytes ?? 0;
  }

  async function nicIn(g: Guest, mac: string): Promise<GuestNic> {
    return g.waitFor(() => g.nics.get(mac), `the guest's NIC ${mac}`);
  }

  /** The guest's link-local address on an interface. */
  async function guestAddress(g: Guest, ifname: string): Promise<string> {
    const { output } = await g.run(`ip -6 addr show dev ${ifname}`);
    const m = /inet6 (fe80::[0-9a-f:]+)\//.exec(output.join('\n'));
    if (!m) throw new Error(`no link-local address on the guest's ${ifname}: ${output.join(' | ')}`);
    return m[1]!;
  }

  it('an access port reaches its VLAN and not another (ping both ways, TCP); moved in place, the traffic moves; remove leaves no port', async () => {
    const bridge = await ovs.addBridge();
    const [a, b] = [await hostOn(bridge, 10), await hostOn(bridge, 20)];
    guest = await Guest.boot({ name: GA, stateDir: tempDir(), cpus: 2, machine: 'pc' });
    const nic = await guest.add(['--queues', '2', '--bridge', bridge, '--vlan', '10']);
    const { ifname, combinedMax } = await nicIn(guest, nic.mac);
    await guest.waitLinkLocal(ifname);
    const mine = await guestAddress(guest, ifname);
    // the tap keeps all its queues on OVS: the guest sees 2 combined channels, the host 2 queues
    expect(combinedMax).to.equal(2);
    expect(tapQueues(nic.tap)).to.equal(2);

    const toA = await pingFromGuest(guest, ifname, a, 3);
    expect(toA.received, toA.output).to.equal(3);
    expect(toA.arrived).to.equal(3);
    const toB = await pingFromGuest(guest, ifname, b, 2);
    expect(toB.received, toB.output).to.equal(0);
    expect(toB.arrived, 'nothing of the guest reaches VLAN 20').to.equal(0);
    expect(await pingToGuest(a, mine, 3)).to.equal(3);
    expect(await pingToGuest(b, mine, 2)).to.equal(0);
    expect(await tcpFromGuest(guest, ifname, a)).to.equal(64 * 1024);

    // the VLAN changed in place (apply: updated, the same device): now VLAN 20 and not 10
    const spec = path.join(tempDir('spec'), 'spec.json');
    fs.writeFileSync(spec, JSON.stringify({ nics: [{ id: nic.id, queues: 2, bridge, vlan: 20 }] }));
    const applied = await execa('node', [path.join(ROOT, 'bin/mq-hotplug.cjs'), 'apply', GA, '-f', spec, '--json'], {
      env: guest.env,
    });
    expect(JSON.parse(applied.stdout)).to.deep.include({ updated: [nic.id], replaced: [] });
    expect(guest.nics.get(nic.mac)?.ifname).to.equal(ifname);
    const movedB = await pingFromGuest(guest, ifname, b, 3);
    expect(movedB.received, movedB.output).to.equal(3);
    const movedA = await pingFromGuest(guest, ifname, a, 2);
    expect(movedA.received, movedA.output).to.equal(0);
    expect(movedA.arrived).to.equal(0);
    expect(await tcpFromGuest(guest, ifname, b)).to.equal(64 * 1024);

    const removed = await execa('node', [path.join(ROOT, 'bin/mq-hotplug.cjs'), 'remove', GA, nic.id], {
      env: guest.env,
      reject: false,
    });
    expect(removed.exitCode, removed.stderr).to.equal(0);
    expect((await ovs.vsctl(['list-ports', bridge])).split('\n').filter(Boolean).sort()).to.not.include(nic.tap);
  });

  it('a trunk: each VLAN only through its own 802.1Q subinterface, the native VLAN untagged', async () => {
    const bridge = await ovs.addBridge();
    const [a, b, native] = [await hostOn(bridge, 10), await hostOn(bridge, 20), await hostOn(bridge, 30)];
    guest = await Guest.boot({ name: GT, stateDir: tempDir(), cpus: 2, machine: 'pc' });
    const nic = await guest.add(['--queues', '2', '--bridge', bridge, '--trunks', '10,20', '--vlan', '30']);
    const { ifname } = await nicIn(guest, nic.mac);
    for (const id of [10, 20]) {
      const sub = await guest.run(
        `ip link add link ${ifname} name ${ifname}.${id} type vlan id ${id} && ip link set ${ifname}.${id} up`,
      );
      expect(sub.rc, sub.output.join(' | ')).to.equal(0);
    }
    for (const dev of [ifname, `${ifname}.10`, `${ifname}.20`]) await guest.waitLinkLocal(dev);

    const cases: [string, VlanHost, number][] = [
      [`${ifname}.10`, a, 3],
      [`${ifname}.20`, a, 0],
      [`${ifname}.20`, b, 3],
      [`${ifname}.10`, b, 0],
      [ifname, native, 3],
      [ifname, a, 0],
    ];
    for (const [dev, host, expected] of cases) {
      const r = await pingFromGuest(guest, dev, host, expected ? 3 : 2);
      expect(r.received, `${dev} to VLAN ${host.vlan}: ${r.output}`).to.equal(expected);
      if (!expected) expect(r.arrived, `${dev} to VLAN ${host.vlan}: nothing arrives`).to.equal(0);
    }
    expect(await tcpFromGuest(guest, `${ifname}.20`, b)).to.equal(64 * 1024);
  });

  // As on the Linux bridge (ports.test.ts): the limit sits well below what a TCG guest moves.
  it('--rate 4 on an OVS access port: to the guest within 20% of 4 Mbit/s (htb QoS), from it at most that (a meter; TCP gets less); without, above 10; remove leaves no QoS, no meter', async () => {
    const bridge = await ovs.addBridge();
    const lan = await hostOn(bridge, 10);
    guest = await Guest.boot({ name: GR, stateDir: tempDir(), cpus: 2, machine: 'pc' });
    const limited = await guest.add(['--queues', '2', '--bridge', bridge, '--vlan', '10', '--rate', '4']);
    const free = await guest.add(['--queues', '2', '--bridge', bridge, '--vlan', '10']);
    const [a, b] = [await nicIn(guest, limited.mac), await nicIn(guest, free.mac)];
    await guest.waitLinkLocal(a.ifname);
    await guest.waitLinkLocal(b.ifname);
    expect(
      await ovs.vsctl(['get', 'qos', (await ovs.vsctl(['get', 'port', limited.tap, 'qos'])).trim(), 'type']),
    ).to.match(/linux-htb/);
    const rates = await ratesBothWays(
      lan,
      guest,
      [
        [a.ifname, 'limited'],
        [b.ifname, 'free'],
      ],
      1536 * 1024, // 3.1 s at 4 Mbit/s
    );
    // to the guest, OVS's htb queues what is over: within 20%, as on the Linux bridge. From the
    // guest, a meter drops it (no OVS or kernel way here queues there), and TCP backs off at each
    // drop: it got 2.6-4.1 of the 4 Mbit/s here (free: 47-95), never more than 20% over
    expect(rates['limited to guest'], 'to guest').to.be.within(3.2, 4.8);
    expect(rates['limited from guest'], 'from guest').to.be.within(1.6, 4.8);
    for (const way of ['from guest', 'to guest']) expect(rates[`free ${way}`], way).to.be.above(10);
    const meters = async () =>
      (await execa('ovs-ofctl', ['-O', 'OpenFlow13', 'dump-meters', bridge], { env: ovs.env })).stdout;
    expect(await meters()).to.match(/meter=\d+ kbps burst/);
    const removed = await execa('node', [path.join(ROOT, 'bin/mq-hotplug.cjs'), 'remove', GR, limited.id], {
      env: guest.env,
      reject: false,
    });
    expect(removed.exitCode, removed.stderr).to.equal(0);
    expect(await ovs.vsctl(['list-ports', bridge])).to.not.include(limited.tap);
    expect((await ovs.vsctl(['--columns=_uuid', 'list', 'qos'])).trim()).to.equal('');
    expect(await meters()).to.not.match(/meter=/);
    expect((await execa('ovs-ofctl', ['dump-flows', bridge], { env: ovs.env })).stdout).to.not.match(/meter:/);
  });
});
