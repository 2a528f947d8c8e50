/**
 * Automation on the event stream, with a real guest: `watch` in its own process sees what `add` and
 * `remove` in other processes did; hooks get the event; `agent` cleans up after a guest-side eject,
 * finishes an unplug that was pending, and re-attaches a tap that lost its bridge.
 */
import fs from 'node:fs';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { Controller } from '../../src/hotplug/controller.js';
import { StateStore } from '../../src/qemu/state.js';
import { type Running, cli, linkExists, makeBridge, spawnCli, tempDir, until, vmName } from '../helpers/env.js';
import { Guest, guestImage } from '../helpers/guest.js';

/** VM names of this run (their taps are host-wide): see vmName. */
const GA = vmName('ga');
const GW = vmName('gw');

/** Starts `mq-hotplug ARGS` as a long-running process and waits until it says it is watching. */
async function spawnWatcher(args: string[], env: Record<string, string>): Promise<Running> {
  const running = spawnCli(args, env);
  await until(() => running.err().includes('watching'), `${args[0]} connected`, 15_000);
  return running;
}

describe('automation: watch, hooks and reactions (real guest)', function () {
  this.timeout(180_000);
  let guest: Guest | undefined;
  let bridge: string;
  before(async () => {
    await guestImage();
  });
  beforeEach(async () => {
    bridge = await makeBridge();
  });
  afterEach(async () => {
    await guest?.stop();
    guest = undefined;
  });

  it('watch --json sees DEVICE_ADDED from an add in another process and DEVICE_DELETED from a remove; hooks get the event; it exits when the VM stops', async () => {
    guest = await Guest.boot({ name: GW, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge });
    const hookDir = tempDir('hook');
    const hook = path.join(hookDir, 'hook.sh');
    fs.writeFileSync(
      hook,
      '#!/bin/sh\ncat > "$1/$MQH_EVENT.$MQH_DEVICE.json"\nenv | grep ^MQH_ | sort > "$1/$MQH_EVENT.$MQH_DEVICE.env"\n',
      { mode: 0o755 },
    );
    const watcher = await spawnWatcher(
      [
        'watch',
        GW,
        '--json',
        '--on',
        'DEVICE_ADDED',
        '--exec',
        `${hook} ${hookDir}`,
        '--on',
        'DEVICE_DELETED',
        '--exec',
        '/bin/false',
      ],
      guest.env,
    );
    const nic = await guest.add(['--queues', '4']);
    await guest.waitFor(() => guest!.nics.get(nic.mac), 'the NIC');
    expect((await cli(['remove', GW, nic.id], guest.env)).exitCode).to.equal(0);
    const events = () =>
      watcher
        .out()
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown>; source: string; vm: string });
    await until(() => events().some((e) => e.event === 'NIC_REMOVED'), 'NIC_REMOVED in watch');
    await guest.stop();
    guest = undefined;
    const result = await watcher.proc;
    expect(result.exitCode).to.equal(0);
    expect(watcher.err()).to.include(`${GW}: the VM shut down\n`);
    const seen = events();
    const added = seen.find((e) => e.event === 'DEVICE_ADDED')!;
    expect(added).to.deep.include({ source: 'controller', vm: GW });
    expect(added.data).to.deep.include({ device: nic.id, tap: nic.tap, mac: nic.mac, queues: 4, bridge });
    expect(seen.find((e) => e.event === 'NIC_BRIDGED')!.data).to.deep.include({ device: nic.id, bridge });
    const deleted = seen.filter((e) => e.event === 'DEVICE_DELETED');
    expect(deleted.map((e) => e.source)).to.deep.equal(['qemu', 'qemu']); // virtio-backend first, then the device
    expect(deleted[1]!.data).to.deep.include({ device: nic.id });
    expect(seen.map((e) => e.event)).to.include.members(['NIC_REMOVED', 'SHUTDOWN']);
    // the hook got the event as JSON on stdin and in MQH_* variables
    const stdin = JSON.parse(fs.readFileSync(path.join(hookDir, `DEVICE_ADDED.${nic.id}.json`), 'utf8')) as {
      event: string;
      data: { tap: string };
    };
    expect(stdin).to.deep.include({ event: 'DEVICE_ADDED', vm: GW, source: 'controller' });
    expect(stdin.data.tap).to.equal(nic.tap);
    const env = fs.readFileSync(path.join(hookDir, `DEVICE_ADDED.${nic.id}.env`), 'utf8');
    expect(env)
      .to.include(`MQH_EVENT=DEVICE_ADDED\n`)
      .and.include(`MQH_DEVICE=${nic.id}\n`)
      .and.include(`MQH_TAP=${nic.tap}\n`)
      .and.include(`MQH_VM=${GW}\n`);
    // the failing hook was reported, and the watcher carried on to the end
    expect(watcher.err()).to.match(/hook '\/bin\/false' for DEVICE_DELETED failed/);
  });

  it('agent: cleans up after a guest-side eject, finishes a pending unplug, re-attaches a tap that lost its bridge', async () => {
    guest = await Guest.boot({ name: GA, stateDir: tempDir(), cpus: 2, machine: 'pc', bridge });
    const store = new StateStore(guest.options.stateDir);
    const agent = await spawnWatcher(['agent', GA, '--check-interval', '0.2'], guest.env);
    const log = () =>
      fs
        .readFileSync(store.eventLogPath(GA), 'utf8')
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { event: string; data: Record<string, unknown> });
    // a wait that fails says what the agent and the VM's event log said (to diagnose a rare failure)
    const waitFor = <T>(check: () => T | undefined | false, what: string) =>
      until(check, what).catch((e: Error) => {
        throw new Error(
          `${e.message}\nagent stderr:\n${agent.err()}\nevent log:\n${log()
            .map((x) => JSON.stringify(x))
            .join('\n')}`,
        );
      });

    // 1. the guest ejects a NIC itself
    const ejected = await guest.add(['--queues', '2']);
    await guest.waitFor(() => guest!.nics.get(ejected.mac), 'NIC to eject');
    expect((await guest.run(`eject ${ejected.mac}`)).rc).to.equal(0);
    // the agent forgets the NIC, then logs NIC_REMOVED: wait for the log line, after which both hold
    const removed = (id: string) => log().filter((e) => e.event === 'NIC_REMOVED' && e.data.device === id);
    const ejectedRemoved = await waitFor(() => removed(ejected.id)[0], 'NIC_REMOVED of the ejected NIC');
    expect(ejectedRemoved.data).to.deep.include({ reason: 'guest-initiated unplug', tapGone: true });
    expect(store.read(GA)!.nics.map((n) => n.id)).not.to.include(ejected.id);
    expect(linkExists(ejected.tap)).to.equal(false);

    // 2. an unplug that could not finish (VM paused) completes when the guest gets to it
    const pending = await guest.add(['--queues', '2']);
    await guest.waitFor(() => guest!.nics.get(pending.mac), 'NIC to unplug');
    const vm = await Controller.open({ name: GA, store, monitor: 'events' }).catch(() => undefined);
    expect(vm, 'the events monitor is held by the agent').to.equal(undefined);
    // ids are reused once a NIC is forgotten: this one's NIC_REMOVED is the one after those before
    const before = removed(pending.id).length;
    const pause = await cli(['qmp', GA, 'stop'], guest.env);
    expect(pause.exitCode, pause.stderr).to.equal(0);
    const removal = await cli(['remove', GA, pending.id, '--timeout', '1'], guest.env);
    expect(removal.exitCode).to.equal(3);
    expect(store.read(GA)!.nics.find((n) => n.id === pending.id)!.state).to.equal('unplug-pending');
    expect((await cli(['qmp', GA, 'cont'], guest.env)).exitCode).to.equal(0);
    await waitFor(() => removed(pending.id).length > before, 'pending unplug finished');
    expect(removed(pending.id).pop()!.data).to.deep.include({ reason: 'pending unplug completed', tap: pending.tap });
    expect(store.read(GA)!.nics.map((n) => n.id)).not.to.include(pending.id);
    expect(linkExists(pending.tap)).to.equal(false);

    // 3. a tap knocked off its bridge and down is put back
    const kept = await guest.add(['--queues', '2']);
    await execa('ip', ['link', 'set', 'dev', kept.tap, 'nomaster', 'down']);
    await waitFor(
      () => fs.existsSync(`/sys/class/net/${kept.tap}/master`) && log().some((e) => e.event === 'NIC_REATTACHED'),
      'tap re-attached',
    );
    expect(fs.readlinkSync(`/sys/class/net/${kept.tap}/master`)).to.match(new RegExp(`/${bridge}$`));
    expect(log().find((e) => e.event === 'NIC_REATTACHED')!.data).to.deep.include({
      device: kept.id,
      tap: kept.tap,
      bridge,
      was: null,
    });
    const [row] = JSON.parse((await cli(['nics', GA, '--json'], guest.env)).stdout) as {
      drift: string[];
      linkUp: boolean;
    }[];
    expect(row).to.deep.include({ linkUp: true, drift: [] });

    agent.proc.kill('SIGTERM');
    expect((await agent.proc).exitCode).to.equal(0);
  });
});
