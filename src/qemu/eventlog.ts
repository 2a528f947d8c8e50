/**
 * The controller's events cross processes through the VM's events.jsonl: `add` in one process
 * appends DEVICE_ADDED, and a `watch` in another tails the file. Each line carries the writer's
 * pid, so a process can skip its own lines (it already saw them on its in-memory stream).
 */
import fs from 'node:fs';
import { Observable } from 'rxjs';

/** A line of the log: the event as published, with the VM's name and the writer's pid. */
export type Logged<E> = E & { vm: string; pid: number };

/** Events appended to `file` after subscription (optionally from its start), polled every `intervalMs`. */
export function tailEventLog<E extends object>(
  file: string,
  { fromStart = false, intervalMs = 50 } = {},
): Observable<Logged<E>> {
  return new Observable<Logged<E>>((subscriber) => {
    let offset = fromStart ? 0 : sizeOf(file);
    let partial = '';
    const poll = () => {
      const size = sizeOf(file);
      if (size < offset) offset = 0; // replaced (the VM was started again)
      if (size === offset) return;
      const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
      try {
        const buffer = Buffer.alloc(size - offset);
        fs.readSync(fd, buffer, 0, buffer.length, offset);
        offset = size;
        const lines = (partial + buffer.toString('utf8')).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          try {
            if (line.trim()) subscriber.next(JSON.parse(line) as Logged<E>);
          } catch {
            // a torn or foreign line: skip it, the log is advisory
          }
        }
      } finally {
        fs.closeSync(fd);
      }
    };
    // fs.watch is prompt where it works; the interval covers filesystems where it does not
    let watcher: fs.FSWatcher | undefined;
    try {
      watcher = fs.watch(file, poll);
    } catch {}
    const timer = setInterval(poll, intervalMs);
    return () => {
      clearInterval(timer);
      watcher?.close();
    };
  });
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}
