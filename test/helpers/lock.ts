/** A separate process that takes a VM's lock and holds it until it is killed. */
import { execa } from 'execa';
import path from 'node:path';
import { ROOT, trackPid } from './env.js';

export function holdLock(stateRoot: string, vm: string) {
  const state = path.join(ROOT, 'build/src/qemu/state.js');
  const script = `
    import { StateStore } from ${JSON.stringify(state)};
    setInterval(() => {}, 60_000); // the lock itself never keeps a process alive
    await new StateStore(process.argv[1]).withLock(process.argv[2], async () => {
      console.log('held');
      await new Promise(() => {});
    });`;
  const proc = execa(process.execPath, ['--input-type=module', '-e', script, stateRoot, vm], {
    reject: false,
    buffer: false,
  });
  trackPid(proc.pid!);
  const holding = new Promise<void>((resolve) => proc.stdout!.once('data', () => resolve()));
  return {
    pid: proc.pid!,
    holding,
    kill: (signal: NodeJS.Signals) => proc.kill(signal),
    exited: proc.then(() => undefined),
  };
}
