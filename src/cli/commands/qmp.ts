/** `qmp <vm> <command> [args-json]`: one QMP command on the VM's control monitor, its return as JSON. */
import { UsageError } from '../../errors.js';
import { QmpCommandError } from '../../qmp/errors.js';
import { type CommandEnv, printJson, withController } from '../env.js';

export async function qmp(vm: string, command: string, argsJson: string | undefined, env: CommandEnv): Promise<void> {
  let args: object | undefined;
  if (argsJson !== undefined) {
    try {
      args = JSON.parse(argsJson) as object;
    } catch {
      throw new UsageError(`invalid QMP arguments '${argsJson}': give a JSON object, e.g. '{"path":"/machine"}'`);
    }
    if (args === null || typeof args !== 'object' || Array.isArray(args))
      throw new UsageError(`invalid QMP arguments '${argsJson}': give a JSON object`);
  }
  await withController(
    vm,
    env,
    async (c) => {
      try {
        printJson(env, await c.qmp.execute(command, args));
      } catch (e) {
        if (e instanceof QmpCommandError) throw new Error(`${e.errorClass}: ${e.desc}`, { cause: e });
        throw e;
      }
    },
    { readOnly: true },
  );
}
