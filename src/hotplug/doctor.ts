/**
 * What `doctor` checks on the host: QEMU, /dev/net/tun, vhost-net, KVM, ip and the bridges, Open vSwitch, and
 * what a VM's own user (a uid that owns nothing, in no group: what `start` makes) can open of
 * them, and the tools that make such a user and start QEMU as it. Each probe says ok, warn or fail
 * with one line of detail; a fail means hot-plug cannot work here.
 */
import fs from 'node:fs';
import { findBinary, ip, vhostNetUsable, VHOST_NET } from '../host/ip.js';
import { TUN_DEVICE } from '../host/tap.js';
import { type Credentials, whyCannotOpen } from '../host/users.js';
import { checkKvm } from '../qemu/accel.js';

/** A uid and gid no file belongs to: what a VM's fresh user is to the host's device nodes. */
const A_VM_USER: Credentials = { uid: 0x7ffffffe, gid: 0x7ffffffe, groups: [] };

export interface Check {
  check: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}

/** The probes a doctor run makes, each replaceable (unit tests give their own). */
export interface Probes {
  qemuVersion(qemu: string): Promise<string>;
  tunUsable(): boolean;
  vhostNetUsable(): boolean;
  kvm(): { usable: boolean; reason: string };
  /** Names of the host's Linux bridges (throws when ip cannot run). */
  bridges(): Promise<string[]>;
  /** Why a VM's own user cannot open the path, or undefined when it can. */
  vmUserCannot(path: string): string | undefined;
  /** Whether a program is on PATH. */
  found(program: string): boolean;
  /** Open vSwitch: its database's bridges and whether ovs-vswitchd applies changes, or why not. */
  ovs(): Promise<OvsState>;
}

export type OvsState =
  { state: 'absent'; why: string } | { state: 'answering'; socket: string; bridges: string[]; vswitchd: boolean };

/** Asks OVSDB for its bridges, and has ovs-vswitchd apply an empty change (what any ovs-vsctl write waits for). */
async function probeOvs(): Promise<OvsState> {
  const { OvsdbClient, appliedTarget, applyOps, ovsdbSocket } = await import('../host/ovsdb.js');
  const socket = ovsdbSocket();
  if (!fs.existsSync(socket)) return { state: 'absent', why: `no database at ${socket}` };
  let db;
  try {
    db = await OvsdbClient.connect(socket);
  } catch (e) {
    return { state: 'absent', why: (e as Error).message };
  }
  try {
    const bridges = (await db.select('Bridge', [], ['name'])).map((b) => b.name as string).sort();
    const vswitchd = await db
      .transact(applyOps())
      .then((r) => db.waitApplied(appliedTarget(r), 2000))
      .then(
        () => true,
        () => false,
      );
    return { state: 'answering', socket, bridges, vswitchd };
  } finally {
    db.close();
  }
}

export const hostProbes: Probes = {
  qemuVersion: async (qemu) => (await import('../qemu/launcher.js')).qemuVersion(qemu),
  tunUsable: () => {
    try {
      fs.accessSync('/dev/net/tun', fs.constants.R_OK | fs.constants.W_OK);
      return true;
    } catch {
      return false;
    }
  },
  vhostNetUsable,
  kvm: checkKvm,
  bridges: async () =>
    (JSON.parse(await ip(['-j', 'link', 'show', 'type', 'bridge'])) as { ifname: string }[]).map((b) => b.ifname),
  vmUserCannot: (path) => whyCannotOpen(A_VM_USER, path, 'rw'),
  found: (program) => findBinary(program) !== undefined,
  ovs: probeOvs,
};

export async function probeHost(qemu: string, probes: Probes = hostProbes): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    checks.push({ check: 'qemu', status: 'ok', detail: `${qemu}: ${await probes.qemuVersion(qemu)}` });
  } catch {
    checks.push({ check: 'qemu', status: 'fail', detail: `${qemu} not found (apt-get install qemu-system-x86)` });
  }
  const tun = probes.tunUsable();
  const tunForVm = tun ? probes.vmUserCannot(TUN_DEVICE) : undefined;
  checks.push({
    check: TUN_DEVICE,
    status: !tun || tunForVm ? 'fail' : 'ok',
    detail: !tun
      ? 'missing or not accessible: taps cannot be made'
      : tunForVm
        ? `a VM's own user cannot open it (${tunForVm}): chmod 0666 ${TUN_DEVICE}, Debian's default (mq-hotplug's taps have owners), or --run-as root`
        : "usable, by root and by each VM's own user (taps are owned, so no other uid can attach to them)",
  });
  const vhost = probes.vhostNetUsable();
  const vhostForVm = vhost ? probes.vmUserCannot(VHOST_NET) : undefined;
  checks.push({
    check: VHOST_NET,
    status: vhost && !vhostForVm ? 'ok' : 'warn',
    detail: !vhost
      ? 'missing: NICs run without vhost (--vhost on is refused)'
      : vhostForVm
        ? `a VM's own user cannot open it (${vhostForVm}): its NICs run without vhost`
        : "usable, also by a VM's own user: --vhost auto turns vhost on",
  });
  const tools = ['useradd', 'userdel', 'setpriv'].filter((t) => !probes.found(t));
  checks.push({
    check: 'vm users',
    status: tools.length ? 'fail' : 'ok',
    detail: tools.length
      ? `${tools.join(', ')} not found: each VM's QEMU runs as its own user (install passwd and util-linux), or --run-as root`
      : "useradd and setpriv found: each VM's QEMU runs as its own user, in a seccomp sandbox",
  });
  const kvm = probes.kvm();
  checks.push({
    check: 'kvm',
    status: kvm.usable ? 'ok' : 'warn',
    detail: `${kvm.reason}; --accel auto picks ${kvm.usable ? 'kvm' : 'tcg'}`,
  });
  try {
    const bridges = await probes.bridges();
    checks.push({ check: 'ip', status: 'ok', detail: 'iproute2 found' });
    checks.push({
      check: 'bridges',
      status: bridges.length ? 'ok' : 'warn',
      detail: bridges.length ? bridges.join(', ') : 'none (create one: ip link add br0 type bridge)',
    });
  } catch (e) {
    checks.push({ check: 'ip', status: 'fail', detail: (e as Error).message });
  }
  const ovs = await probes.ovs();
  checks.push(
    ovs.state === 'absent'
      ? { check: 'openvswitch', status: 'ok', detail: `not here (${ovs.why}): Linux bridges only` }
      : {
          check: 'openvswitch',
          status: ovs.vswitchd ? 'ok' : 'warn',
          detail:
            `database at ${ovs.socket} answers; bridges: ${ovs.bridges.join(', ') || 'none'}; ` +
            (ovs.vswitchd ? 'ovs-vswitchd applies changes' : 'ovs-vswitchd does not apply changes (is it running?)'),
        },
  );
  return checks;
}
