/**
 * The names of links as the kernel changes them: one `ip -o monitor link` for the host (netlink
 * tells at once; the agent's periodic check alone would take half its interval on average).
 * Restarted if it dies, at most once a second.
 *
 *   const monitor = monitorLinks((name) => console.log(name, 'changed'));
 *   monitor.close();
 */
import type { ChildProcess } from 'node:child_process';
import { startProgram } from './exec.js';
import { ipBinary } from './ip.js';

/** "5: tap0: <...>" or "Deleted 5: tap0@if3: <...>", one line per change with -o. */
const LINE = /^(?:Deleted )?\d+: ([^:@\s]+)[:@]/;

export function monitorLinks(onChange: (name: string) => void): { close(): void } {
  let proc: ChildProcess | undefined;
  let closed = false;
  let restart: NodeJS.Timeout | undefined;
  const start = () => {
    const p = (proc = startProgram([ipBinary(), '-o', 'monitor', 'link'], ['ignore', 'pipe', 'ignore']));
    let rest = '';
    p.stdout!.on('data', (chunk: Buffer) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop()!;
      for (const line of lines) {
        const name = LINE.exec(line)?.[1];
        if (name) onChange(name);
      }
    });
    p.on('error', () => {});
    p.on('exit', () => {
      if (!closed) restart = setTimeout(start, 1000);
    });
  };
  start();
  return {
    close() {
      closed = true;
      clearTimeout(restart);
      proc?.kill();
    },
  };
}
