/**
 * The guest's side of the port: jumbo frames across the bridge, and throughput under --rate. A real
 * guest (TCG) on a bridge whose uplink is a veth into a network namespace (the LAN host); traffic
 * goes only between the two, over IPv6 link-local addresses, bounded in bytes and time.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import { linkLocal, linkState, makeLan, tempDir, vmName } from '../helpers/env.js';
import { Guest, type GuestNic, guestImage } from '../helpers/guest.js';
import { ratesBothWays } from '../helpers/traffic.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const GJ = vmName('gj');
const GR = vmName('gr');

describe('ports seen from a real guest (TCG): jumbo frames, rate limits', function () {
  this.timeout(240_000);
  let guest: Guest | undefined;

  before(async () => {
    await guestImage();
  });
  afterEach(async () => {
    await guest?.stop();
    guest = undefined;
  });

  async function nicIn(g: Guest, mac: string): Promise<GuestNic> {
    return g.waitFor(() => g.nics.get(mac), `the guest's NIC ${mac}`);
  }

  it('--mtu 9000: the guest comes up at 9000 and exchanges 8000-byte pings with the LAN; a 1500 tap breaks that', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:01:01', mtu: 9000 });
    guest = await Guest.boot({ name: GJ, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge: lan.bridge });
    const nic = await guest.add(['--queues', '2', '--mtu', '9000']);
    const { ifname } = await nicIn(guest, nic.mac);
    await guest.waitLinkLocal(ifname);
    expect((await guest.run(`cat /sys/class/net/${ifname}/mtu`)).output).to.deep.equal(['9000']);
    expect(linkState(lan.bridge)).to.deep.equal({ address: '02:00:00:00:01:01', mtu: 9000 });
    const peer = await linkLocal(lan.peer, lan.ns);
    const ping = `ping -c 3 -s 8000 -W 5 ${peer}%${ifname}`;
    const ok = await guest.run(ping, 30_000);
    expect(ok.output.join('\n'), ping).to.match(/3 packets transmitted, 3 packets received/);
    expect(ok.output.join('\n')).to.match(/8008 bytes from/);

    // the bug this prevents: a tap left at 1500 cannot carry the LAN's jumbo frames back to the guest
    await execa('ip', ['link', 'set', 'dev', nic.tap, 'mtu', '1500']);
    const broken = await guest.run(`ping -c 2 -s 8000 -W 2 ${peer}%${ifname}`, 30_000);
    expect(broken.output.join('\n')).to.match(/2 packets transmitted, 0 packets received/);
  });

  // The limit sits well below what a TCG guest moves on a loaded CI machine (28 Mbit/s seen at worst),
  // so "without --rate, well above it" is about the limit and not about this machine's speed.
  it('--rate 4: throughput both ways within 20% of 4 Mbit/s; without --rate, at least 2.5 times that', async () => {
    const lan = await makeLan({ mac: '02:00:00:00:01:02' });
    guest = await Guest.boot({ name: GR, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge: lan.bridge });
    const limited = await guest.add(['--queues', '2', '--rate', '4']);
    const free = await guest.add(['--queues', '2']);
    const [a, b] = [await nicIn(guest, limited.mac), await nicIn(guest, free.mac)];
    await guest.waitLinkLocal(a.ifname);
    await guest.waitLinkLocal(b.ifname);
    // link-local with %ifname: each transfer goes through the NIC named
    const bytes = 1536 * 1024; // 3.1 s at 4 Mbit/s
    const rates = await ratesBothWays(
      lan,
      guest,
      [
        [a.ifname, 'limited'],
        [b.ifname, 'free'],
      ],
      bytes,
    );
    for (const way of ['from guest', 'to guest']) {
      expect(rates[`limited ${way}`], way).to.be.within(3.2, 4.8);
      expect(rates[`free ${way}`], way).to.be.above(10);
    }
  });
});
