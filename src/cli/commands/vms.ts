/** `vms`: every VM with a record or a definition, with its live state. */
import type { VmRecord } from '../../qemu/state.js';
import { type CommandEnv, note, printJson } from '../env.js';
import { table } from '../output.js';

interface Row {
  name: string;
  pid: number | null;
  state: string;
  spec: Pick<VmRecord['spec'], 'machine' | 'cpus' | 'memory'> & { accel: string };
  nics: number;
  qmp: string | null;
  defined: boolean;
  /** QEMU's version, for a VM with a record */
  qemu: string | null;
  /** who QEMU runs as: the record's, else the definition's choice */
  user: string | null;
}

export async function vms(o: { json?: boolean }, env: CommandEnv): Promise<void> {
  const { store, definitions } = env;
  const defined = new Set<string>();
  for (const name of definitions.list()) {
    try {
      if (definitions.read(name)) defined.add(name);
    } catch (e) {
      note(env, (e as Error).message);
    }
  }
  const rows: Row[] = [];
  for (const name of store.list()) {
    let record: VmRecord | undefined;
    try {
      record = store.read(name);
    } catch (e) {
      note(env, (e as Error).message);
      continue;
    }
    if (!record) continue;
    const { vmState } = await import('../../qemu/launcher.js');
    const { pid, spec, qmp } = record;
    const state = await vmState(record);
    const qemu = record.qemuVersion ?? null;
    const user = record.user?.name ?? 'root'; // a record from before users were kept: root
    rows.push({ name, pid, state, spec, nics: record.nics.length, qmp, defined: defined.has(name), qemu, user });
  }
  for (const name of defined) {
    if (rows.some((r) => r.name === name)) continue; // running, or dead with stale state to clean up
    const def = definitions.read(name)!;
    rows.push({
      name,
      pid: null,
      state: 'stopped',
      spec: def.spec,
      nics: def.nics.length,
      qmp: null,
      defined: true,
      qemu: null,
      user: def.spec.runAs ?? null,
    });
  }
  rows.sort((a, b) => a.name.localeCompare(b.name));
  if (o.json) {
    return printJson(
      env,
      rows.map(({ spec: { machine, cpus, memory, accel }, ...r }) => ({
        ...{ name: r.name, pid: r.pid, state: r.state, machine, cpus, memory, accel },
        ...{ nics: r.nics, qmp: r.qmp, defined: r.defined, qemu: r.qemu, user: r.user },
      })),
    );
  }
  env.output.out(
    table(
      ['NAME', 'PID', 'STATE', 'MACHINE', 'CPUS', 'MEMORY', 'ACCEL', 'NICS', 'DEFINED', 'QEMU', 'USER'],
      rows.map((r) => [
        ...[r.name, r.pid, r.state, r.spec.machine, r.spec.cpus, r.spec.memory, r.spec.accel],
        ...[r.nics, r.defined ? 'yes' : 'no', r.qemu, r.user],
      ]),
    ),
  );
}
