/**
 * `npm run bench`: hot-plug speed, as ratios against a baseline measured in the same run,
 * interleaved sample by sample (this machine is shared and noisy: absolute times wander, ratios
 * hold). Prints a table of medians and p95s; writes every raw sample to bench-results.json.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { Controller } from '../src/hotplug/controller.js';
import type { AddResult } from '../src/hotplug/add/transaction.js';
import { stopVm } from '../src/qemu/launcher.js';
import { StateStore, type VmRecord } from '../src/qemu/state.js';
import { pollUntil } from '../src/util/time.js';
import {
  CLI,
  PREFIX,
  QEMU,
  ROOT,
  cleanupAll,
  makeBridge,
  smallVm,
  tempDir,
  until,
  vmName,
} from '../test/helpers/env.js';
import { Guest, guestImage } from '../test/helpers/guest.js';
import { startOvs } from '../test/helpers/ovs.js';
import { RawQmp } from './bench/raw-qmp.js';
import { type Libvirt, setupLibvirt } from './bench/libvirt.js';

const run = promisify(execFile);
const SEA = path.join(ROOT, 'build/sea/mq-hotplug');
const samples: Record<string, number[]> = {};
const record = (name: string, ms: number) => (samples[name] ??= []).push(ms);
const quick = process.env.BENCH_QUICK === '1';
/** BENCH_ONLY=start,cli: only those figures (by the names in the run's progress lines' first word). */
const only = process.env.BENCH_ONLY?.split(',');
const wanted = (figure: string) => !only || only.includes(figure);
const ROUNDS = {
  k1: quick ? 5 : 20,
  k8: quick ? 2 : 5,
  k28: quick ? 2 : 20,
  cli: quick ? 5 : 20,
  parallel: quick ? 2 : 5,
  remove: quick ? 5 : 12,
  apply: quick ? 2 : 8,
  ovs: quick ? 2 : 6,
};

const store = new StateStore(tempDir('bench'));
/** The host agent's own state directory (every CLI call on a directory with an agent goes through it). */
const agentStore = new StateStore(tempDir('bench-agent'));
let vmCount = 0;
/** A VM for the library: its QEMU as its own user, its taps made and owned by mq-hotplug. */
const freshVm = (bridge: string): Promise<VmRecord> => smallVm(store, vmName(`b${vmCount++}`), bridge);
/**
 * A VM for the raw baseline: QEMU as root makes each tap from netdev_add's ifname (no owner), as
 * an operator's script does and as mq-hotplug did before its taps had owners.
 */
const baselineVm = (bridge: string): Promise<VmRecord> =>
  smallVm(store, vmName(`r${vmCount++}`), bridge, { runAs: 'root' });
const time = async <T>(fn: () => Promise<T>): Promise<[number, T]> => {
  const t = performance.now();
  const v = await fn();
  return [performance.now() - t, v];
};

/** K NICs into one fresh VM per side, baseline and library interleaved NIC by NIC, `rounds` times. */
async function perNic(k: number, rounds: number, bridge: string): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const [baseVm, libVm] = [await baselineVm(bridge), await freshVm(bridge)];
    const raw = await RawQmp.connect(baseVm.qmp);
    const lib = await Controller.open({ name: libVm.name, store });
    let baseTotal = 0;
    let libTotal = 0;
    for (let i = 0; i < k; i++) {
      const baseFirst = (round + i) % 2 === 0; // alternate who goes first
      const doBase = async () => {
        const [ms] = await time(() => raw.addNic(i, `${baseVm.name}r${i}`.slice(0, 15), bridge));
        record(`baseline K=${k}`, ms);
        baseTotal += ms;
      };
      const doLib = async () => {
        const [ms, r] = await time(() => lib.addNic({ queues: 8 }));
        record(`library K=${k}`, ms);
        libTotal += ms;
        const t = (r as AddResult).timings;
        for (const step of ['preflight', 'tap', 'plug', 'bridging', 'confirm'] as const)
          record(`library step: ${step}`, t[step]);
      };
      if (baseFirst) await doBase().then(doLib);
      else await doLib().then(doBase);
    }
    if (k === 28) {
      record('baseline total 28 NICs', baseTotal);
      record('library total 28 NICs', libTotal);
    }
    raw.close();
    await lib.close();
    await stopVm(store, baseVm.name);
    await stopVm(store, libVm.name);
  }
}

/**
 * A new `mq-hotplug add` process per NIC, against `node -e 0` and libvirt's `virsh attach-device`
 * (also a new process per NIC), interleaved; and the CLI's cold start.
 */
async function cliFigures(bridge: string, libvirt: Libvirt | undefined): Promise<void> {
  const vm = await freshVm(bridge);
  // the CLI through a host agent: a VM of the agent's directory
  const viaAgent = await smallVm(agentStore, vmName(`g${vmCount++}`), bridge);
  const agentEnv = { ...process.env, MQ_HOTPLUG_STATE_DIR: agentStore.root };
  const agent = await startAgent(agentEnv);
  // the single executable (npm run build:sea), where it was built: its own VM, as slots are counted
  const sea = fs.existsSync(SEA) ? await freshVm(bridge) : undefined;
  const raw = await baselineVm(bridge);
  const rawQmp = await RawQmp.connect(raw.qmp);
  const env = { ...process.env, MQ_HOTPLUG_STATE_DIR: store.root };
  for (let i = 0; i < ROUNDS.cli; i++) {
    record('node -e 0', (await time(() => run(process.execPath, ['-e', '0'])))[0]);
    record('cli --version', (await time(() => run(process.execPath, [CLI, '--version'])))[0]);
    record(
      'cli add (new process per NIC)',
      (await time(() => run(process.execPath, [CLI, 'add', vm.name, '--queues', '8'], { env })))[0],
    );
    record('baseline (CLI rounds)', (await time(() => rawQmp.addNic(i, `${raw.name}r${i}`, bridge)))[0]);
    record(
      'cli add through the agent',
      (await time(() => run(process.execPath, [CLI, 'add', viaAgent.name, '--queues', '8'], { env: agentEnv })))[0],
    );
    if (sea) {
      record('sea --version', (await time(() => run(SEA, ['--version'])))[0]);
      record(
        'sea add (new process per NIC)',
        (await time(() => run(SEA, ['add', sea.name, '--queues', '8'], { env })))[0],
      );
    }
    if (libvirt) record('virsh attach-device (new process per NIC)', (await time(() => libvirt.attach()))[0]);
  }
  rawQmp.close();
  await agent.stop();
  await stopVm(agentStore, viaAgent.name);
  for (const v of [vm, sea, raw]) if (v) await stopVm(store, v.name);
}

/**
 * `mq-hotplug start` of a defined VM with K saved 4-queue bridged NICs (a new process, as an
 * operator or the agent at boot runs it), against a raw start of the same QEMU with the same NICs on
 * its command line: spawn, QMP greeting, qmp_capabilities, one `ip -batch` attaching every tap.
 */
async function startFigure(bridge: string, k: number): Promise<void> {
  const config = `${store.root}-config`;
  const env = { ...process.env, MQ_HOTPLUG_STATE_DIR: store.root, MQ_HOTPLUG_CONFIG_DIR: config };
  const vm = vmName(`s${vmCount++}`);
  const cliRun = (...args: string[]) => run(process.execPath, [CLI, ...args], { env });
  await cliRun('start', vm, '--memory', '128M', '--accel', 'tcg', '--hotplug-slots', '0', '--bridge', bridge);
  const spec = `${tempDir('start')}/nics.json`;
  fs.writeFileSync(spec, JSON.stringify({ nics: Array.from({ length: k }, (_, i) => ({ id: `s${i}`, queues: 4 })) }));
  await cliRun('apply', vm, '-f', spec);
  await cliRun('stop', vm);
  const rawName = vmName(`w${vmCount++}`);
  const dir = tempDir('rawstart');
  for (let round = 0; round < (quick ? 2 : 8); round++) {
    const ours = async () => {
      record('node -e 0 (start rounds)', (await time(() => run(process.execPath, ['-e', '0'])))[0]);
      record(`cli start, ${k} saved NICs`, (await time(() => cliRun('start', vm)))[0]);
      await cliRun('stop', vm);
    };
    const raw = async () => {
      const sock = `${dir}/qmp${round}.sock`;
      const taps = Array.from({ length: k }, (_, i) => `${rawName}r${i}`);
      const nics = taps.flatMap((tap, i) => [
        '-netdev',
        `tap,id=nd${i},ifname=${tap},script=no,downscript=no,vhost=off,queues=4`,
        '-device',
        `virtio-net-pci,netdev=nd${i},id=s${i},mac=52:54:00:00:01:${i.toString(16).padStart(2, '0')},mq=on,vectors=10,bus=pci.0,addr=0x${(i + 3).toString(16)}`,
      ]);
      const argv = [
        ...[
          '-machine',
          'pc,accel=tcg',
          '-smp',
          '2',
          '-m',
          '128M',
          '-nodefaults',
          '-no-user-config',
          '-display',
          'none',
        ],
        ...['-qmp', `unix:${sock},server=on,wait=off`, ...nics],
      ];
      let qemu: ReturnType<typeof spawn> | undefined;
      const [ms] = await time(async () => {
        qemu = spawn(QEMU, argv, { stdio: 'ignore' });
        await pollUntil(() => fs.existsSync(sock), 30_000, 1);
        const qmp = await RawQmp.connect(sock);
        const batch = spawn('ip', ['-batch', '-'], { stdio: ['pipe', 'ignore', 'inherit'] });
        batch.stdin!.end(taps.map((t) => `link set dev ${t} master ${bridge} up\n`).join(''));
        await new Promise((resolve) => batch.once('exit', resolve));
        qmp.close();
      });
      record(`raw command-line start, ${k} NICs`, ms);
      const exited = new Promise((resolve) => qemu!.once('exit', resolve));
      qemu!.kill('SIGTERM');
      await exited;
    };
    if (round % 2) await ours().then(raw);
    else await raw().then(ours);
  }
  await cliRun('undefine', vm);
}

/** `mq-hotplug agent` (no VM, or `vm` for today's per-VM agent) on a state directory; stopped by SIGTERM. */
async function startAgent(env: NodeJS.ProcessEnv, vm?: string) {
  const child = spawn(
    process.execPath,
    [CLI, 'agent', ...(vm ? [vm] : ['--metrics', `${env.MQ_HOTPLUG_STATE_DIR}/m.sock`])],
    {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  );
  let said = '';
  child.stderr!.on('data', (d: Buffer) => (said += d.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await until(() => said.includes(vm ? `watching ${vm}` : 'agent: serving'), 'the agent up', 20_000);
  return {
    pid: child.pid!,
    said: () => said,
    /** VmRSS, kB */
    rss: () => Number(/^VmRSS:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1]),
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** The share of one core a process used over `ms` (utime + stime from /proc, in clock ticks of 10 ms). */
async function cpuShare(pid: number, ms: number): Promise<number> {
  const ticks = () => {
    const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(fields[11]) + Number(fields[12]); // utime, stime (fields 14 and 15 of stat)
  };
  const [t0, c0] = [performance.now(), ticks()];
  await new Promise((r) => setTimeout(r, ms));
  return ((ticks() - c0) * 10 * 100) / (performance.now() - t0);
}

/** Median RSS over samples 250 ms apart, once the agent has settled (GC, its first checks). */
async function settledRss(rss: () => number): Promise<number> {
  await new Promise((r) => setTimeout(r, 3000));
  const kb: number[] = [];
  for (let i = 0; i < 8; i++) {
    kb.push(rss());
    await new Promise((r) => setTimeout(r, 250));
  }
  return stats(kb).median / 1024;
}

/**
 * One host agent watching FLEET VMs against today's agent (`agent VM`) watching one: memory (MB,
 * recorded as the samples' figure), and how long a tap knocked off its bridge in any of the VMs
 * stays off (ip link set nomaster, then sysfs polled every ms until it is back).
 */
async function agentFigures(bridge: string): Promise<void> {
  const fleet = quick ? 10 : 50;
  const env = { ...process.env, MQ_HOTPLUG_STATE_DIR: agentStore.root };
  const vms: string[] = [];
  for (let i = 0; i < fleet; i++) {
    const vm = await smallVm(agentStore, vmName(`f${vmCount++}`), bridge);
    const c = await Controller.open({ name: vm.name, store: agentStore });
    await c.addNic({ queues: 4 });
    await c.close();
    vms.push(vm.name);
  }
  const one = await startAgent(env, vms[0]);
  record("today's agent, one VM (MB)", await settledRss(one.rss));
  await one.stop();
  const agent = await startAgent(env);
  await until(() => vms.every((vm) => agent.said().includes(`agent: watching ${vm} `)), 'every VM followed', 60_000);
  record(`host agent, ${fleet} VMs (MB)`, await settledRss(agent.rss));
  // its CPU while nothing changes: the scans, event-log tails, link monitor, and each VM's check every 5 s (the default)
  const idle = await cpuShare(agent.pid, quick ? 5000 : 20_000);
  record(`host agent idle CPU, ${fleet} VMs (% of a core)`, idle);
  for (let round = 0; round < (quick ? 10 : 40); round++) {
    const vm = vms[(round * 7) % vms.length]!;
    const tap = agentStore.read(vm)!.nics[0]!.tap;
    const master = `/sys/class/net/${tap}/master`;
    const t = performance.now();
    await run('ip', ['link', 'set', 'dev', tap, 'nomaster']);
    if (!(await pollUntil(() => fs.existsSync(master), 30_000, 1))) throw new Error(`${tap}: not put right in 30 s`);
    record(`drift repaired, ${fleet} VMs`, performance.now() - t);
    await new Promise((r) => setTimeout(r, 100));
  }
  await agent.stop();
  for (const vm of vms) await stopVm(agentStore, vm);
}

/**
 * One `mq-hotplug apply` process putting 28 bridged 8-queue NICs into a fresh VM, against the raw
 * baseline's 28 adds into another, interleaved round by round with `node -e 0` (apply's share
 * beyond Node's own start is what the target is about).
 */
async function applyFigure(bridge: string): Promise<void> {
  const spec = `${tempDir('apply')}/nics.json`;
  fs.writeFileSync(
    spec,
    JSON.stringify({ nics: Array.from({ length: 28 }, (_, i) => ({ id: `a${i}`, queues: 8, bridge })) }),
  );
  const env = { ...process.env, MQ_HOTPLUG_STATE_DIR: store.root, MQ_HOTPLUG_CONFIG_DIR: `${store.root}-config` };
  for (let round = 0; round < ROUNDS.apply; round++) {
    const [baseVm, applyVm] = [await baselineVm(bridge), await freshVm(bridge)];
    const raw = await RawQmp.connect(baseVm.qmp);
    const doBase = async () => {
      const [ms] = await time(async () => {
        for (let i = 0; i < 28; i++) await raw.addNic(i, `${baseVm.name}r${i}`.slice(0, 15), bridge);
      });
      record('baseline 28 adds (apply rounds)', ms);
    };
    const doApply = async () => {
      record('node -e 0 (apply rounds)', (await time(() => run(process.execPath, ['-e', '0'])))[0]);
      record(
        'cli apply 28 NICs',
        (await time(() => run(process.execPath, [CLI, 'apply', applyVm.name, '-f', spec], { env })))[0],
      );
    };
    if (round % 2) await doApply().then(doBase);
    else await doBase().then(doApply);
    raw.close();
    await stopVm(store, baseVm.name);
    await stopVm(store, applyVm.name);
  }
}

/** 4 VMs, 8 NICs each, all VMs at once: wall time, baseline vs library. */
async function parallel(bridge: string): Promise<void> {
  for (let round = 0; round < ROUNDS.parallel; round++) {
    for (const side of round % 2 ? ['library', 'baseline'] : ['baseline', 'library']) {
      const vms = await Promise.all([0, 1, 2, 3].map(() => (side === 'baseline' ? baselineVm : freshVm)(bridge)));
      const [ms] = await time(() =>
        Promise.all(
          vms.map(async (vm) => {
            if (side === 'baseline') {
              const raw = await RawQmp.connect(vm.qmp);
              for (let i = 0; i < 8; i++) await raw.addNic(i, `${vm.name}r${i}`, bridge);
              raw.close();
            } else {
              const lib = await Controller.open({ name: vm.name, store });
              for (let i = 0; i < 8; i++) await lib.addNic({ queues: 8 });
              await lib.close();
            }
          }),
        ),
      );
      record(`${side} 4 VMs x 8 NICs in parallel`, ms);
      await Promise.all(vms.map((vm) => stopVm(store, vm.name)));
    }
  }
}

/** remove with a guest: device_del to DEVICE_DELETED, and the whole remove. */
async function removeWithGuest(bridge: string): Promise<void> {
  await guestImage();
  const name = vmName('bgst');
  const guest = await Guest.boot({ name, stateDir: store.root, cpus: 2, machine: 'pc', bridge });
  const vm = await Controller.open({ name, store });
  try {
    for (let i = 0; i < ROUNDS.remove; i++) {
      const nic = (await vm.addNic({ queues: 8 })) as AddResult;
      await guest.waitFor(() => guest.nics.get(nic.mac), 'the NIC');
      const [ms, r] = await time(() => vm.removeNic(nic.id));
      record('remove with guest: whole remove', ms);
      record('remove with guest: device_del to DEVICE_DELETED', r.unplugMs);
      await guest.waitFor(() => !guest.nics.has(nic.mac), 'the NIC gone');
    }
  } finally {
    await vm.close();
    await guest.stop();
  }
}

/**
 * The same library add onto an Open vSwitch bridge (this run's own OVS, userspace datapath, spoken
 * to over OVSDB) and onto a Linux bridge, interleaved NIC by NIC: 8 NICs per VM, `rounds` times.
 */
async function ovsFigure(linuxBridge: string, rounds: number): Promise<void> {
  const ovs = await startOvs();
  const saved = process.env.OVS_RUNDIR;
  process.env.OVS_RUNDIR = ovs.dir; // the library finds this OVS as ovs-vsctl would
  try {
    const ovsBridge = await ovs.addBridge();
    for (let round = 0; round < rounds; round++) {
      const [linuxVm, ovsVm] = [await freshVm(linuxBridge), await freshVm(ovsBridge)];
      const [linux, onOvs] = [
        await Controller.open({ name: linuxVm.name, store }),
        await Controller.open({ name: ovsVm.name, store }),
      ];
      for (let i = 0; i < 8; i++) {
        const doLinux = async () =>
          record('Linux bridge K=8 (OVS rounds)', (await time(() => linux.addNic({ queues: 8 })))[0]);
        const doOvs = async () =>
          record('OVS bridge K=8, --vlan', (await time(() => onOvs.addNic({ queues: 8, vlan: 10 + i })))[0]);
        if ((round + i) % 2 === 0) await doLinux().then(doOvs);
        else await doOvs().then(doLinux);
      }
      await linux.close();
      await onOvs.close();
      await stopVm(store, linuxVm.name);
      await stopVm(store, ovsVm.name);
    }
  } finally {
    if (saved === undefined) delete process.env.OVS_RUNDIR;
    else process.env.OVS_RUNDIR = saved;
    ovs.stop();
  }
}

function stats(values: number[]): { n: number; median: number; p95: number } {
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
  return { n: sorted.length, median: at(0.5), p95: at(0.95) };
}

function report(): void {
  const rows: [string, string, string][] = [
    ['library K=1', 'baseline K=1', 'per NIC, K=1'],
    ['library K=8', 'baseline K=8', 'per NIC, K=8'],
    ['library K=28', 'baseline K=28', 'per NIC, K=28'],
    ['library total 28 NICs', 'baseline total 28 NICs', '28 NICs into one VM, total'],
    ['OVS bridge K=8, --vlan', 'Linux bridge K=8 (OVS rounds)', 'add onto OVS (VLAN) vs Linux bridge'],
    ['library 4 VMs x 8 NICs in parallel', 'baseline 4 VMs x 8 NICs in parallel', '4 VMs x 8 NICs in parallel, wall'],
    ['library step: preflight', 'baseline K=8', 'step: preflight'],
    ['library step: tap', 'baseline K=8', 'step: tap (made, owned, marked)'],
    ['library step: plug', 'baseline K=8', 'step: netdev_add+device_add'],
    ['library step: bridging', 'baseline K=8', 'step: bridging (ip)'],
    ['library step: confirm', 'baseline K=8', 'step: confirm (qom-get)'],
    ['cli add (new process per NIC)', 'baseline K=8', 'CLI add, new process per NIC'],
    ['virsh attach-device (new process per NIC)', 'baseline K=8', 'virsh attach-device, per process'],
    ['cli add (new process per NIC)', 'virsh attach-device (new process per NIC)', 'CLI add vs virsh, per process'],
    ['cli --version', 'node -e 0', 'CLI cold start (--version)'],
    ['sea add (new process per NIC)', 'cli add (new process per NIC)', 'single executable add vs CLI'],
    ['sea --version', 'node -e 0', 'single executable --version'],
    ['cli apply 28 NICs', 'baseline 28 adds (apply rounds)', 'CLI apply of 28 NICs (whole process)'],
    ['cli add through the agent', 'cli add (new process per NIC)', 'CLI add through the agent vs alone'],
    ['cli start, 28 saved NICs', 'raw command-line start, 28 NICs', 'start, 28 saved NICs (CLI process)'],
    [
      'remove with guest: device_del to DEVICE_DELETED',
      'remove with guest: whole remove',
      'remove w/ guest: DEVICE_DELETED',
    ],
  ];
  const line = (cells: string[]) =>
    console.log(cells.map((c, i) => (i === 0 ? c.padEnd(36) : c.padStart(11))).join(' '));
  line(['figure', 'n', 'median ms', 'p95 ms', 'ref median', 'ratio']);
  for (const [name, ref, label] of rows) {
    if (!samples[name] || !samples[ref]) continue;
    const s = stats(samples[name]!);
    const r = stats(samples[ref]!);
    line([
      label,
      String(s.n),
      s.median.toFixed(2),
      s.p95.toFixed(2),
      r.median.toFixed(2),
      `${(s.median / r.median).toFixed(2)}x`,
    ]);
  }
  if (samples['cli apply 28 NICs']) {
    const beyond = stats(samples['cli apply 28 NICs']!).median - stats(samples['node -e 0 (apply rounds)']!).median;
    const base = stats(samples['baseline 28 adds (apply rounds)']!).median;
    console.log(
      `apply of 28 NICs beyond 'node -e 0': ${beyond.toFixed(1)} ms; raw 28 adds: ${base.toFixed(1)} ms; ratio ${(beyond / base).toFixed(2)}x`,
    );
  }
  const beyondNode = (name: string) => stats(samples[name]!).median - stats(samples['node -e 0']!).median;
  const rawAdd = samples['baseline (CLI rounds)'] ? stats(samples['baseline (CLI rounds)']).median : NaN;
  if (samples['cli --version'])
    console.log(`\nCLI start-up beyond 'node -e 0': ${beyondNode('cli --version').toFixed(1)} ms (median difference)`);
  for (const [name, label] of [
    ['cli add (new process per NIC)', 'CLI add'],
    ['sea add (new process per NIC)', 'single executable add'],
  ] as const) {
    if (!samples[name]) continue;
    console.log(
      `${label} beyond 'node -e 0': ${beyondNode(name).toFixed(1)} ms; raw add in the same rounds: ` +
        `${rawAdd.toFixed(1)} ms; ratio ${(beyondNode(name) / rawAdd).toFixed(2)}x`,
    );
  }
  if (samples['cli add through the agent'])
    console.log(
      `CLI add through the agent beyond 'node -e 0': ${beyondNode('cli add through the agent').toFixed(1)} ms; ` +
        `ratio ${(beyondNode('cli add through the agent') / rawAdd).toFixed(2)}x the raw add (target 1.3x)`,
    );
  if (samples['cli start, 28 saved NICs']) {
    const beyond =
      stats(samples['cli start, 28 saved NICs']!).median - stats(samples['node -e 0 (start rounds)']!).median;
    const raw = stats(samples['raw command-line start, 28 NICs']!).median;
    console.log(
      `start of a defined VM with 28 saved NICs beyond 'node -e 0': ${beyond.toFixed(1)} ms; raw command-line start: ` +
        `${raw.toFixed(1)} ms; ratio ${(beyond / raw).toFixed(2)}x (target 1.3x)`,
    );
  }
  const fleetMb = Object.keys(samples).find((k) => k.startsWith('host agent, '));
  if (fleetMb && samples["today's agent, one VM (MB)"]) {
    const [many, one] = [stats(samples[fleetMb]!).median, stats(samples["today's agent, one VM (MB)"]!).median];
    console.log(
      `${fleetMb.replace(' (MB)', '')}: ${many.toFixed(1)} MB; today's agent, one VM: ${one.toFixed(1)} MB; ratio ${(many / one).toFixed(2)}x (target 1.5x)`,
    );
  }
  const cpu = Object.keys(samples).find((k) => k.startsWith('host agent idle CPU'));
  if (cpu) console.log(`${cpu.replace(' (% of a core)', '')}: ${stats(samples[cpu]!).median.toFixed(2)}% of one core`);
  const drift = Object.keys(samples).find((k) => k.startsWith('drift repaired'));
  if (drift) {
    const d = stats(samples[drift]!);
    console.log(
      `${drift}: median ${d.median.toFixed(1)} ms, p95 ${d.p95.toFixed(1)} ms over ${d.n} (target: median 1000 ms)`,
    );
  }
  if (samples['sea --version'])
    console.log(`single executable start-up beyond 'node -e 0': ${beyondNode('sea --version').toFixed(1)} ms`);
  console.log(
    'ratios: median of the figure / median of its reference in this run (baseline = raw QMP client, sequential, + one ip exec).',
  );
  console.log("step rows use the baseline's per-NIC K=8 median as reference (a share of one whole baseline add).");
}

/** The CLI figures, with libvirt's virsh beside them where it can be set up (BENCH_LIBVIRT=0: not). */
async function cliRounds(bridge: string): Promise<void> {
  let libvirt: Libvirt | undefined;
  if (process.env.BENCH_LIBVIRT !== '0') {
    const setup = await setupLibvirt(tempDir('libvirt'), bridge, `${PREFIX}lv`);
    if (typeof setup === 'string') console.log(setup);
    else libvirt = setup;
  }
  try {
    await cliFigures(bridge, libvirt);
  } finally {
    await libvirt?.teardown();
  }
}

try {
  const bridge = await makeBridge();
  console.log(`bench: QEMU ${QEMU}, pc, no guest (except remove); ${quick ? 'quick' : 'full'} run`);
  const progress = (what: string) => console.error(`bench: ${what} ...`);
  const figures: [name: string, what: string, run: () => Promise<void>][] = [
    ['k1', 'per NIC, K=1', () => perNic(1, ROUNDS.k1, bridge)],
    ['k8', 'per NIC, K=8', () => perNic(8, ROUNDS.k8, bridge)],
    ['k28', 'per NIC, K=28', () => perNic(28, ROUNDS.k28, bridge)],
    ['ovs', 'OVS bridge vs Linux bridge', () => ovsFigure(bridge, ROUNDS.ovs)],
    ['apply', 'apply of 28 NICs', () => applyFigure(bridge)],
    ['cli', 'CLI per process', () => cliRounds(bridge)],
    ['start', 'start of a defined VM', () => startFigure(bridge, 28)],
    ['agent', 'host agent: memory, drift', () => agentFigures(bridge)],
    ['parallel', '4 VMs in parallel', () => parallel(bridge)],
    ['remove', 'remove with a guest', () => removeWithGuest(bridge)],
  ];
  for (const [name, what, runFigure] of figures) {
    if (!wanted(name)) continue;
    progress(what);
    await runFigure();
  }
  report();
  fs.writeFileSync('bench-results.json', JSON.stringify({ date: new Date().toISOString(), samples }, null, 1));
  console.log('raw samples: bench-results.json');
} catch (e) {
  console.error(`bench failed: ${(e as Error).stack}`);
  process.exitCode = 1;
} finally {
  for (const s of [store, agentStore]) for (const name of s.list()) await stopVm(s, name).catch(() => {});
  cleanupAll();
}
