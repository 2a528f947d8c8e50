/**
 * The controller's events cross processes through the VM's events.jsonl: `add` in one process
 * appends DEVICE_ADDED, and a `watch` in another tails the file. Each line carries the writer's
 * pid, so a process can skip its own lines (it already saw them on its in-memory stream).
 *
 * The log is bounded for long-lived VMs: past MQ_HOTPLUG_EVENTLOG_MAX_BYTES (1 MiB) the writer
 * renames it to events.jsonl.1 (replacing the older one) and the next line starts a new file. A
 * reader keeps its file open, so on a rotation it first reads what is left of the old file through
 * its descriptor, then goes on with the new one: nothing is lost or read twice.
 */
import fs from 'node:fs';
import { Observable } from 'rxjs';
import { envMs } from '../util/time.js';

/** A line of the log: the event as published, with the VM's name and the writer's pid. */
export type Logged<E> = E & { vm: string; pid: number };

/** Appends one line, and rotates the log when it has grown past the bound. */
export function appendLine(file: string, line: string): void {
  const fd = fs.openSync(
    file,
    fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW,
    0o600,
  );
  let size: number;
  try {
    fs.writeSync(fd, line.endsWith('\n') ? line : `${line}\n`);
    size = fs.fstatSync(fd).size;
  } finally {
    fs.closeSync(fd);
  }
  if (size > envMs('MQ_HOTPLUG_EVENTLOG_MAX_BYTES', 1024 * 1024)) fs.renameSync(file, `${file}.1`);
}

/** Events appended to `file` after subscription (optionally from its start), polled every `intervalMs`. */
export function tailEventLog<E extends object>(
  file: string,
  { fromStart = false, intervalMs = 50 } = {},
): Observable<Logged<E>> {
  return new Observable<Logged<E>>((subscriber) => {
    let fd: number | undefined;
    let ino = 0;
    let offset = 0;
    let partial = '';
    const open = (atEnd: boolean): void => {
      try {
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        const st = fs.fstatSync(fd);
        ino = st.ino;
        offset = atEnd ? st.size : 0;
      } catch {
        fd = undefined; // not there yet: the first append makes it
      }
    };
    /** Everything from `offset` to the end of the open file, as events. */
    const drain = (): void => {
      if (fd === undefined) return;
      const size = fs.fstatSync(fd).size;
      if (size < offset) offset = 0; // truncated in place
      if (size === offset) return;
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
    };
    const poll = (): void => {
      if (fd === undefined) {
        open(false);
        return drain();
      }
      drain();
      let current: number | undefined;
      try {
        current = fs.statSync(file).ino;
      } catch {
        current = undefined;
      }
      if (current !== ino) {
        // rotated (or the VM started again): the rest of the old file, then the new one from its start
        drain();
        fs.closeSync(fd);
        fd = undefined;
        partial = '';
        if (current !== undefined) {
          open(false);
          drain();
        }
      }
    };
    open(!fromStart);
    // fs.watch is prompt where it works; the interval covers filesystems where it does not (and rotations)
    let watcher: fs.FSWatcher | undefined;
    try {
      watcher = fs.watch(file, poll);
    } catch {}
    const timer = setInterval(poll, intervalMs);
    return () => {
      clearInterval(timer);
      watcher?.close();
      if (fd !== undefined) fs.closeSync(fd);
    };
  });
}
