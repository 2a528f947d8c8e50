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
import { type AddPlan, executeAdd } from '../../src/hotplug/add.js';

/** mqt + up to 5 digits of our pid: leaves 7 characters for a suffix. */
export const PREFIX = `mqt${process.pid % 100000}`;
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
export const CLI = path.join(ROOT, 'bin', 'mq-hotplug.js');

const links = new Set<string>();
const dirs = new Set<string>();
const pids = new Set<number>();
let counter = 0;

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

export function tempDir(label = 'state'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${PREFIX}-${label}-`));
  dirs.add(dir);
  return dir;
}

export function linkExists(name: string): boolean {
  return fs.existsSync(`/sys/class/net/${name}`);
}

/** Every link on the host whose name starts with this run's prefix. */
export function ourLinks(): string[] {
  return fs.readdirSync('/sys/class/net').filter((n) => n.startsWith(PREFIX));
}

/** Ends every QEMU started through a state dir of this run, then deletes links and dirs. */
export function cleanupAll(): void {
  for (const dir of dirs) {
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
  for (const dir of dirs) fs.rmSync(dir, { recursive: true, force: true });
  dirs.clear();
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

/** Runs the real CLI as a new process. */
export async function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  const r = await execa('node', [CLI, ...args], {
    reject: false,
    env,
    stdin: 'ignore',
    timeout: 120_000,
    stripFinalNewline: false,
  });
  return { exitCode: r.exitCode ?? -1, stdout: r.stdout, stderr: r.stderr };
}

export const QEMU = process.env.MQ_HOTPLUG_QEMU ?? 'qemu-system-x86_64';
export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export interface Running {
  proc: ResultPromise;
  out(): string;
  err(): string;
}

/** Starts `mq-hotplug ARGS` as a long-running process (watch, agent), collecting its output. */
export function spawnCli(args: string[], env: Record<string, string>): Running {
  const proc = execa('node', [CLI, ...args], { env, reject: false, stdin: 'ignore', buffer: false });
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
): Promise<{ plan: AddPlan; error: unknown }> {
  const plan = await vm.planNic({ queues, bridge });
  trackLink(plan.tap);
  await execa('ip', ['link', 'del', 'dev', bridge]);
  const error = await executeAdd(vm.context, plan).then(
    () => new Error('the add succeeded onto a deleted bridge'),
    (e: unknown) => e,
  );
  return { plan, error };
}
