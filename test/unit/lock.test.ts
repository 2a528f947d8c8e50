/**
 * The VM lock (src/qemu/lock.ts): an abstract unix socket across processes, a queue within one.
 * Needs no root: abstract sockets are open to every user of the network namespace.
 */
import { expect } from 'chai';
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { lockKey, withVmLock } from '../../src/qemu/lock.js';
import { StateError } from '../../src/errors.js';
import { pollUntil, sleep } from '../../src/util/time.js';
import { ROOT } from '../helpers/env.js';

const key = () => lockKey(`/tmp/mqh-lock-test-${process.pid}-${Math.random()}`, 'vm1');

describe('VM lock', () => {
  it('serializes concurrent calls in one process; a nested call in the same chain passes through', async () => {
    const k = key();
    let inside = 0;
    let most = 0;
    const order: number[] = [];
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        withVmLock(k, async () => {
          inside++;
          most = Math.max(most, inside);
          await sleep(1);
          // the CLI takes the lock, then the operation inside takes it again: no deadlock
          await withVmLock(k, async () => order.push(i));
          inside--;
        }),
      ),
    );
    expect(most).to.equal(1);
    expect(order).to.deep.equal(Array.from({ length: 20 }, (_, i) => i)); // first come, first served
  });

  it('a failing holder releases the lock for the next', async () => {
    const k = key();
    const first = withVmLock(k, async () => {
      throw new Error('boom');
    });
    const second = withVmLock(k, async () => 'ran');
    expect(await first.catch((e: Error) => e.message)).to.equal('boom');
    expect(await second).to.equal('ran');
  });

  it('times out naming the holding process', async () => {
    const k = key();
    let release: (() => void) | undefined;
    const holding = withVmLock(k, () => new Promise<void>((r) => (release = r)));
    await pollUntil(() => release !== undefined, 5000); // held: bound and running
    const script = `import { withVmLock } from ${JSON.stringify(path.join(ROOT, 'build/src/qemu/lock.js'))};
      await withVmLock(process.argv[1], async () => {}, 200, "VM 'vm1'");`;
    const other = await execa(process.execPath, ['--input-type=module', '-e', script, k], { reject: false });
    expect(other.exitCode).to.not.equal(0);
    expect(other.stderr).to.include(`VM 'vm1' is locked by pid ${process.pid} (still held after the wait)`);
    release!();
    await holding;
    expect(new StateError('x').exitKind).to.equal('usage');
  });

  it('stress: 10 processes x 15 turns, some SIGKILLed while holding: never two holders, never stuck', async function () {
    this.timeout(60_000);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mqh-lock-'));
    const k = key();
    // inside the lock: the owner file must be empty, then ours, and still ours after a pause
    const script = `import fs from 'node:fs';
      import { withVmLock } from ${JSON.stringify(path.join(ROOT, 'build/src/qemu/lock.js'))};
      const [k, dir] = process.argv.slice(1);
      for (let turn = 0; turn < 15; turn++) {
        await withVmLock(k, async () => {
          const owner = dir + '/owner';
          if (fs.existsSync(owner)) fs.appendFileSync(dir + '/violations', process.pid + ' found ' + fs.readFileSync(owner, 'utf8') + '\\n');
          fs.writeFileSync(owner, String(process.pid));
          await new Promise((r) => setTimeout(r, 1 + Math.random() * 3));
          if (fs.readFileSync(owner, 'utf8') !== String(process.pid)) fs.appendFileSync(dir + '/violations', process.pid + ' lost\\n');
          fs.appendFileSync(dir + '/turns', process.pid + '\\n');
          fs.rmSync(owner);
        }, 30_000);
      }`;
    try {
      const workers = Array.from({ length: 10 }, () =>
        execa(process.execPath, ['--input-type=module', '-e', script, k, dir], { reject: false }),
      );
      // kill three of them mid-way, whatever they are doing (holding the lock, or waiting)
      let killed = 0;
      for (const w of workers.slice(0, 3)) {
        await sleep(40 + Math.random() * 60);
        w.kill('SIGKILL');
        killed++;
      }
      const results = await Promise.all(workers);
      const turns = fs.readFileSync(path.join(dir, 'turns'), 'utf8').trim().split('\n');
      const violations = fs.existsSync(path.join(dir, 'violations'))
        ? fs.readFileSync(path.join(dir, 'violations'), 'utf8')
        : '';
      const killedPids = new Set(workers.slice(0, 3).map((w) => String(w.pid)));
      // "found X" where X is a killed process is the stale owner file, not two holders at once
      const real = violations.split('\n').filter((l) => l && !killedPids.has(l.split(' found ')[1] ?? ''));
      expect(real, violations).to.deep.equal([]);
      expect(results.slice(3).every((r) => r.exitCode === 0)).to.equal(true);
      expect(killed).to.equal(3);
      expect(turns.filter((p) => !killedPids.has(p))).to.have.length(7 * 15);
      // and nothing is left stuck: the lock is free at once
      const t = performance.now();
      await withVmLock(k, async () => {}, 1000);
      expect(performance.now() - t).to.be.below(1000);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
