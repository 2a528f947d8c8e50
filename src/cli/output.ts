/** Output helpers: one-line errors with an exit code per kind, and tables (JSON and notes: env.ts). */
import { exitCodeOf } from '../errors.js';
import { setExitCode } from '../util/request.js';
import { writeErr } from '../util/write.js';

/** Prints one line "mq-hotplug: <message>" and sets the exit code by the error's kind. */
export function fail(e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  writeErr(`mq-hotplug: ${message.replace(/\n/g, ' | ')}\n`);
  setExitCode(exitCodeOf(e));
}

/** A plain aligned table; null and undefined print as '-'. */
export function table(headers: string[], rows: unknown[][]): string {
  const cells = [
    headers,
    ...rows.map((r) => r.map((c) => (c === null || c === undefined || c === '' ? '-' : String(c)))),
  ];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return (
    cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n'
  );
}
