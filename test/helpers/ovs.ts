/**
 * A private Open vSwitch for one test run, as ../shared/FACTS.md measured it: systemd cannot start
 * OVS here, so ovsdb-server and ovs-vswitchd run from the run's own directory (their sockets, pid
 * files, logs and database there), found by mq-hotplug and ovs-vsctl through OVS_RUNDIR, and
 * stopped by their pids. The kernel has no OVS datapath: bridges use the userspace one
 * (datapath_type=netdev), with userspace TSO on (set before ovs-vswitchd starts; without it TCP
 * between a guest and a namespace fails on checksums while ping works).
 *
 * One trap of sharing a host: the userspace datapath makes a tap named "ovs-netdev", one name per
 * host, so a second OVS started while one runs cannot open its datapath ("Device or resource
 * busy"). A run's OVS therefore holds a host-wide lock (an abstract unix socket, released by the
 * kernel however the run ends): two runs on one host take turns at their OVS suites.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa, execaSync } from 'execa';
import { atCleanup, linkExists, sleep, tempDir, trackLink, uniqueName, until } from './env.js';

export interface Ovs {
  dir: string;
  /** OVS_RUNDIR for mq-hotplug and ovs-vsctl */
  env: { OVS_RUNDIR: string };
  vsctl(args: string[]): Promise<string>;
  /** A new userspace bridge of this run's, up. */
  addBridge(): Promise<string>;
  /** Bridges gone first (or ovs-vswitchd leaves their taps), then both daemons by pid. */
  stop(): void;
}

const SCHEMA = '/usr/share/openvswitch/vswitch.ovsschema';

const LOCK = '\0mq-hotplug-tests/userspace-ovs';

/** Holds the host's one userspace OVS for this run, waiting for another run's to end. */
async function lockUserspaceOvs(timeoutMs = 15 * 60_000): Promise<net.Server> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const server = net.createServer((s) => s.end());
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => (e.code === 'EADDRINUSE' ? resolve(false) : reject(e)));
      server.listen({ path: LOCK }, () => resolve(true));
    });
    if (bound) return server;
    if (Date.now() > deadline) throw new Error('another test run held the userspace OVS lock for 15 minutes');
    await sleep(200);
  }
}

export async function startOvs(): Promise<Ovs> {
  const lock = await lockUserspaceOvs();
  lock.unref();
  if (fs.existsSync('/sys/class/net/ovs-netdev'))
    throw new Error('a userspace OVS outside the tests holds ovs-netdev on this host; stop it to run the OVS tests');
  const dir = tempDir('ovs');
  const env = { OVS_RUNDIR: dir, OVS_LOGDIR: dir, OVS_DBDIR: dir };
  const db = `unix:${path.join(dir, 'db.sock')}`;
  const run = (cmd: string, args: string[]) => execa(cmd, args, { env, stdin: 'ignore' });
  let stopped = false;
  const pidOf = (daemon: string) => {
    try {
      return Number(fs.readFileSync(path.join(dir, `${daemon}.pid`), 'utf8').trim());
    } catch {
      return undefined;
    }
  };
  const stop = () => {
    if (stopped) return;
    stopped = true;
    try {
      const bridges = execaSync('ovs-vsctl', [`--db=${db}`, '--timeout=5', 'list-br'], { env }).stdout.split('\n');
      for (const b of bridges.filter(Boolean))
        execaSync('ovs-vsctl', [`--db=${db}`, '--timeout=5', 'del-br', b], { env });
    } catch {}
    for (const daemon of ['ovs-vswitchd', 'ovsdb-server']) {
      const pid = pidOf(daemon);
      if (!pid) continue;
      try {
        process.kill(pid, 'SIGTERM');
      } catch {}
      // wait for it to go (its pid file names it): a second run's OVS never shares these files
      for (let i = 0; i < 100; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          break;
        }
        execaSync('sleep', ['0.02']);
      }
    }
    lock.close();
  };
  const forget = atCleanup(stop);
  await run('ovsdb-tool', ['create', path.join(dir, 'conf.db'), SCHEMA]);
  await run('ovsdb-server', [
    path.join(dir, 'conf.db'),
    `--remote=p${db}`,
    `--pidfile=${path.join(dir, 'ovsdb-server.pid')}`,
    `--log-file=${path.join(dir, 'ovsdb-server.log')}`,
    `--unixctl=${path.join(dir, 'ovsdb-server.ctl')}`,
    '--detach',
  ]);
  await run('ovs-vsctl', [
    `--db=${db}`,
    '--no-wait',
    'init',
    '--',
    'set',
    'Open_vSwitch',
    '.',
    'other_config:userspace-tso-enable=true',
  ]);
  await run('ovs-vswitchd', [
    db,
    `--pidfile=${path.join(dir, 'ovs-vswitchd.pid')}`,
    `--log-file=${path.join(dir, 'ovs-vswitchd.log')}`,
    `--unixctl=${path.join(dir, 'ovs-vswitchd.ctl')}`,
    '--detach',
  ]);
  const vsctl = async (args: string[]) => (await run('ovs-vsctl', [`--db=${db}`, '--timeout=10', ...args])).stdout;
  return {
    dir,
    env: { OVS_RUNDIR: dir },
    vsctl,
    async addBridge() {
      const name = trackLink(uniqueName('o'));
      await vsctl(['add-br', name, '--', 'set', 'bridge', name, 'datapath_type=netdev']);
      // ovs-vswitchd makes the bridge's own interface as it sets the datapath up, after add-br returns
      await until(() => linkExists(name), `OVS bridge ${name}'s interface`, 10_000);
      await execa('ip', ['link', 'set', 'dev', name, 'up']);
      return name;
    },
    stop() {
      stop();
      forget();
    },
  };
}
