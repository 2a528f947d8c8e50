/** Output helpers: one-line errors with an exit code per kind, tables, JSON. */

export const EXIT = { failed: 1, usage: 2, pending: 3 } as const;

/** Prints one line "mq-hotplug: <message>" and sets the exit code by the error's kind. */
export function fail(e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  const usage = ['UsageError', 'StateError'].includes(err.name);
  process.stderr.write(`mq-hotplug: ${err.message.replace(/\n/g, ' | ')}\n`);
  process.exitCode = err.name === 'UnplugPendingError' ? EXIT.pending : usage ? EXIT.usage : EXIT.failed;
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function note(message: string): void {
  process.stderr.write(`note: ${message}\n`);
}

/** A plain aligned table; null and undefined print as '-'. */
export function table(headers: string[], rows: unknown[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined || c === '' ? '-' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}
