/** The event log (src/qemu/eventlog.ts): bounded by rotation, and a tail loses nothing across it. */
import { expect } from 'chai';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { appendLine, tailEventLog } from '../../src/qemu/eventlog.js';
import { pollUntil, sleep } from '../../src/util/time.js';

describe('event log', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-eventlog-'));
    process.env.MQ_HOTPLUG_EVENTLOG_MAX_BYTES = '2000';
  });
  afterEach(() => {
    delete process.env.MQ_HOTPLUG_EVENTLOG_MAX_BYTES;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  // polled every 3 ms throughout; and polled only where there is no file to watch (between a
  // rotation's rename and the next line), the inotify watch following the rotations
  for (const [how, watchedMs] of [
    ['polled', 3],
    ['watched', 3_600_000],
  ] as const)
    it(`rotates past its bound; a tail reading meanwhile gets every event once, in order (${how})`, async () => {
      const file = path.join(dir, 'events.jsonl');
      appendLine(file, JSON.stringify({ n: -1 })); // before the tail: not seen
      const seen: number[] = [];
      const tail = tailEventLog<{ n: number }>(file, { intervalMs: 3, watchedMs }).subscribe((e) => seen.push(e.n));
      let rotations = 0;
      for (let n = 0; n < 600; n++) {
        const before = fs.existsSync(file) ? fs.statSync(file).ino : 0;
        appendLine(file, JSON.stringify({ n, pad: 'x'.repeat(40) }));
        if (!fs.existsSync(file) || fs.statSync(file).ino !== before) rotations++;
        if (n % 7 === 0) await sleep(1); // the watcher reads in the middle of the bursts, and of rotations
      }
      await pollUntil(() => seen.length >= 600, 5000); // the tail catches up
      tail.unsubscribe();
      expect(rotations).to.be.above(10);
      expect(seen).to.deep.equal(Array.from({ length: 600 }, (_, i) => i));
      expect(fs.statSync(file).size).to.be.below(2100);
      expect(fs.statSync(`${file}.1`).size).to.be.below(2100);
    });

  it('a log that does not exist yet is read from its first line', async () => {
    const file = path.join(dir, 'later.jsonl');
    const seen: number[] = [];
    const tail = tailEventLog<{ n: number }>(file, { intervalMs: 3 }).subscribe((e) => seen.push(e.n));
    await sleep(10);
    appendLine(file, JSON.stringify({ n: 1 }));
    appendLine(file, JSON.stringify({ n: 2 }));
    await pollUntil(() => seen.length >= 2, 5000);
    tail.unsubscribe();
    expect(seen).to.deep.equal([1, 2]);
  });

  it('a watched log is read on its inotify events: appends are seen with no poll due for an hour', async () => {
    const file = path.join(dir, 'watched.jsonl');
    appendLine(file, JSON.stringify({ n: 0 }));
    const seen: number[] = [];
    const hour = 3_600_000;
    const tail = tailEventLog<{ n: number }>(file, { intervalMs: hour, watchedMs: hour }).subscribe((e) =>
      seen.push(e.n),
    );
    for (let n = 1; n <= 3; n++) {
      appendLine(file, JSON.stringify({ n }));
      await pollUntil(() => seen.length >= n, 5000);
    }
    tail.unsubscribe();
    expect(seen).to.deep.equal([1, 2, 3]);
  });
});
