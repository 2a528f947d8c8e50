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

/**
 * Events appended to `file` after subscription (optionally from its start). An inotify watch
 * (fs.watch) on the open file says when to read; the poll, every `intervalMs` while there is no
 * watch (no file yet, a filesystem without inotify) and every `watchedMs` while there is one, is
 * the safety net (a full inotify queue). A host agent tails every VM's log: 50 VMs polled every
 * 50 ms cost it several % of a core while nothing happened.
 */
export function tailEventLog<E extends object>(
  file: string,
  { fromStart = false, intervalMs = 50, watchedMs = 1000 } = {},
): Observable<Logged<E>> {
  return new Observable<Logged<E>>((subscriber) => {
    let fd: number | undefined;
    let ino = 0;
    let offset = 0;
    let partial = '';
    let watcher: fs.FSWatcher | undefined;
    const unwatch = (): void => {
      watcher?.close();
      watcher = undefined;
    };
    const open = (atEnd: boolean): void => {
      try {
        fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
        const st = fs.fstatSync(fd);
        ino = st.ino;
        offset = atEnd ? st.size : 0;
      } catch {
        fd = undefined; // not there yet: the first append makes it
        return;
      }
      // the watch follows the inode just opened: a rotation renames it away ('rename'), and the
      // poll that this calls opens and watches the new file
      unwatch();
      try {
        watcher = fs.watch(file, { persistent: false }, poll).on('error', () => {
          unwatch();
          schedule();
        });
      } catch {
        watcher = undefined;
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
      if (closed) return;
      if (fd === undefined) open(false);
      drain();
      if (closed || fd === undefined) return reschedule();
      let current: number | undefined;
      try {
        current = fs.statSync(file).ino;
      } catch {
        current = undefined;
      }
      if (current !== ino) {
        // rotated (or the VM started again): the rest of the old file, then the new one from its start
        drain();
        if (closed) return;
        fs.closeSync(fd);
        fd = undefined;
        unwatch();
        partial = '';
        if (current !== undefined) {
          open(false);
          drain();
        }
      }
      reschedule();
    };
    let timer: NodeJS.Timeout | undefined;
    let timerWatched = false;
    let closed = false;
    /** The next poll: soon without a watch, seldom with one. */
    const schedule = (): void => {
      clearTimeout(timer);
      if (closed) return;
      timerWatched = watcher !== undefined;
      timer = setTimeout(
        () => {
          timer = undefined;
          poll();
        },
        timerWatched ? watchedMs : intervalMs,
      );
    };
    /** A watch made or lost since the timer was set changes when the next poll is due. */
    const reschedule = (): void => {
      if (timer === undefined || (watcher !== undefined) !== timerWatched) schedule();
    };
    open(!fromStart);
    schedule();
    return () => {
      closed = true;
      clearTimeout(timer);
      unwatch();
      if (fd !== undefined) fs.closeSync(fd);
    };
  });
}
