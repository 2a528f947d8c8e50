/**
 * `watch` and `agent`: the VM's events (QEMU's, from the events monitor, and the controller's, from
 * this process and, through the event log, from any other) printed, handed to hooks, and reacted to.
 */
import { StateStore, qemuAlive } from '../qemu/state.js';
import type { VmEvent } from '../hotplug/events.js';
import { type WatchedVm, cleanUpAfter, watchVm, watchers } from '../hotplug/watched-vm.js';
import { bindToClient, requester } from '../util/request.js';
import { UsageError } from '../errors.js';
import { checkVmName } from '../host/validate.js';
import type { GlobalOptions } from './env.js';
import { pollUntil } from '../util/time.js';
import { loadExeca } from '../qemu/launcher.js';
import { DefinitionStore } from '../qemu/definition.js';
import { writeOut, writeErr } from '../util/write.js';

export interface WatchOptions {
  json?: boolean;
  on: string[];
  exec: string[];
  reconcile?: boolean;
  follow?: boolean;
  quiet?: boolean;
  checkInterval?: string;
}

export interface Hook {
  event: string;
  argv: string[];
}

export async function watch(vm: string, o: WatchOptions, g: GlobalOptions): Promise<void> {
  if (o.on.length !== o.exec.length)
    throw new UsageError(`--on and --exec go in pairs: got ${o.on.length} --on and ${o.exec.length} --exec`);
  const hooks = hooksOf(o.on, o.exec);
  const periodMs = Math.max(100, Number.parseFloat(o.checkInterval ?? '5') * 1000);
  if (!Number.isFinite(periodMs))
    throw new UsageError(`invalid check interval '${o.checkInterval}': use seconds, e.g. 5 or 0.5`);
  const external = g.eventsQmp ?? g.qmp;
  if (!external) checkVmName(vm);
  const store = external ? undefined : new StateStore(g.stateDir);
  // run by the host agent for a client: its watcher of the VM is borrowed (the events monitor
  // serves one client, the agent), and the agent reconciles and cleans up
  const client = requester();
  const agent = client && !external ? watchers() : undefined;
  let stopping = false;
  let current: WatchedVm | undefined;
  const onSignal = () => {
    stopping = true;
    if (!agent) void current?.close();
    wake();
  };
  let wake = () => {};
  // a signal that came while the watcher was being opened ends the watch at once
  const woken = () => (stopping ? Promise.resolve() : new Promise<void>((r) => (wake = r)));
  if (client) client.signal.addEventListener('abort', onSignal, { once: true });
  else {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }

  let lastPid: number | undefined;
  for (;;) {
    if (store && o.follow) lastPid = await waitForVm(store, vm, lastPid, () => stopping);
    if (stopping) break;
    const where = external ? { qmp: external, name: vm } : { name: vm, store, monitor: 'events' as const };
    const watched = (current = agent
      ? await agent.borrow(vm)
      : await watchVm(where, { reconcile: o.reconcile, periodMs }));
    const printing = watched.events$.subscribe(
      bindToClient((e: VmEvent) => {
        if (!o.quiet) print(vm, e, o.json);
        for (const hook of hooks) if (hook.event === e.event || hook.event === '*') void runHook(hook, vm, e);
      }),
    );
    // an agent that does not reconcile lends its watcher, and this watch reconciles on it
    const reconcileHere = o.reconcile && agent !== undefined && !agent.reconciles;
    const reacting = reconcileHere
      ? watched.controller.startReconcile(watched.controller.events$, periodMs)
      : undefined;
    writeErr(`watching ${vm}${o.reconcile ? ' and reconciling' : ''} (Ctrl-C to stop)\n`);
    const why = await Promise.race([watched.ended, woken().then(() => undefined)]);
    printing.unsubscribe();
    reacting?.unsubscribe();
    if (!agent) await watched.close();
    if (stopping || why === undefined) break;
    writeErr(`${vm}: ${why}\n`);
    if (o.reconcile && (!agent || reconcileHere)) {
      const said = await cleanUpAfter({ name: vm, store, qmp: g.qmp ?? external }, new DefinitionStore(g.configDir));
      if (said) writeErr(`${said}\n`);
    }
    if (!o.follow || !store) break;
    writeErr(`${vm}: waiting for it to start again (--follow)\n`);
  }
  if (client) client.signal.removeEventListener('abort', onSignal);
  else {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** --on/--exec pairs as hooks: argv split on spaces (no shell). */
export function hooksOf(on: string[], exec: string[]): Hook[] {
  return on.map((event, i) => {
    const argv = exec[i]!.trim().split(/\s+/);
    if (!argv[0]) throw new UsageError(`empty --exec for --on ${event}`);
    return { event, argv };
  });
}

function print(vm: string, e: VmEvent, json?: boolean): void {
  const { event, data, timestamp, source } = e;
  if (json) {
    writeOut(JSON.stringify({ event, data, timestamp, vm, source }) + '\n');
    return;
  }
  const at = new Date(timestamp.seconds * 1000 + timestamp.microseconds / 1000).toISOString();
  writeOut(`${at} ${vm} ${source === 'controller' ? 'mq-hotplug' : 'qemu'} ${event} ${JSON.stringify(data)}\n`);
}

/** Runs one hook: argv only (no shell), the event as JSON on stdin and as MQH_* variables. */
export async function runHook(hook: Hook, vm: string, e: VmEvent): Promise<void> {
  const json = JSON.stringify({ event: e.event, data: e.data, timestamp: e.timestamp, vm, source: e.source });
  const env: Record<string, string> = {
    MQH_EVENT: e.event,
    MQH_VM: vm,
    MQH_SOURCE: e.source,
    MQH_DATA: JSON.stringify(e.data),
    MQH_TIMESTAMP: String(e.timestamp.seconds + e.timestamp.microseconds / 1e6),
  };
  for (const [key, value] of Object.entries(e.data as Record<string, unknown>)) {
    if (/^[a-z][a-z0-9_-]*$/i.test(key) && ['string', 'number', 'boolean'].includes(typeof value)) {
      env[`MQH_${key.toUpperCase().replace(/-/g, '_')}`] = String(value);
    }
  }
  try {
    const { execa } = await loadExeca();
    const result = await execa(hook.argv[0]!, hook.argv.slice(1), { input: json, env, reject: false, timeout: 60_000 });
    if (result.failed) writeErr(`hook '${hook.argv.join(' ')}' for ${e.event} failed: ${result.shortMessage}\n`);
    else if (result.stdout) writeErr(result.stdout + '\n');
  } catch (err) {
    writeErr(`hook '${hook.argv.join(' ')}' for ${e.event} failed: ${(err as Error).message}\n`);
  }
}

/** Waits until a VM of that name runs with a pid other than `previous`. */
async function waitForVm(
  store: StateStore,
  vm: string,
  previous: number | undefined,
  stop: () => boolean,
): Promise<number | undefined> {
  const started = () => {
    if (stop()) return previous ?? -1;
    try {
      const record = store.read(vm);
      if (record && record.pid !== previous && qemuAlive(record)) return record.pid;
    } catch {}
    return undefined;
  };
  const pid = await pollUntil(started, Infinity, 200);
  return pid === -1 ? previous : pid;
}
