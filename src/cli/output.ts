/** Output helpers: one-line errors with an exit code per kind, tables, JSON, warnings. */
import { exitCodeOf } from '../errors.js';
import { writeErr, writeOut } from '../util/write.js';

/** Prints one line "mq-hotplug: <message>" and sets the exit code by the error's kind. */
export function fail(e: unknown): void {
  const message = e instanceof Error ? e.message : String(e);
  writeErr(`mq-hotplug: ${message.replace(/\n/g, ' | ')}\n`);
  process.exitCode = exitCodeOf(e);
}

export function printJson(value: unknown): void {
  writeOut(JSON.stringify(value, null, 2) + '\n');
}

/** A warning or note: always on stderr, whatever the output format (JSON output carries it too). */
export function note(message: string): void {
  writeErr(`note: ${message}\n`);
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
