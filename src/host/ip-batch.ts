/**
 * One long-lived `ip -force -batch -` for a controller's link changes. A fork+exec of `ip` costs
 * about 3-4 ms here, the netlink work itself under 2 ms, and a hot-plug needs one such change.
 *
 * Each request is one batch line followed by a marker line that always fails (`mqh-marker` is no
 * ip object), so the end of every request shows on stderr, in order, as "Command failed -:N"; the
 * text before a failed line is that line's error. The process is started with an argv (no shell),
 * and every token written is a validated name or keyword.
 *
 *   const ip = new IpBatch();
 *   await ip.run(['link', 'set', 'dev', 'tap0', 'master', 'br0', 'up']);
 *   ip.close();
 */
import type { ChildProcess } from 'node:child_process';
import { HostCommandError, startFailure, startProgram } from './exec.js';
import { ipBinary } from './ip.js';
import { trace } from '../util/trace.js';

/** Names, keywords and numbers only: nothing ip's batch parser would treat as quote, comment or separator. */
const SAFE_TOKEN = /^[A-Za-z0-9_.:-]+$/;
const FAILED = /Command failed -:(\d+)\r?\n/g;

interface Request {
  argv: string[];
  resolve(): void;
  reject(e: Error): void;
}

export class IpBatch {
  private proc?: ChildProcess;
  private line = 0;
  private stderr = '';
  private readonly errors = new Map<number, string>();
  private readonly pending = new Map<number, Request>();

  /** Starts `ip` now (an add does this while QEMU works on its device_add, so the start-up costs nothing). */
  start(): void {
    if (this.proc) return;
    const proc = startProgram([ipBinary(), '-force', '-batch', '-'], ['pipe', 'ignore', 'pipe']);
    this.proc = proc;
    this.line = 0;
    this.stderr = '';
    proc.stderr!.on('data', (chunk: Buffer) => this.read(chunk.toString()));
    proc.stdin!.on('error', () => {}); // EPIPE when ip died: reported through 'exit' below
    // ip exits (invarg) on some bad arguments even in batch mode: the first unanswered request is
    // the culprit and gets ip's words; the ones queued behind it never ran and go to a new ip.
    const gone = (why: string) => {
      if (this.proc !== proc) return;
      this.proc = undefined;
      const waiting = [...this.pending.entries()].sort((a, b) => a[0] - b[0]).map(([, r]) => r);
      this.pending.clear();
      this.errors.clear();
      const [culprit, ...rest] = waiting;
      culprit?.reject(new HostCommandError([ipBinary(), ...culprit.argv], this.stderr.trim() || why));
      for (const r of rest) this.run(r.argv).then(r.resolve, r.reject);
    };
    proc.on('error', (e: NodeJS.ErrnoException) => gone(startFailure(ipBinary(), e)));
    proc.on('exit', (code) => gone(`ip exited (code ${code})`));
  }

  /** Runs one ip command (argv without the leading "ip"); rejects with ip's own error text. */
  run(argv: string[]): Promise<void> {
    for (const token of argv) {
      if (!SAFE_TOKEN.test(token))
        return Promise.reject(new HostCommandError([ipBinary(), ...argv], `unsafe token '${token}'`));
    }
    this.start();
    const proc = this.proc!;
    this.line += 2; // the command's line, then the marker's
    const marker = this.line;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(marker, { argv, resolve, reject });
      trace('ip', '>', argv.join(' '));
      proc.stdin!.write(`${argv.join(' ')}\nmqh-marker\n`);
    });
  }

  close(): void {
    this.proc?.stdin?.end();
    this.proc = undefined;
  }

  private read(text: string): void {
    this.stderr += text;
    let consumed = 0;
    for (const m of this.stderr.matchAll(FAILED)) {
      const n = Number(m[1]);
      const message = this.stderr.slice(consumed, m.index).trim();
      consumed = m.index! + m[0].length;
      const request = this.pending.get(n);
      if (!request) {
        this.errors.set(n, message); // a command's own failure: its marker comes next
        continue;
      }
      this.pending.delete(n);
      const error = this.errors.get(n - 1);
      this.errors.delete(n - 1);
      if (error === undefined) request.resolve();
      else {
        trace('ip', '!', error);
        request.reject(new HostCommandError([ipBinary(), ...request.argv], error));
      }
    }
    this.stderr = this.stderr.slice(consumed);
  }
}
