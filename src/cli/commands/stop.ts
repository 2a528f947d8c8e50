/** `stop <vm>`: quit, then signals after the timeout; its runtime state goes, its definition stays. */
import { checkVmName } from '../../host/validate.js';
import { type CommandEnv, printJson, seconds } from '../env.js';

export async function stop(vm: string, o: { timeout: string; json?: boolean }, env: CommandEnv): Promise<void> {
  checkVmName(vm);
  const { stopVm } = await import('../../qemu/launcher.js'); // execa: only for the commands that start or stop
  const result = await stopVm(env.store, vm, seconds(o.timeout, 'timeout'), env.definitions);
  if (o.json) return printJson(env, result);
  env.output.out(
    result.how === 'already-dead'
      ? `${vm} was already dead; its state is cleaned up\n`
      : `stopped ${vm}${result.how === 'quit' ? '' : ` (${result.how} after quit failed)`}\n`,
  );
}
