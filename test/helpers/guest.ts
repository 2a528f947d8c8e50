/**
 * A real Linux guest for the tests that need the guest's view: built by fixtures/guest/build.sh
 * (cached), started through mq-hotplug itself (`start --kernel --initrd --serial`), read from its
 * serial log and driven through its serial socket. Its /init speaks in "MQH ..." lines.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa } from 'execa';
import type { AddResult } from '../../src/hotplug/add/transaction.js';
import { ROOT, cli, expectUnprivileged, sleep, trackLink, wipeRuntimeState } from './env.js';

export interface GuestNic {
  ifname: string;
  mac: string;
  rxq: number;
  txq: number;
  combinedMax: number;
  combinedCur: number;
  irqIn: number;
  irqOut: number;
}

let image: Promise<{ kernel: string; initrd: string }> | undefined;

/** Builds (or finds in the cache) the guest kernel and initramfs, once per test run. */
export function guestImage(): Promise<{ kernel: string; initrd: string }> {
  image ??= execa('bash', [path.join(ROOT, 'fixtures/guest/build.sh')], { stderr: 'inherit' }).then(({ stdout }) => {
    const dir = stdout.trim().split('\n').pop()!;
    return { kernel: path.join(dir, 'vmlinux'), initrd: path.join(dir, 'initrd.img') };
  });
  return image;
}

export function parseNicLine(line: string): GuestNic | undefined {
  const m = /^MQH NIC (.*)$/.exec(line.trim());
  if (!m) return undefined;
  const f = Object.fromEntries(m[1]!.split(' ').map((kv) => kv.split('=') as [string, string]));
  return {
    ifname: f.ifname!,
    mac: f.mac!,
    rxq: Number(f.rxq),
    txq: Number(f.txq),
    combinedMax: Number(f.combined_max),
    combinedCur: Number(f.combined_cur),
    irqIn: Number(f.irq_in),
    irqOut: Number(f.irq_out),
  };
}

export interface BootOptions {
  name: string;
  stateDir: string;
  cpus: number;
  machine: 'pc' | 'q35';
  bridge?: string;
  hotplugSlots?: number;
  bootTimeoutMs?: number;
  /** more kernel command line, e.g. mqh.noup (the guest leaves new links down) */
  append?: string;
  /** more QEMU arguments */
  qemuArgs?: string[];
}

export class Guest {
  /** The latest report per MAC; a GONE line deletes it. */
  readonly nics = new Map<string, GuestNic>();
  readonly gone: string[] = [];
  private offset = 0;
  private partial = '';
  private lines: string[] = [];

  private constructor(
    readonly options: BootOptions,
    readonly serialSocket: string,
    readonly serialLog: string,
  ) {}

  get env(): Record<string, string> {
    return { MQ_HOTPLUG_STATE_DIR: this.options.stateDir };
  }

  /** Starts the VM through the CLI and waits for the guest's READY line; one retry (a rare hang before /init is known). */
  static async boot(options: BootOptions): Promise<Guest> {
    const { kernel, initrd } = await guestImage();
    for (let attempt = 1; ; attempt++) {
      const serial = path.join(options.stateDir, `${options.name}.serial`);
      const args = [
        'start',
        options.name,
        '--cpus',
        String(options.cpus),
        '--memory',
        '256M',
        '--machine',
        options.machine,
        '--accel',
        'tcg',
        '--kernel',
        kernel,
        '--initrd',
        initrd,
        '--append',
        `console=ttyS0 quiet loglevel=1 panic=-1${options.append ? ` ${options.append}` : ''}`,
        '--serial',
        serial,
        '--hotplug-slots',
        String(options.hotplugSlots ?? 4),
        ...(options.bridge ? ['--bridge', options.bridge] : []),
        ...(options.qemuArgs ?? []).map((a) => `--qemu-arg=${a}`),
      ];
      const started = await cli(args, { MQ_HOTPLUG_STATE_DIR: options.stateDir });
      if (started.exitCode !== 0) throw new Error(`start failed: ${started.stderr}`);
      const guest = new Guest(options, serial, path.join(options.stateDir, options.name, 'qemu', 'serial.log'));
      expectUnprivileged(guest.pid()); // every suite's guest runs as its VM's own user, sandboxed
      try {
        await guest.waitForLine((l) => l.startsWith('MQH READY'), options.bootTimeoutMs ?? 60_000);
        return guest;
      } catch (e) {
        await guest.stop();
        if (attempt >= 2) throw e;
      }
    }
  }

  /** Its QEMU's pid, from the VM's record. */
  pid(): number {
    const file = path.join(this.options.stateDir, this.options.name, 'vm.json');
    return (JSON.parse(fs.readFileSync(file, 'utf8')) as { pid: number }).pid;
  }

  /** Reads what the guest printed since last time and updates `nics`. */
  poll(): string[] {
    let text: string;
    try {
      const fd = fs.openSync(this.serialLog, 'r');
      const size = fs.fstatSync(fd).size;
      const buffer = Buffer.alloc(size - this.offset);
      fs.readSync(fd, buffer, 0, buffer.length, this.offset);
      fs.closeSync(fd);
      this.offset = size;
      text = buffer.toString('utf8');
    } catch {
      return [];
    }
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    const fresh = lines.map((l) => l.replace(/\r$/, ''));
    for (const line of fresh) {
      const nic = parseNicLine(line);
      if (nic) this.nics.set(nic.mac, nic);
      const gone = /^MQH GONE ifname=\S+ mac=(\S+)/.exec(line.trim());
      if (gone) {
        this.nics.delete(gone[1]!);
        this.gone.push(gone[1]!);
      }
    }
    this.lines.push(...fresh);
    return fresh;
  }

  /** The first line from index `from` on (default: the whole log) that matches. */
  async waitForLine(match: (line: string) => boolean, timeoutMs = 20_000, from = 0): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    let seen = from;
    for (;;) {
      this.poll();
      const hit = this.lines.slice(seen).find((l) => match(l.trim()));
      seen = this.lines.length;
      if (hit) return hit.trim();
      if (Date.now() > deadline)
        throw new Error(
          `guest ${this.options.name}: no matching line within ${timeoutMs} ms; last lines:\n${this.lines.slice(-15).join('\n')}`,
        );
      await sleep(50);
    }
  }

  /** Waits until the guest's view satisfies `check` (polled). */
  async waitFor<T>(check: () => T | undefined | false, what: string, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.poll();
      const value = check();
      if (value) return value;
      if (Date.now() > deadline)
        throw new Error(
          `guest ${this.options.name}: ${what} not seen within ${timeoutMs} ms; last lines:\n${this.lines.slice(-15).join('\n')}`,
        );
      await sleep(50);
    }
  }

  /** Runs a shell line in the guest (through the serial socket); resolves with its exit code and output. */
  async run(command: string, timeoutMs = 20_000): Promise<{ rc: number; output: string[] }> {
    const socket = net.createConnection(this.serialSocket);
    await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
    this.poll();
    const from = this.lines.length;
    socket.write(command + '\n');
    const end = await this.waitForLine((l) => l.startsWith('MQH CMD-END'), timeoutMs, from); // not an earlier command's
    socket.destroy();
    // what the command printed: the lines after the echoed command, up to CMD-END, without our reports
    const printed = this.lines.slice(from).map((l) => l.trimEnd());
    const start = printed.findIndex((l) => l.endsWith(command));
    const output = printed
      .slice(
        start + 1,
        printed.findIndex((l) => l.startsWith('MQH CMD-END')),
      )
      .filter((l) => !l.startsWith('MQH '));
    return { rc: Number(/rc=(\d+)/.exec(end)?.[1] ?? -1), output };
  }

  /**
   * A host reboot as the guest lives it: QEMU killed with SIGKILL, the runtime state directory wiped
   * (/run is a tmpfs), then `mq-hotplug start <name>` from the saved definition. Resolves once the
   * new guest said READY; `nics` then holds only what the new guest reports.
   */
  async rebootHost(wipe = this.options.stateDir): Promise<void> {
    const record = JSON.parse(
      fs.readFileSync(path.join(this.options.stateDir, this.options.name, 'vm.json'), 'utf8'),
    ) as {
      pid: number;
    };
    process.kill(record.pid, 'SIGKILL');
    for (let i = 0; i < 250 && fs.existsSync(`/proc/${record.pid}`); i++) await sleep(20);
    wipeRuntimeState(wipe);
    this.restarted();
    const r = await cli(['start', this.options.name], this.env);
    if (r.exitCode !== 0) throw new Error(`start ${this.options.name} after the reboot failed: ${r.stderr}`);
    expectUnprivileged(this.pid());
    await this.waitForLine((l) => l.startsWith('MQH READY'), this.options.bootTimeoutMs ?? 60_000);
  }

  /** As rebootHost, for a VM that shares its state directory with others: only its own runtime state goes. */
  async rebootVm(): Promise<void> {
    return this.rebootHost(path.join(this.options.stateDir, this.options.name));
  }

  /** Forgets what the previous QEMU's guest printed (a new serial log starts from scratch). */
  restarted(): void {
    this.offset = 0;
    this.partial = '';
    this.lines = [];
    this.nics.clear();
    this.gone.length = 0;
  }

  /** Waits until the guest's interface has its IPv6 link-local address (DAD done): it can send from it. */
  async waitLinkLocal(ifname: string, timeoutMs = 20_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const { output } = await this.run(`ip -6 addr show dev ${ifname}`);
      if (output.some((l) => /inet6 fe80::\S+ scope link(?!.*tentative)/.test(l))) return;
      if (Date.now() > deadline)
        throw new Error(`guest ${this.options.name}: no link-local address on ${ifname}: ${output.join(' | ')}`);
      await sleep(300);
    }
  }

  /** `mq-hotplug add <this VM> ARGS --json` as a new process; its tap is tracked for cleanup. */
  async add(args: string[]): Promise<AddResult> {
    const r = await cli(['add', this.options.name, ...args, '--json'], this.env);
    if (r.exitCode !== 0) throw new Error(`add ${args.join(' ')} exited ${r.exitCode}: ${r.stderr}`);
    const result = JSON.parse(r.stdout) as AddResult;
    trackLink(result.tap);
    return result;
  }

  async stop(): Promise<void> {
    await cli(['stop', this.options.name, '--timeout', '5'], this.env);
  }
}
