/**
 * The host agent (`mq-hotplug agent`, no VM): one process following every VM of a state
 * directory, the CLI's commands through its control socket, its metrics, and what happens when
 * it dies (real QEMU, taps and bridges; no guest needed).
 */
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { expect } from 'chai';
import { execa } from 'execa';
import { StateStore } from '../../src/qemu/state.js';
import {
  CLI,
  type Running,
  cli,
  configDirOf,
  makeBridge,
  spawnCli,
  tapsOf,
  tempDir,
  until,
  vmName,
} from '../helpers/env.js';

const VA = vmName('hga');
const VB = vmName('hgb');
const VC = vmName('hgc');

/** GET /metrics over the agent's unix socket. */
function scrape(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    http
      .get({ socketPath, path: '/metrics' }, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => resolve(body));
      })
      .on('error', reject);
  });
}

const masterOf = (tap: string) => {
  try {
    return path.basename(fs.readlinkSync(`/sys/class/net/${tap}/master`));
  } catch {
    return undefined;
  }
};

describe('the host agent: every VM, the CLI through it, metrics (real QEMU)', function () {
  this.timeout(120_000);
  let env: Record<string, string>;
  let state: string;
  let bridge: string;
  let agent: Running | undefined;
  const startAgent = (...args: string[]) => (agent = spawnCli(['agent', ...args], env));
  const socket = () => path.join(state, 'agent.sock');

  beforeEach(async () => {
    state = tempDir();
    env = { MQ_HOTPLUG_STATE_DIR: state, MQ_HOTPLUG_CONFIG_DIR: configDirOf(state) };
    bridge = await makeBridge();
  });
  afterEach(async () => {
    if (agent && agent.proc.exitCode === null) {
      agent.proc.kill('SIGTERM');
      await agent.proc;
    }
    agent = undefined;
    for (const vm of [VA, VB, VC]) await cli(['stop', vm], { ...env, MQ_HOTPLUG_NO_AGENT: '1' });
  });

  it('follows VMs started before and after it; a drifted tap of either is put right at once; a dead QEMU is cleaned up; a busy monitor stalls no one', async () => {
    const start = (vm: string) => cli(['start', vm, '--memory', '128M', '--bridge', bridge], env);
    expect((await start(VA)).exitCode).to.equal(0);
    // VC's events monitor is held by another client: the agent cannot have it, and goes on without it
    expect((await start(VC)).exitCode).to.equal(0);
    const holder = net.createConnection(new StateStore(state).read(VC)!.eventsQmp);
    try {
      // a check interval of an hour: what puts a tap right is the link monitor, not the periodic check
      const a = startAgent('--check-interval', '3600');
      await until(() => a.err().includes(`agent: watching ${VA} and reconciling`), 'VA followed');
      expect((await start(VB)).exitCode).to.equal(0);
      await until(() => a.err().includes(`agent: watching ${VB} and reconciling`), 'VB followed');
      for (const vm of [VA, VB]) {
        const added = await cli(['add', vm, '--queues', '2'], env);
        expect(added.exitCode, added.stderr).to.equal(0);
      }
      const [tapA, tapB] = [tapsOf(VA)[0]!, tapsOf(VB)[0]!];
      await execa('ip', ['link', 'set', 'dev', tapB, 'nomaster']);
      await until(() => masterOf(tapB) === bridge, `${tapB} back on ${bridge}`, 10_000);
      await until(() => a.err().includes(`agent: ${VB}: put ${tapB} right`), 'the repair said');
      await execa('ip', ['link', 'set', 'dev', tapA, 'down']);
      const up = () => (Number(fs.readFileSync(`/sys/class/net/${tapA}/flags`, 'utf8')) & 1) === 1; // IFF_UP
      await until(up, `${tapA} up again`, 10_000);
      expect(a.err()).not.to.include(`agent: watching ${VC}`);
      // a dead QEMU: its taps and state go; started again, it is followed again
      process.kill(new StateStore(state).read(VA)!.pid, 'SIGKILL');
      await until(() => !fs.existsSync(path.join(state, VA)), `${VA}'s state cleaned up`);
      expect(tapsOf(VA)).to.deep.equal([]);
      expect((await start(VA)).exitCode).to.equal(0);
      await until(() => a.err().split(`agent: watching ${VA} `).length === 3, 'VA followed again');
    } finally {
      holder.destroy();
    }
    // let go of, VC's monitor is taken at the agent's next try
    await until(() => agent!.err().includes(`agent: watching ${VC}`), 'VC followed once free', 20_000);
  });

  it('runs the CLI: the same output and exit codes as without it, stdin and relative paths, counted in its metrics', async () => {
    expect((await cli(['start', VA, '--memory', '128M', '--bridge', bridge], env)).exitCode).to.equal(0);
    const direct = { ...env, MQ_HOTPLUG_NO_AGENT: '1' };
    const calls = [
      ['add', VA, '--queues', '2', '--id', 'n1', '--mac', '52:54:00:12:34:56', '--dry-run', '--json'],
      ['add', VA, '--queues', '0'],
      ['add', VA, '--queues', '2', '--bridge', 'nosuchbr'],
      ['remove', VA, 'nosuchnic'],
      ['nics', 'nosuchvm'],
      ['vms', '--bogus'],
    ];
    const before = await Promise.all(calls.map((c) => cli(c, direct)));
    const metrics = path.join(tempDir('metrics'), 'metrics.sock');
    const a = startAgent('--metrics', metrics);
    await until(() => a.err().includes(`agent: watching ${VA}`), 'VA followed');
    for (const [i, call] of calls.entries()) {
      const through = await cli(call, env);
      const { exitCode, stdout, stderr } = before[i]!;
      expect(through, call.join(' ')).to.deep.equal({ exitCode, stdout, stderr });
    }
    expect(before.map((r) => r.exitCode)).to.deep.equal([0, 2, 2, 2, 2, 2]);
    // a spec on stdin, and one by a path relative to the CLI's directory (not the agent's)
    const spec = JSON.stringify({ nics: [{ id: 'net0', queues: 2 }] });
    const piped = await execa('node', [CLI, 'apply', VA, '-f', '-', '--json'], { env, input: spec, reject: false });
    expect(piped.exitCode, piped.stderr).to.equal(0);
    expect(JSON.parse(piped.stdout)).to.deep.include({ changed: true, added: ['net0'] });
    const dir = tempDir('cwd');
    fs.writeFileSync(path.join(dir, 'spec.json'), spec);
    const relative = await execa('node', [CLI, 'apply', VA, '-f', 'spec.json'], { env, cwd: dir, reject: false });
    expect(relative.stdout, relative.stderr).to.equal(`no change: ${VA} has exactly these NICs`);
    const text = await scrape(metrics);
    expect(fs.statSync(metrics).mode & 0o777, 'metrics socket').to.equal(0o600);
    expect(fs.statSync(socket()).mode & 0o777, 'control socket').to.equal(0o600);
    // it ran them: seven commands here, counted by command and exit code
    expect(text).to.match(/^mq_hotplug_agent_commands_total\{command="add",exit_code="2"\} 2$/m);
    expect(text).to.match(/^mq_hotplug_agent_commands_total\{command="apply",exit_code="0"\} 2$/m);
    expect(text).to.match(new RegExp(`^mq_hotplug_nic_adds_total\\{vm="${VA}"\\} 1$`, 'm'));
    expect(text).to.match(new RegExp(`^mq_hotplug_nic_add_duration_seconds_count\\{vm="${VA}"\\} 1$`, 'm'));
    const tap = tapsOf(VA)[0]!;
    const labels = `vm="${VA}",nic="net0",tap="${tap}",bridge="${bridge}",vlan=""`;
    expect(text).to.match(new RegExp(`^mq_hotplug_nic_queues\\{${labels}\\} 2$`, 'm'));
    expect(text).to.match(new RegExp(`^mq_hotplug_nic_queues_active\\{${labels}\\} 1$`, 'm')); // no guest: QEMU enables one
    const sent = Number(fs.readFileSync(`/sys/class/net/${tap}/statistics/tx_bytes`, 'utf8'));
    const shown = Number(
      new RegExp(`^mq_hotplug_tap_transmit_bytes_total\\{${labels}\\} (\\d+)$`, 'm').exec(text)?.[1],
    );
    expect(shown).to.be.at.most(sent);
    expect(text).to.match(/^process_resident_memory_bytes \d+/m);
    // the agent runs a client's commands on its own, open events monitor: a control monitor that
    // another client holds (it got QEMU's greeting: it is the one QEMU serves) stops none of them
    const holder = net.createConnection(new StateStore(state).read(VA)!.qmp);
    try {
      let greeted = '';
      holder.on('data', (d: Buffer) => (greeted += d.toString()));
      await until(() => greeted.includes('"QMP"'), 'the control monitor held');
      const added = await cli(['add', VA, '--queues', '2', '--id', 'held'], env);
      expect(added.exitCode, added.stderr).to.equal(0);
    } finally {
      holder.destroy();
    }
  });

  it('killed mid-command (SIGKILL): the CLI says so in one line; a restarted agent picks up every VM', async () => {
    for (const vm of [VA, VB])
      expect((await cli(['start', vm, '--memory', '128M', '--bridge', bridge], env)).exitCode).to.equal(0);
    let a = startAgent();
    await until(() => a.err().includes(`agent: watching ${VA}`) && a.err().includes(`agent: watching ${VB}`), 'both');
    // no guest: the add waits for a driver that never comes, in the agent
    const adding = execa('node', [CLI, 'add', VA, '--queues', '2', '--wait-guest', '20'], { env, reject: false });
    await until(() => tapsOf(VA).length === 1, 'the add under way');
    a.proc.kill('SIGKILL');
    const r = await adding;
    expect(r.exitCode).to.equal(1);
    expect(r.stderr.trim().split('\n')).to.have.length(1);
    expect(r.stderr).to.match(/^mq-hotplug: the agent \(pid \d+\) went away before the command finished; /);
    // with the agent dead, its socket left: the CLI runs on its own
    expect(fs.existsSync(socket())).to.equal(true);
    const alone = await cli(['nics', VA, '--json'], env);
    expect(alone.exitCode, alone.stderr).to.equal(0);
    a = startAgent();
    await until(
      () => a.err().includes(`agent: watching ${VA}`) && a.err().includes(`agent: watching ${VB}`),
      'both again',
    );
    // the add was done, or half-made and then finished or undone by the new agent: nothing in between
    const seen = JSON.parse((await cli(['nics', VA, '--json'], env)).stdout) as { state: string; drift: string[] }[];
    expect(seen.length).to.be.at.most(1);
    expect(
      seen.every((n) => n.state === 'active' && n.drift.length === 0),
      JSON.stringify(seen),
    ).to.equal(true);
    expect(tapsOf(VA)).to.have.length(seen.length);
    const added = await cli(['add', VB, '--queues', '2'], env);
    expect(added.exitCode, added.stderr).to.equal(0);
  });

  it('an agent of another version is refused in one line; --start-defined starts the defined VMs', async () => {
    // another version's agent (a fake on the socket: a real one of another version is not at hand)
    fs.mkdirSync(state, { recursive: true });
    const fake = net.createServer((c) =>
      c.end(`${JSON.stringify({ hello: 'mq-hotplug-agent', version: '0.0.9', protocol: 1, pid: 1, settings: {} })}\n`),
    );
    await new Promise<void>((resolve) => fake.listen(socket(), resolve));
    try {
      const refused = await cli(['vms'], env);
      expect(refused.exitCode).to.equal(2);
      expect(refused.stderr).to.match(
        /^mq-hotplug: the agent \(pid 1\) is version 0\.0\.9 and this CLI 0\.1\.0: restart the agent .*\n$/,
      );
    } finally {
      await new Promise<void>((resolve) => fake.close(() => resolve()));
    }
    // a defined VM with a saved NIC, stopped: the agent's --start-defined brings it back
    expect((await cli(['start', VA, '--memory', '128M', '--bridge', bridge], env)).exitCode).to.equal(0);
    expect((await cli(['add', VA, '--queues', '2', '--id', 'keep'], env)).exitCode).to.equal(0);
    expect((await cli(['stop', VA], env)).exitCode).to.equal(0);
    const a = startAgent('--start-defined');
    await until(() => a.err().includes(`agent: watching ${VA}`), 'started and followed');
    const listed = JSON.parse((await cli(['nics', VA, '--json'], env)).stdout) as { id: string }[];
    expect(listed.map((n) => n.id)).to.deep.equal(['keep']);
  });
});
