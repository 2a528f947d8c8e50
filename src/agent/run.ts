/** `mq-hotplug agent` with no VM: the host agent (host-agent.ts) until SIGTERM or SIGINT. */
import type { GlobalOptions } from '../cli/env.js';
import { hooksOf } from '../cli/watch.js';
import { UsageError } from '../errors.js';
import { writeErr } from '../util/write.js';
import { HostAgent } from './host-agent.js';
import type { RunProgram } from './control.js';
import { listenTarget } from './metrics.js';

export interface HostAgentCliOptions {
  checkInterval: string;
  reconcile: boolean;
  on: string[];
  exec: string[];
  startDefined?: boolean;
  metrics?: string;
}

/**
 * `runProgram` is the CLI's, handed over by the `agent` command's action: the agent runs the very
 * program the CLI process loaded, so that back.cjs holds no second copy of it and of commander.
 */
export async function hostAgent(o: HostAgentCliOptions, g: GlobalOptions, runProgram: RunProgram): Promise<void> {
  if (o.on.length !== o.exec.length)
    throw new UsageError(`--on and --exec go in pairs: got ${o.on.length} --on and ${o.exec.length} --exec`);
  const seconds = Number.parseFloat(o.checkInterval);
  if (!(seconds >= 0.1 && seconds <= 3600))
    throw new UsageError(`invalid check interval '${o.checkInterval}': use seconds from 0.1 to 3600, e.g. 5`);
  if (o.metrics !== undefined) listenTarget(o.metrics); // a bad value is said before anything starts
  const agent = new HostAgent({
    stateDir: g.stateDir,
    configDir: g.configDir,
    checkIntervalMs: seconds * 1000,
    reconcile: o.reconcile,
    hooks: hooksOf(o.on, o.exec),
    startDefined: o.startDefined,
    metrics: o.metrics,
    runProgram,
  });
  await agent.start();
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  writeErr('agent: stopping (the VMs go on running)\n');
  await agent.stop();
}
