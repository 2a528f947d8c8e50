/**
 * What every command is given: the global options, where its output goes, and the stores. The
 * commands write only through `output` and open VMs only through `stores`, so a unit test gives
 * them its own (test/unit/cli.test.ts) with no root and no QEMU.
 */
import path from 'node:path';
import { checkInt, checkVmName } from '../host/validate.js';
import { Controller } from '../hotplug/controller.js';
import type { Stores } from '../hotplug/vms.js';
import { DefinitionStore } from '../qemu/definition.js';
import { StateStore } from '../qemu/state.js';
import { requester } from '../util/request.js';
import { writeErr, writeOut } from '../util/write.js';
import { watchers } from '../hotplug/watched-vm.js';

export interface GlobalOptions {
  stateDir: string;
  configDir: string;
  qmp?: string;
  eventsQmp?: string;
}

export interface Output {
  out(text: string): void;
  err(text: string): void;
}

/** The process's stdout and stderr (by write(2), see util/write.ts). */
export const stdio: Output = { out: writeOut, err: (text) => writeErr(text) };

export interface CommandEnv extends Stores {
  global: GlobalOptions;
  output: Output;
}

const stores = new Map<string, StateStore>();

/** One state store per directory in a process, so the lock a command takes is seen as held by the operation inside. */
export function commandEnv(global: GlobalOptions, output: Output = stdio): CommandEnv {
  let store = stores.get(global.stateDir);
  if (!store) stores.set(global.stateDir, (store = new StateStore(global.stateDir)));
  return { global, output, store, definitions: new DefinitionStore(global.configDir) };
}

export function printJson(env: CommandEnv, value: unknown): void {
  env.output.out(JSON.stringify(value, null, 2) + '\n');
}

/** A warning or note: always on stderr, whatever the output format (JSON output carries it too). */
export function note(env: CommandEnv, message: string): void {
  env.output.err(`note: ${message}\n`);
}

/** Seconds from an option, as ms. */
export const seconds = (value: string, what: string) => checkInt(value, what, 0, 86_400) * 1000;

/** A VM given by --qmp, or ours by name. */
export function openController(vm: string, env: CommandEnv, { readOnly = false } = {}): Promise<Controller> {
  const { qmp } = env.global;
  const where = qmp ? { qmp, name: vm } : { name: vm, store: env.store, definitions: env.definitions };
  return Controller.open({ ...where, readOnly });
}

/**
 * Lock first, then connect: the control monitor serves one client, and the lock queues them. Run
 * by the host agent for a client, the command takes the agent's controller of the VM instead: its
 * events monitor, open and negotiated already (QMP takes commands on any monitor), so the client
 * pays no connect and greeting, and the control monitor stays free for a CLI that runs alone.
 */
export async function withController<T>(
  vm: string,
  env: CommandEnv,
  fn: (c: Controller) => Promise<T>,
  options: { readOnly?: boolean } = {},
): Promise<T> {
  const run = async () => {
    const controller = await openController(vm, env, options);
    try {
      return await fn(controller);
    } finally {
      await controller.close();
    }
  };
  if (env.global.qmp) return run();
  checkVmName(vm);
  // outside the lock: a watcher opened now takes it for its recovery, and its timers must not hold it
  const lent = await agentController(vm, env);
  return env.store.withLock(vm, lent ? () => fn(lent) : run);
}

/** The host agent's controller of the VM, where this runs in the agent for its own directories. */
async function agentController(vm: string, env: CommandEnv): Promise<Controller | undefined> {
  const agent = requester() ? watchers() : undefined;
  if (!agent) return undefined;
  const { state, config } = agent.roots;
  if (
    path.resolve(state) !== path.resolve(env.store.root) ||
    path.resolve(config) !== path.resolve(env.definitions.root)
  )
    return undefined;
  // not watched and not to be (not running, its events monitor held): the command opens its own and says why
  return agent.borrow(vm).then(
    (w) => w.controller,
    () => undefined,
  );
}
