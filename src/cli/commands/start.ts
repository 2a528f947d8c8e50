/** `start <vm> [options]`: the rules are the library's (hotplug/vms.ts startByName); this parses and prints. */
import { checkInt } from '../../host/validate.js';
import { startByName } from '../../hotplug/vms.js';
import type { StartRequest } from '../../qemu/definition.js';
import { type CommandEnv, printJson } from '../env.js';

export interface StartOptions {
  cpus: string;
  memory: string;
  machine: 'pc' | 'q35';
  accel: 'auto' | 'kvm' | 'tcg';
  disk: string[];
  kernel?: string;
  initrd?: string;
  append?: string;
  serial?: string;
  hotplugSlots: string;
  qemu: string;
  qemuArg: string[];
  bridge?: string;
  runAs?: string;
  ifNotRunning?: boolean;
  json?: boolean;
}

/** Where a start option lands in a VM's spec, where the names differ. */
const SPEC_KEY: Partial<Record<keyof StartOptions, keyof StartRequest>> = { disk: 'disks', qemuArg: 'qemuArgs' };

/** The spec the options ask for (defaults included), checked. */
export function specOf(vm: string, o: StartOptions): StartRequest {
  return {
    name: vm,
    cpus: checkInt(String(o.cpus), 'CPU count', 1, 1024),
    memory: String(o.memory),
    machine: o.machine,
    accel: o.accel,
    disks: o.disk,
    kernel: o.kernel,
    initrd: o.initrd,
    append: o.append,
    serial: o.serial,
    hotplugSlots: checkInt(String(o.hotplugSlots), 'hot-plug slot count', 0, 30),
    qemu: String(o.qemu),
    qemuArgs: o.qemuArg,
    bridge: o.bridge,
    runAs: o.runAs,
  };
}

/** `given`: the options the user wrote on the command line (not defaults), by option name. */
export async function start(vm: string, o: StartOptions, given: Set<string>, env: CommandEnv): Promise<void> {
  const keys = new Set([...given].map((opt) => SPEC_KEY[opt as keyof StartOptions] ?? (opt as keyof StartRequest)));
  const outcome = await startByName(env, specOf(vm, o), keys, { ifNotRunning: o.ifNotRunning });
  if (!outcome.started) return env.output.out(`${vm} is already running (pid ${outcome.record.pid})\n`);
  const { record, nics, spec } = outcome;
  if (record.user?.uid === 0)
    env.output.err(
      `warning: QEMU of VM '${vm}' runs as root, with every capability: a guest that escapes into QEMU owns the host\n`,
    );
  if (o.json) return printJson(env, record);
  const s = record.spec;
  env.output.out(
    `started ${vm}: pid ${record.pid}, ${s.machine}, ${s.cpus} vCPUs, ${s.memory}, ${s.accel}` +
      `${spec.accel === 'auto' ? ` (${record.accelReason})` : ''}; QEMU runs as ${record.user?.name ?? 'root'}` +
      `${record.user ? ` (uid ${record.user.uid})` : ''} in its seccomp sandbox; QMP ready at ${record.qmp}\n`,
  );
  if (nics.length) {
    env.output.out(
      `saved NICs back: ${nics.map((n) => `${n.id} (${n.mac}, tap ${n.tap}, ${n.bus} ${n.addr})`).join(', ')}\n`,
    );
  }
}
