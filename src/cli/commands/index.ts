/**
 * The commands as main.ts calls them: each gets its environment (commandEnv: stdout/stderr, the
 * stores of the global options) and its exit code, where it returns one, becomes the process's.
 * One module per command beside this file; their unit tests call them with their own environment.
 */
import { setExitCode } from '../../util/request.js';
import { type CommandEnv, type GlobalOptions, commandEnv } from '../env.js';
import { type AddOptions, add as addCommand } from './add.js';
import { apply as applyCommand } from './apply.js';
import { doctor as doctorCommand } from './doctor.js';
import { nics as nicsCommand } from './nics.js';
import { qmp as qmpCommand } from './qmp.js';
import { remove as removeCommand } from './remove.js';
import { type StartOptions, start as startCommand } from './start.js';
import { stop as stopCommand } from './stop.js';
import { undefine as undefineCommand } from './undefine.js';
import { vms as vmsCommand } from './vms.js';

export type { GlobalOptions };

/** Runs a command in the process's environment; a returned exit code becomes the process's. */
async function run(g: GlobalOptions, command: (env: CommandEnv) => Promise<number | void>): Promise<void> {
  const code = await command(commandEnv(g));
  if (typeof code === 'number' && code !== 0) setExitCode(code);
}

type Opts<T> = T & GlobalOptions;

export const start = (vm: string, o: Opts<StartOptions>, g: GlobalOptions, given: Set<string>) =>
  run(g, (env) => startCommand(vm, o, given, env));
export const stop = (vm: string, o: Opts<{ timeout: string; json?: boolean }>, g: GlobalOptions) =>
  run(g, (env) => stopCommand(vm, o, env));
export const vms = (o: { json?: boolean }, g: GlobalOptions) => run(g, (env) => vmsCommand(o, env));
export const doctor = (o: { json?: boolean; qemu: string }, g: GlobalOptions) => run(g, (env) => doctorCommand(o, env));
export const qmp = (vm: string, command: string, args: string | undefined, g: GlobalOptions) =>
  run(g, (env) => qmpCommand(vm, command, args, env));
export const add = (vm: string, o: AddOptions, g: GlobalOptions) => run(g, (env) => addCommand(vm, o, env));
export const apply = (
  vm: string,
  o: { file: string; dryRun?: boolean; json?: boolean; timeout: string },
  g: GlobalOptions,
) => run(g, (env) => applyCommand(vm, o, env));
export const undefine = (vm: string, o: { json?: boolean }, g: GlobalOptions) =>
  run(g, (env) => undefineCommand(vm, o, env));
export const remove = (
  vm: string,
  nic: string,
  o: { timeout: string; json?: boolean; transient?: boolean },
  g: GlobalOptions,
) => run(g, (env) => removeCommand(vm, nic, o, env));
export const nics = (vm: string, o: { json?: boolean }, g: GlobalOptions) => run(g, (env) => nicsCommand(vm, o, env));
