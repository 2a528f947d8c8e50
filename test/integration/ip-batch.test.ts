import { expect } from 'chai';
import { execa } from 'execa';
import { IpBatch } from '../../src/host/ip-batch.js';
import { HostCommandError } from '../../src/host/ip.js';
import { linkExists, makeBridge, trackLink, uniqueName } from '../helpers/env.js';

describe('IpBatch: one long-lived ip for link changes (real ip, taps, bridges)', () => {
  let ip: IpBatch;
  let made: string[] = [];
  afterEach(async () => {
    ip.close();
    delete process.env.MQ_HOTPLUG_IP;
    for (const name of made) await execa('ip', ['link', 'del', 'dev', name], { reject: false });
    made = [];
  });

  async function tap(): Promise<string> {
    const name = trackLink(uniqueName('t'));
    made.push(name);
    await execa('ip', ['tuntap', 'add', 'dev', name, 'mode', 'tap']);
    return name;
  }

  it('attaches taps to a bridge and sets them up, many requests in flight, failures matched to their request', async () => {
    ip = new IpBatch();
    const bridge = await makeBridge();
    const taps = await Promise.all([0, 1, 2, 3, 4].map(() => tap()));
    const outcomes = await Promise.allSettled([
      ...taps.slice(0, 2).map((t) => ip.run(['link', 'set', 'dev', t, 'master', bridge, 'up'])),
      ip.run(['link', 'set', 'dev', 'mqtnosuch0', 'up']),
      ip.run(['link', 'set', 'dev', taps[0]!, 'master', 'mqtnosuchbr', 'up']),
      ...taps.slice(2).map((t) => ip.run(['link', 'set', 'dev', t, 'master', bridge, 'up'])),
    ]);
    expect(outcomes.map((o) => o.status)).to.deep.equal([
      'fulfilled',
      'fulfilled',
      'rejected',
      'rejected',
      'fulfilled',
      'fulfilled',
      'fulfilled',
    ]);
    const [noTap, noBridge] = outcomes.slice(2, 4) as PromiseRejectedResult[];
    expect(noTap!.reason).to.be.instanceOf(HostCommandError);
    expect(noTap!.reason.message).to.equal(`'ip link set dev mqtnosuch0 up' failed: Cannot find device "mqtnosuch0"`);
    // ip exits on this one (invarg), even in batch mode; the requests behind it still ran, on a new ip
    expect(noBridge!.reason.message).to.match(
      /'ip link set dev \S+ master mqtnosuchbr up' failed: Error: argument "mqtnosuchbr" is wrong: Device does not exist$/,
    );
    for (const t of taps) {
      const [link] = JSON.parse((await execa('ip', ['-j', 'link', 'show', 'dev', t])).stdout) as {
        master: string;
        flags: string[];
      }[];
      expect(link!.master).to.equal(bridge);
      expect(link!.flags).to.include('UP');
    }
    await ip.run(['link', 'set', 'dev', taps[1]!, 'nomaster']); // still usable after failures
  });

  it('refuses tokens that batch syntax could misread, before writing anything', async () => {
    ip = new IpBatch();
    for (const bad of ['a b', 'x"y', '#c', 'l\nlink del dev eth0', '']) {
      const err = await ip.run(['link', 'set', 'dev', bad, 'up']).catch((e: unknown) => e);
      expect(err, JSON.stringify(bad)).to.be.instanceOf(HostCommandError);
      expect((err as Error).message).to.include('unsafe token');
    }
  });

  it('a missing ip binary is a clear error; after ip dies, the next request starts a new one', async () => {
    process.env.MQ_HOTPLUG_IP = '/nonexistent/ip';
    ip = new IpBatch();
    const err = await ip.run(['link', 'show']).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/'\/nonexistent\/ip' not found in PATH/);
    delete process.env.MQ_HOTPLUG_IP;
    const t = await tap();
    await ip.run(['link', 'set', 'dev', t, 'up']);
    ip.close();
    await ip.run(['link', 'set', 'dev', t, 'down']); // restarted on demand
    expect(linkExists(t)).to.equal(true);
  });
});
