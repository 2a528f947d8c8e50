/** The CLI's commands: parse and check options, call the layers, format the result. */
import fs from 'node:fs';
import { UsageError } from '../errors.js';
import { checkInt, checkVmName } from '../host/validate.js';
import { isBridge, ip, vhostNetUsable } from '../host/ip.js';
import { checkKvm, resolveAccel } from '../qemu/accel.js';
import { DEFINITION_VERSION, DefinitionStore, type StartRequest } from '../qemu/definition.js';
import { StateStore, type VmRecord, qemuAlive } from '../qemu/state.js';
import { LinuxHost } from '../hotplug/adapters.js';
import { type ApplyResult, applyDefinition, applyLive, parseApplySpec } from '../hotplug/apply.js';
import { Controller } from '../hotplug/controller.js';
import type { AddRequest } from '../hotplug/add/plan.js';
import { LinuxBridge } from '../hotplug/network/linux-bridge.js';
import { QmpCommandError } from '../qmp/errors.js';
import { note, printJson, table } from './output.js';
import { writeOut } from '../util/write.js';

export interface GlobalOptions {
  stateDir: string;
  configDir: string;
  qmp?: string;
  eventsQmp?: string;
}

/** The launcher starts QEMU through execa: loaded only by the commands that start or stop one, not on add's path. */
const launcher = () => import('../qemu/launcher.js');

const seconds = (value: string, what: string) => checkInt(value, what, 0, 86_400) * 1000;
const MEMORY = /^\d+[KMGT]?$/i;

let store: StateStore | undefined;
/** One store per process, so the lock taken by a command is seen as held by the operation inside. */
function storeOf(g: GlobalOptions): StateStore {
  return (store ??= new StateStore(g.stateDir));
}

function definitionsOf(g: GlobalOptions): DefinitionStore {
  return new DefinitionStore(g.configDir);
}

export async function openController(vm: string, g: GlobalOptions): Promise<Controller> {
  return Controller.open(
    g.qmp ? { qmp: g.qmp, name: vm } : { name: vm, store: storeOf(g), definitions: definitionsOf(g) },
  );
}

/** Lock first, then connect: the control monitor serves one client, and the lock queues them. */
async function withController<T>(vm: string, g: GlobalOptions, fn: (c: Controller) => Promise<T>): Promise<T> {
  const run = async () => {
    const controller = await openController(vm, g);
    try {
      return await fn(controller);
    } finally {
      await controller.close();
    }
  };
  if (g.qmp) return run();
  checkVmName(vm);
  const store = storeOf(g);
  return store.withLock(vm, run);
}

/** Where a start option lands in a VM's spec, where the names differ. */
const SPEC_KEY: Record<string, string> = { disk: 'disks', qemuArg: 'qemuArgs' };

/** The spec the options ask for (defaults included), checked. */
function specOf(vm: string, o: Record<string, string | string[] | boolean | undefined>): StartRequest {
  return {
    name: vm,
    cpus: checkInt(String(o.cpus), 'CPU count', 1, 1024),
    memory: String(o.memory),
    machine: o.machine as 'pc' | 'q35',
    accel: o.accel as 'auto' | 'kvm' | 'tcg',
    disks: o.disk as string[],
    kernel: o.kernel as string | undefined,
    initrd: o.initrd as string | undefined,
    append: o.append as string | undefined,
    serial: o.serial as string | undefined,
    hotplugSlots: checkInt(String(o.hotplugSlots), 'hot-plug slot count', 0, 30),
    qemu: String(o.qemu),
    qemuArgs: o.qemuArg as string[],
    bridge: o.bridge as string | undefined,
  };
}

function checkSpec(spec: StartRequest): void {
  if (!MEMORY.test(spec.memory)) throw new UsageError(`invalid memory '${spec.memory}': use a size like 512M or 2G`);
  for (const [what, path] of [
    ['kernel', spec.kernel],
    ['initrd', spec.initrd],
    ...spec.disks.map((d) => ['disk', d]),
  ] as [string, string | undefined][]) {
    if (path !== undefined && !fs.existsSync(path)) throw new UsageError(`${what} '${path}' does not exist`);
  }
  if (spec.bridge !== undefined && !isBridge(spec.bridge))
    throw new UsageError(`bridge '${spec.bridge}' does not exist or is not a bridge`);
}

/**
 * `start <vm> [options]`. A VM with a definition starts from it (the options given change its
 * saved spec, and it keeps its NICs); a new VM is defined from the options, so that it lasts.
 */
export async function start(
  vm: string,
  o: Record<string, string | string[] | boolean | undefined>,
  g: GlobalOptions,
  given: Set<string>,
): Promise<void> {
  checkVmName(vm);
  const store = storeOf(g);
  const definitions = definitionsOf(g);
  const saved = definitions.read(vm);
  const requested = specOf(vm, o);
  const spec: StartRequest = saved
    ? {
        ...saved.spec,
        ...Object.fromEntries(
          [...given].map((opt) => [SPEC_KEY[opt] ?? opt, requested[(SPEC_KEY[opt] ?? opt) as keyof StartRequest]]),
        ),
      }
    : requested;
  checkSpec(spec);
  const running = store.list().includes(vm) ? safeRecord(store, vm) : undefined;
  if (running && qemuAlive(running)) {
    if (o.ifNotRunning) return void writeOut(`${vm} is already running (pid ${running.pid})\n`);
    throw new UsageError(`VM '${vm}' is already running (pid ${running.pid}); stop it first or pick another name`);
  }
  const { startDefined } = await import('../hotplug/boot.js');
  const { record, nics } = await startDefined(
    store,
    { version: DEFINITION_VERSION, name: vm, spec, nics: saved?.nics ?? [] },
    () => Controller.open({ name: vm, store, definitions }),
  );
  // saved after the start worked: a start that failed changes nothing
  if (saved) definitions.update(vm, (d) => (d.spec = spec));
  else definitions.write({ version: DEFINITION_VERSION, name: vm, spec, nics: [] });
  if (o.json) return printJson({ ...record, nics: store.read(vm)?.nics ?? record.nics });
  const s = record.spec;
  writeOut(
    `started ${vm}: pid ${record.pid}, ${s.machine}, ${s.cpus} vCPUs, ${s.memory}, ${s.accel}` +
      `${spec.accel === 'auto' ? ` (${record.accelReason})` : ''}; QMP ready at ${record.qmp}\n`,
  );
  if (nics.length) {
    writeOut(
      `saved NICs back: ${nics.map((n) => `${n.id} (${n.mac}, tap ${n.tap}, ${n.bus} ${n.addr})`).join(', ')}\n`,
    );
  }
}

/** `undefine <vm>`: forgets a VM's definition; a running VM must be stopped first. */
export async function undefine(vm: string, o: { json?: boolean }, g: GlobalOptions): Promise<void> {
  checkVmName(vm);
  const store = storeOf(g);
  const definitions = definitionsOf(g);
  await store.withLock(vm, async () => {
    const record = safeRecord(store, vm);
    if (record && qemuAlive(record))
      throw new UsageError(`VM '${vm}' is running; stop it first ('mq-hotplug stop ${vm}'), then undefine it`);
    if (!definitions.remove(vm))
      throw new UsageError(`VM '${vm}' has no definition in ${definitions.root} (see 'mq-hotplug vms')`);
  });
  if (o.json) return printJson({ name: vm, undefined: true });
  writeOut(`undefined ${vm}: ${definitions.file(vm)} removed\n`);
}

/** `apply <vm> -f FILE`: the VM's NICs become exactly the spec's (see hotplug/apply.ts). */
export async function apply(
  vm: string,
  o: { file: string; dryRun?: boolean; json?: boolean; timeout: string },
  g: GlobalOptions,
): Promise<void> {
  const removeTimeoutMs = seconds(o.timeout, 'timeout');
  const source = o.file === '-' ? 'on stdin' : o.file;
  let text: string;
  try {
    text = fs.readFileSync(o.file === '-' ? 0 : o.file, 'utf8');
  } catch (e) {
    throw new UsageError(`cannot read spec ${source}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const wanted = parseApplySpec(text, source);
  let result: ApplyResult;
  if (g.qmp) {
    result = await withController(vm, g, (c) => applyLive(c.context, wanted, { dryRun: o.dryRun, removeTimeoutMs }));
  } else {
    checkVmName(vm);
    const store = storeOf(g);
    const definitions = definitionsOf(g);
    result = await store.withLock(vm, async () => {
      const record = safeRecord(store, vm);
      if (record && qemuAlive(record)) {
        return withController(vm, g, (c) => applyLive(c.context, wanted, { dryRun: o.dryRun, removeTimeoutMs }));
      }
      const def = definitions.read(vm);
      if (!def)
        throw new UsageError(
          `no VM named '${vm}': it is neither running nor defined in ${definitions.root} (see 'mq-hotplug vms')`,
        );
      const host = new LinuxHost();
      const applied = applyDefinition(def, wanted, { host, network: new LinuxBridge(host) }, { dryRun: o.dryRun });
      if (!o.dryRun) definitions.write(applied.definition);
      return applied.result;
    });
  }
  if (o.json) return printJson(result);
  const what = (verb: string, ids: string[]) => (ids.length ? [`${verb} ${ids.join(', ')}`] : []);
  const lines = [
    ...what('removed', result.removed),
    ...what('replaced', result.replaced),
    ...what('updated', result.updated),
    ...what('added', result.added),
  ];
  const where = result.definitionOnly ? ` (${vm} is not running: its definition only)` : '';
  const prefix = result.dryRun ? 'dry run, would have: ' : '';
  writeOut(
    lines.length ? `${prefix}${lines.join('; ')}${where}\n` : `no change: ${vm} has exactly these NICs${where}\n`,
  );
}

function safeRecord(store: StateStore, vm: string): VmRecord | undefined {
  try {
    return store.read(vm);
  } catch {
    return undefined;
  }
}

export async function stop(vm: string, o: { timeout: string; json?: boolean }, g: GlobalOptions): Promise<void> {
  checkVmName(vm);
  const { stopVm } = await launcher();
  const result = await stopVm(storeOf(g), vm, seconds(o.timeout, 'timeout'));
  if (o.json) return printJson(result);
  writeOut(
    result.how === 'already-dead'
      ? `${vm} was already dead; its state is cleaned up\n`
      : `stopped ${vm}${result.how === 'quit' ? '' : ` (${result.how} after quit failed)`}\n`,
  );
}

export async function vms(o: { json?: boolean }, g: GlobalOptions): Promise<void> {
  const store = storeOf(g);
  const definitions = definitionsOf(g);
  interface Row {
    name: string;
    pid: number | null;
    state: string;
    spec: Pick<VmRecord['spec'], 'machine' | 'cpus' | 'memory'> & { accel: string };
    nics: number;
    qmp: string | null;
    defined: boolean;
  }
  const defined = new Set<string>();
  for (const name of definitions.list()) {
    try {
      if (definitions.read(name)) defined.add(name);
    } catch (e) {
      note((e as Error).message);
    }
  }
  const rows: Row[] = [];
  for (const name of store.list()) {
    let record: VmRecord | undefined;
    try {
      record = store.read(name);
    } catch (e) {
      note((e as Error).message);
      continue;
    }
    if (record) {
      const state = await (await launcher()).vmState(record);
      rows.push({
        name,
        pid: record.pid,
        state,
        spec: record.spec,
        nics: record.nics.length,
        qmp: record.qmp,
        defined: defined.has(name),
      });
    }
  }
  for (const name of defined) {
    if (rows.some((r) => r.name === name)) continue; // running, or dead with stale state to clean up
    const def = definitions.read(name)!;
    rows.push({ name, pid: null, state: 'stopped', spec: def.spec, nics: def.nics.length, qmp: null, defined: true });
  }
  rows.sort((a, b) => a.name.localeCompare(b.name));
  if (o.json)
    return printJson(
      rows.map((r) => ({
        name: r.name,
        pid: r.pid,
        state: r.state,
        machine: r.spec.machine,
        cpus: r.spec.cpus,
        memory: r.spec.memory,
        accel: r.spec.accel,
        nics: r.nics,
        qmp: r.qmp,
        defined: r.defined,
      })),
    );
  writeOut(
    table(
      ['NAME', 'PID', 'STATE', 'MACHINE', 'CPUS', 'MEMORY', 'ACCEL', 'NICS', 'DEFINED'],
      rows.map((r) => [
        r.name,
        r.pid,
        r.state,
        r.spec.machine,
        r.spec.cpus,
        r.spec.memory,
        r.spec.accel,
        r.nics,
        r.defined ? 'yes' : 'no',
      ]),
    ),
  );
}

export async function doctor(o: { json?: boolean; qemu: string }): Promise<void> {
  type Check = { check: string; status: 'ok' | 'warn' | 'fail'; detail: string };
  const checks: Check[] = [];
  try {
    checks.push({ check: 'qemu', status: 'ok', detail: `${o.qemu}: ${await (await launcher()).qemuVersion(o.qemu)}` });
  } catch {
    checks.push({ check: 'qemu', status: 'fail', detail: `${o.qemu} not found (apt-get install qemu-system-x86)` });
  }
  let tun = false;
  try {
    fs.accessSync('/dev/net/tun', fs.constants.R_OK | fs.constants.W_OK);
    tun = true;
  } catch {}
  checks.push({
    check: '/dev/net/tun',
    status: tun ? 'ok' : 'fail',
    detail: tun ? 'usable' : 'missing or not accessible: taps cannot be made',
  });
  const vhost = vhostNetUsable();
  checks.push({
    check: '/dev/vhost-net',
    status: vhost ? 'ok' : 'warn',
    detail: vhost ? 'usable: --vhost auto turns vhost on' : 'missing: NICs run without vhost (--vhost on is refused)',
  });
  const kvm = checkKvm();
  checks.push({
    check: 'kvm',
    status: kvm.usable ? 'ok' : 'warn',
    detail: `${kvm.reason}; --accel auto picks ${resolveAccel('auto').accel}`,
  });
  try {
    const bridges = (JSON.parse(await ip(['-j', 'link', 'show', 'type', 'bridge'])) as { ifname: string }[]).map(
      (b) => b.ifname,
    );
    checks.push({ check: 'ip', status: 'ok', detail: 'iproute2 found' });
    checks.push({
      check: 'bridges',
      status: bridges.length ? 'ok' : 'warn',
      detail: bridges.length ? bridges.join(', ') : 'none (create one: ip link add br0 type bridge)',
    });
  } catch (e) {
    checks.push({ check: 'ip', status: 'fail', detail: (e as Error).message });
  }
  if (o.json) printJson(checks);
  else writeOut(checks.map((c) => `${c.status.padEnd(4)}  ${c.check.padEnd(14)}  ${c.detail}`).join('\n') + '\n');
  if (checks.some((c) => c.status === 'fail')) process.exitCode = 1;
}

export async function qmp(vm: string, command: string, argsJson: string | undefined, g: GlobalOptions): Promise<void> {
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
  await withController(vm, g, async (c) => {
    try {
      printJson(await c.qmp.execute(command, args));
    } catch (e) {
      if (e instanceof QmpCommandError) throw new Error(`${e.errorClass}: ${e.desc}`, { cause: e });
      throw e;
    }
  });
}

export async function add(
  vm: string,
  o: Record<string, string | boolean | undefined>,
  g: GlobalOptions,
): Promise<void> {
  const waitGuestMs =
    o.waitGuest === undefined ? undefined : o.waitGuest === true ? 30_000 : seconds(String(o.waitGuest), 'guest wait');
  const request: AddRequest = {
    queues: String(o.queues),
    bridge: o.bridge === false ? null : (o.bridge as string | undefined),
    ifname: o.ifname as string | undefined,
    mac: o.mac as string | undefined,
    id: o.id as string | undefined,
    vhost: o.vhost as 'auto' | 'on' | 'off',
    guestMtu: o.mtu as string | undefined,
    rate: o.rate as string | undefined,
    waitGuestMs,
    persist: o.transient !== true,
  };
  if (o.dryRun === true) {
    const { notes, ...plan } = await withController(vm, g, (c) => c.planNic(request));
    for (const n of notes) note(n);
    if (o.json) return printJson({ dryRun: true, ...plan, notes });
    writeOut(`dry run: nothing changed. Would send:\n`);
    for (const cmd of plan.commands) writeOut(`  ${JSON.stringify(cmd)}\n`);
    writeOut(`then run:\n${plan.hostCommands.map((c) => `  ${c.join(' ')}\n`).join('')}`);
    return;
  }
  const r = await withController(vm, g, (c) => c.addNic(request));
  for (const n of r.notes) note(n);
  // one rule in both modes: asked to wait for the guest, an add the guest did not take exits 1
  if (r.guestReady === false) process.exitCode = 1;
  if (o.json)
    return printJson({
      ...r,
      timings: Object.fromEntries(Object.entries(r.timings).map(([k, v]) => [k, Math.round(v * 100) / 100])),
    });
  writeOut(
    `added ${r.id} to ${vm}: ${r.queues} queues, tap ${r.tap} ${r.bridge ? `on ${r.bridge}` : '(no bridge)'} up, ` +
      `mac ${r.mac}, vectors ${r.vectors}, vhost ${r.vhost ? 'on' : 'off'}, bus ${r.bus}` +
      `${r.tapMtu ? `, mtu ${r.tapMtu}` : ''}${r.guestMtu && r.guestMtu !== r.tapMtu ? ` (guest ${r.guestMtu})` : ''}${r.rate ? `, rate ${r.rate} Mbit/s` : ''}\n`,
  );
  if (r.guestReady !== undefined) {
    const link = r.guestLinkUp ? 'link up' : 'link not up yet (the guest has no network configuration for it?)';
    writeOut(
      r.guestReady
        ? `guest driver took ${r.id} after ${Math.round(r.timings.guestWait ?? 0)} ms: ${r.activeQueues ?? '?'} of ${r.queues} queue pairs active, ${link}\n`
        : `guest driver did not take ${r.id} within the wait; ${r.activeQueues ?? '?'} queue pairs active\n`,
    );
  }
}

export async function remove(
  vm: string,
  nic: string,
  o: { timeout: string; json?: boolean; transient?: boolean },
  g: GlobalOptions,
): Promise<void> {
  const timeoutMs = seconds(o.timeout, 'timeout');
  const r = await withController(vm, g, (c) => c.removeNic(nic, timeoutMs, { persist: o.transient !== true }));
  if (o.json) return printJson({ ...r, unplugMs: Math.round(r.unplugMs) });
  writeOut(
    `removed ${r.id} from ${vm} (DEVICE_DELETED after ${Math.round(r.unplugMs)} ms; netdev ${r.netdev} and tap ${r.tap ?? '?'} gone)\n`,
  );
}

export async function nics(vm: string, o: { json?: boolean }, g: GlobalOptions): Promise<void> {
  const views = await withController(vm, g, (c) => c.listNics());
  if (o.json) return printJson(views);
  writeOut(
    table(
      [
        'ID',
        'MAC',
        'TAP',
        'QUEUES',
        'ACTIVE',
        'VECTORS',
        'MQ',
        'VHOST',
        'BRIDGE',
        'MTU',
        'RATE',
        'LINK',
        'STATE',
        'DRIFT',
      ],
      views.map((n) => [
        n.id,
        n.mac,
        n.tap,
        n.queues,
        n.activeQueues === null ? null : `${n.activeQueues}/${n.activeQueues + (n.disabledQueues ?? 0)}`,
        n.vectors,
        n.mq === null ? null : n.mq ? 'on' : 'off',
        n.vhost === null ? null : n.vhost ? 'on' : 'off',
        n.bridge,
        n.tapMtu === null
          ? null
          : n.guestMtu && n.guestMtu !== n.tapMtu
            ? `${n.tapMtu} (guest ${n.guestMtu})`
            : n.tapMtu,
        n.rate === null ? null : `${n.rate}M`,
        n.linkUp === null ? null : n.linkUp ? 'up' : 'down',
        n.state,
        n.drift.join('; '),
      ]),
    ),
  );
}
