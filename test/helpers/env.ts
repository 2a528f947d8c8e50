/**
 * What the real-system tests share: names unique to this run (taps and bridges within 15
 * characters), and a cleanup registry that removes every VM, link and directory a test made,
 * also when the test fails (run from the root afterAll hook in hooks.ts, and on SIGINT/SIGTERM).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ResultPromise, execa, execaSync } from 'execa';
import { fileURLToPath } from 'node:url';
import type { Controller } from '../../src/hotplug/controller.js';
import type { AddPlan, AddRequest } from '../../src/hotplug/add/plan.js';
import { executeAdd } from '../../src/hotplug/add/transaction.js';
import { startVm } from '../../src/qemu/launcher.js';
import type { StateStore, VmRecord } from '../../src/qemu/state.js';
import { PROCESS_ENV, agentSocket } from '../../src/agent/protocol.js';

/** mqt + up to 5 digits of our pid: leaves 7 characters for a suffix. */
export const PREFIX = `mqt${process.pid % 100000}`;
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = path.join(ROOT, 'bin', 'mq-hotplug.cjs');

const links = new Set<string>();
const namespaces = new Set<string>();
const dirs = new Set<string>();
const pids = new Set<number>();
let counter = 0;
/** every VM name this run has used: the users mq-hotplug made for them are this run's to delete */
const vmNames = new Set<string>();

/** This run's tag for VM names: the pid in base 36 (at most 5 characters), unique among runs on the host. */
export const RUN = process.pid.toString(36);

/**
 * A VM name that is this run's own: its taps (`<vm>-<id>`, host-wide) then never clash with another
 * run's on the same host. `base` is at most 5 characters, so that "<base><run>-nic9" fits in 15.
 */
export function vmName(base: string): string {
  if (base.length > 5) throw new Error(`test VM base name '${base}' is longer than 5 characters`);
  return trackVm(`${base}${RUN}`);
}

/** Registers a VM name of this run's: cleanupAll deletes the user mq-hotplug made for it. */
export function trackVm(name: string): string {
  vmNames.add(name);
  return name;
}

/** A fresh link name like mqt12345b3 (kind: b bridge, t tap...). */
export function uniqueName(kind: string): string {
  const name = `${PREFIX}${kind}${counter++}`;
  if (name.length > 15) throw new Error(`test link name ${name} is longer than 15 characters`);
  return name;
}

export async function makeBridge(): Promise<string> {
  const name = uniqueName('b');
  links.add(name);
  await execa('ip', ['link', 'add', 'name', name, 'type', 'bridge']);
  await execa('ip', ['link', 'set', 'dev', name, 'up']);
  return name;
}

/** Registers a link the test (or the code under test) will make, for cleanup. */
export function trackLink(name: string): string {
  links.add(name);
  return name;
}

export function trackPid(pid: number): void {
  pids.add(pid);
}

const cleanups = new Set<() => void>();
/** A cleanup of the test's own (an OVS it started): cleanupAll runs it first, before links go. */
export function atCleanup(fn: () => void): () => void {
  cleanups.add(fn);
  return () => cleanups.delete(fn);
}

export function tempDir(label = 'state'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-${label}-`));
  dirs.add(dir);
  return dir;
}

export function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

/** Every network namespace whose name starts with this run's prefix. */
function ourNamespaces(): string[] {
  try {
    return fs.readdirSync('/run/netns').filter((n) => n.startsWith(PREFIX));
  } catch {
    return [];
  }
}

export interface Lan {
  bridge: string;
  /** the bridge's port towards the LAN (a veth), with the MAC and MTU the test gave it */
  uplink: string;
  /** the LAN's host: a network namespace holding the veth's peer */
  ns: string;
  peer: string;
}

/**
 * A bridge whose uplink is a veth into a network namespace (the "LAN" and its one host), all made
 * here and deleted by cleanupAll. The uplink gets `mac` and `mtu` before it joins, so the bridge
 * (whose own MTU and MAC are never set by hand) takes them from it, as a host's bridge does.
 */
export async function makeLan({ mac, mtu = 1500 }: { mac: string; mtu?: number }): Promise<Lan> {
  const bridge = await makeBridge();
  const host = await makeLanHost({ mtu });
  await execa('ip', ['link', 'set', 'dev', host.uplink, 'address', mac, 'mtu', String(mtu), 'master', bridge, 'up']);
  return { bridge, ...host };
}

/**
 * A LAN host: a network namespace of this run's holding one end of a veth (`peer`, up); the other
 * end (`uplink`, down) is the caller's to plug into a bridge. Deleted by cleanupAll.
 */
export async function makeLanHost({ mtu = 1500 } = {}): Promise<Omit<Lan, 'bridge'>> {
  const uplink = trackLink(uniqueName('u'));
  const peer = uniqueName('p');
  const ns = uniqueName('n');
  namespaces.add(ns);
  await execa('ip', ['netns', 'add', ns]);
  await execa('ip', ['link', 'add', 'name', uplink, 'type', 'veth', 'peer', 'name', peer, 'netns', ns]);
  await execa('ip', ['-n', ns, 'link', 'set', 'dev', peer, 'mtu', String(mtu), 'up']);
  await execa('ip', ['-n', ns, 'link', 'set', 'dev', 'lo', 'up']);
  return { uplink, ns, peer };
}

/** The IPv6 link-local address of a link (in a namespace), once the kernel has given it one. */
export async function linkLocal(dev: string, ns?: string): Promise<string> {
  return until(
    () => {
      const { stdout } = execaSync('ip', [...(ns ? ['-n', ns] : []), '-j', 'addr', 'show', 'dev', dev]);
      const info = (
        JSON.parse(stdout) as { addr_info: { family: string; local: string; scope: string; tentative?: boolean }[] }[]
      )[0];
      return info?.addr_info.find((a) => a.family === 'inet6' && a.scope === 'link' && !a.tentative)?.local;
    },
    `link-local address on ${dev}`,
    10_000,
  );
}

/** A link's MAC and MTU from sysfs. */
export function linkState(name: string): { address: string; mtu: number } {
  const read = (f: string) => fs.readFileSync(`/sys/class/net/${name}/${f}`, 'utf8').trim();
  return { address: read('address'), mtu: Number(read('mtu')) };
}

/**
 * What a host reboot clears for the VMs under `dir` (a state directory or one VM's): the links
 * their NICs left (the ifbs of rate limits; QEMU took its taps), and the runtime state itself.
 */
export function wipeRuntimeState(dir: string): void {
  const vmDirs = fs.existsSync(path.join(dir, 'vm.json')) ? [dir] : safeList(dir).map((d) => path.join(dir, d));
  for (const vmDir of vmDirs) {
    try {
      const record = JSON.parse(fs.readFileSync(path.join(vmDir, 'vm.json'), 'utf8')) as {
        nics: { ifb?: string; tap?: string }[];
      };
      for (const nic of record.nics)
        for (const link of [nic.ifb, nic.tap])
          if (link && linkExists(link)) execaSync('ip', ['link', 'del', 'dev', link]);
    } catch {}
  }
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Every link on the host of this run's: named with its prefix, or a tap of one of its VMs (`<vm>-<id>`). */
export function ourLinks(): string[] {
  const vms = [...vmNames].map((vm) => `${vm}-`);
  return fs.readdirSync('/sys/class/net').filter((n) => n.startsWith(PREFIX) || vms.some((vm) => n.startsWith(vm)));
}

/** The taps a VM of this run's has on the host (`<vm>-<id>`). */
export function tapsOf(vm: string): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => n.startsWith(`${vm}-`));
}

/**
 * The queues attached to a multi_queue tap now, enabled or not (the kernel's numqueues and
 * numdisabled: QEMU keeps all but the first disabled until a guest driver enables them).
 */
export function tapQueues(tap: string): number {
  const { stdout } = execaSync('ip', ['-d', 'link', 'show', 'dev', tap]);
  const [, enabled, disabled] = /numqueues (\d+) numdisabled (\d+)/.exec(stdout) ?? [];
  return Number(enabled ?? NaN) + Number(disabled ?? NaN);
}

/**
 * Every thread of a killed process has ended, so its descriptors are closed. After SIGKILL the
 * leader turns zombie at once (pidAlive says dead) while QEMU's other threads still exit, holding
 * the fd table, and so a tap's queues, until the last of them is gone.
 */
export function processGone(pid: number): boolean {
  try {
    const tasks = fs.readdirSync(`/proc/${pid}/task`);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return tasks.length <= 1 && (state === 'Z' || state === 'X');
  } catch {
    return true; // reaped
  }
}

const users = new Set<string>();

/** A system user of this run's own (no home, no shell), deleted by cleanupAll. */
export function makeUser(): { name: string; uid: number; gid: number } {
  const name = `${PREFIX}u${counter++}`;
  users.add(name);
  execaSync('useradd', [
    '--system',
    '--no-create-home',
    '--home-dir',
    '/nonexistent',
    '--shell',
    '/usr/sbin/nologin',
    '--user-group',
    name,
  ]);
  const [uid, gid] = ['-u', '-g'].map((flag) => Number(execaSync('id', [flag, name]).stdout));
  return { name, uid: uid!, gid: gid! };
}

/** Ends every QEMU started through a state dir of this run, then deletes links and dirs. */
export function cleanupAll(): void {
  for (const fn of cleanups) {
    try {
      fn();
    } catch {}
  }
  cleanups.clear();
  for (const dir of dirs) {
    // the ifbs of rate-limited NICs of VMs this run left running or dead
    for (const vm of safeList(dir)) {
      try {
        const record = JSON.parse(fs.readFileSync(path.join(dir, vm, 'vm.json'), 'utf8')) as {
          nics: { ifb?: string; tap?: string }[];
        };
        for (const nic of record.nics) for (const link of [nic.ifb, nic.tap]) if (link) links.add(link);
      } catch {}
    }
    for (const vm of safeList(dir)) {
      try {
        const record = JSON.parse(fs.readFileSync(path.join(dir, vm, 'vm.json'), 'utf8')) as {
          pid: number;
          qmp: string;
        };
        const cmdline = fs.readFileSync(`/proc/${record.pid}/cmdline`, 'utf8');
        if (cmdline.includes(record.qmp)) process.kill(record.pid, 'SIGKILL');
      } catch {}
    }
  }
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {}
  }
  pids.clear();
  for (const name of new Set([...links, ...ourLinks()])) {
    try {
      if (linkExists(name)) execaSync('ip', ['link', 'del', 'dev', name]);
    } catch {}
  }
  links.clear();
  for (const ns of new Set([...namespaces, ...ourNamespaces()])) {
    try {
      execaSync('ip', ['netns', 'del', ns]);
    } catch {}
  }
  namespaces.clear();
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  dirs.clear();
  // the VMs' own users this run's starts made (their definitions went with the dirs)
  for (const user of [...ourUsers(), ...users]) {
    try {
      execaSync('userdel', [user]);
    } catch {}
  }
  users.clear();
}

/** The users mq-hotplug made for this run's VMs (their GECOS names the VM: `mq-hotplug VM <vm>`). */
export function ourUsers(): string[] {
  const ours = new Set([...vmNames].map((vm) => `mq-hotplug VM ${vm}`));
  return fs
    .readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .filter(([, , , , gecos]) => gecos !== undefined && ours.has(gecos))
    .map(([name]) => name!);
}

function safeList(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

/** The config directory that goes with a test's state directory (made, and deleted with the rest). */
export function configDirOf(stateDir: string): string {
  const dir = `${stateDir}-config`;
  dirs.add(dir);
  return dir;
}

/** A CLI's environment: a state directory of the test's gets its own config directory. */
function cliEnv(env: Record<string, string>): Record<string, string> {
  const state = env.MQ_HOTPLUG_STATE_DIR;
  return state && !env.MQ_HOTPLUG_CONFIG_DIR ? { ...env, MQ_HOTPLUG_CONFIG_DIR: configDirOf(state) } : env;
}

/**
 * MQ_HOTPLUG_TEST_AGENT=1 (`npm run test:agent`): the suite's second path. Each state directory a
 * test's CLI calls use gets a host agent of its own, started by its first call, so that the
 * calls run through the agent's control socket; the root afterEach hook (hooks.ts) stops them.
 */
export const VIA_AGENT = process.env.MQ_HOTPLUG_TEST_AGENT === '1';
const agents = new Map<string, ResultPromise>();

/** Starts the state directory's host agent where none runs; waits for its socket, or for it to give up. */
async function ensureAgent(env: Record<string, string>): Promise<void> {
  const state = env.MQ_HOTPLUG_STATE_DIR;
  if (!VIA_AGENT || !state || agents.has(path.resolve(state))) return;
  // the agent's own process: without a test's fault (a fake ip) meant for one call; its OVS is the
  // call's (a call with another OVS_RUNDIR runs on its own, as a CLI with other settings does)
  const isProcessSetting = (k: string) => k !== 'OVS_RUNDIR' && (PROCESS_ENV as readonly string[]).includes(k);
  const agentEnv = Object.fromEntries(
    Object.entries({ ...process.env, ...cliEnv(env) }).filter(([k]) => !isProcessSetting(k)),
  );
  // --no-reconcile: the tests make drift on purpose, to see it reported (agent.test.ts tests reconcile)
  const proc = execa('node', [CLI, 'agent', '--no-reconcile'], {
    ...{ env: agentEnv, extendEnv: false, reject: false, stdin: 'ignore' },
    ...(process.env.MQT_AGENT_LOG ? { stderr: { file: process.env.MQT_AGENT_LOG, append: true } } : {}),
  });
  trackPid(proc.pid!);
  agents.set(path.resolve(state), proc);
  let exited = false;
  void proc.then(() => (exited = true));
  // a refused state directory: the agent says so and exits, and the CLI runs on its own
  await until(() => exited || fs.existsSync(agentSocket(path.resolve(state))), `the agent of ${state}`, 15_000);
}

/** A state directory's entries, less the agent's control socket: what a test expects gone is gone. */
export function stateEntries(stateDir: string): string[] {
  return fs.readdirSync(stateDir).filter((e) => e !== 'agent.sock');
}

/**
 * Kills a CLI process mid-operation (SIGKILL). Through an agent (MQ_HOTPLUG_TEST_AGENT=1) the
 * operation runs there, so the agent is killed with it; the next call starts a new one.
 */
export async function killMidway(proc: ResultPromise, env: Record<string, string>): Promise<void> {
  const state = env.MQ_HOTPLUG_STATE_DIR && path.resolve(env.MQ_HOTPLUG_STATE_DIR);
  const agent = state ? agents.get(state) : undefined;
  agent?.kill('SIGKILL');
  proc.kill('SIGKILL');
  await Promise.all([proc, agent]);
  if (state) agents.delete(state);
}

/** Stops the host agents the test's calls started (SIGTERM, and waits for each to exit). */
export async function stopAgents(): Promise<void> {
  const running = [...agents.values()];
  agents.clear();
  for (const proc of running) proc.kill('SIGTERM');
  await Promise.all(running);
}

/** Runs the real CLI as a new process (through the state directory's agent, with MQ_HOTPLUG_TEST_AGENT=1). */
export async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  await ensureAgent(env);
  const r = await execa('node', [CLI, ...args], {
    reject: false,
    env: cliEnv(env),
    stdin: 'ignore',
    timeout: 120_000,
    stripFinalNewline: false,
  });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export const QEMU = process.env.MQ_HOTPLUG_QEMU ?? 'qemu-system-x86_64';

/**
 * A small VM with only its QMP monitors: pc, 2 vCPUs, 128M, TCG, no disk; `bridge` its default.
 * Unprivileged (checked), unless `runAs: 'root'` (the bench's baseline, whose QEMU makes its taps).
 */
export async function smallVm(
  store: StateStore,
  name: string,
  bridge?: string,
  { runAs }: { runAs?: 'root' } = {},
): Promise<VmRecord> {
  const record = await startVm(store, {
    ...{ name, cpus: 2, memory: '128M', machine: 'pc', accel: 'tcg', disks: [], hotplugSlots: 0 },
    ...{ qemu: QEMU, qemuArgs: [], bridge, runAs },
  });
  if (runAs === undefined) expectUnprivileged(record.pid);
  return record;
}
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Running {
  proc: ResultPromise;
  out(): string;
  err(): string;
}

/** Starts `mq-hotplug ARGS` as a long-running process (watch, agent), collecting its output. */
export function spawnCli(args: string[], env: Record<string, string>): Running {
  const proc = execa('node', [CLI, ...args], { env: cliEnv(env), reject: false, stdin: 'ignore', buffer: false });
  trackPid(proc.pid!);
  let out = '';
  let err = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (err += d.toString()));
  return { proc, out: () => out, err: () => err };
}

/** Polls `check` until it holds; fails naming `what` after the timeout. */
export async function until<T>(check: () => T | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(25);
  }
}

/**
 * A real bridging failure: plans an add onto `bridge` (preflight passes), deletes the bridge, then
 * runs the add, whose `ip link set ... master` must fail. Resolves with what the add threw.
 */
export async function addOntoVanishingBridge(
  vm: Controller,
  bridge: string,
  queues = 4,
  more: Omit<AddRequest, 'queues' | 'bridge'> = {},
): Promise<{ plan: AddPlan; error: unknown }> {
  const plan = await vm.planNic({ queues, bridge, ...more });
  trackLink(plan.tap);
  await execa('ip', ['link', 'del', 'dev', bridge]);
  const error = await executeAdd(vm.context, plan).then(
    () => new Error('the add succeeded onto a deleted bridge'),
    (e: unknown) => e,
  );
  return { plan, error };
}

/**
 * What a VM's QEMU runs as, from /proc: not root (every uid of the four), no effective
 * capabilities, no new privileges, in a seccomp filter (mode 2). Throws where it is not so.
 */
export function expectUnprivileged(pid: number): { uid: number; gid: number } {
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, 'm').exec(status)?.[1]?.trim() ?? '';
  const uids = field('Uid').split(/\s+/).map(Number);
  const gids = field('Gid').split(/\s+/).map(Number);
  const seen = { uids, capEff: field('CapEff'), noNewPrivs: field('NoNewPrivs'), seccomp: field('Seccomp') };
  const ok =
    uids.length === 4 &&
    uids.every((u) => u === uids[0] && u !== 0) &&
    /^0+$/.test(seen.capEff) &&
    seen.noNewPrivs === '1' &&
    seen.seccomp === '2';
  if (!ok) throw new Error(`QEMU pid ${pid} is not unprivileged and sandboxed: ${JSON.stringify(seen)}`);
  return { uid: uids[0]!, gid: gids[0]! };
}
