/**
 * What `doctor` checks on the host: QEMU, /dev/net/tun, vhost-net, KVM, ip and the bridges. Each
 * probe says ok, warn or fail with one line of detail; a fail means hot-plug cannot work here.
 */
import fs from 'node:fs';
import { ip, vhostNetUsable } from '../host/ip.js';
import { checkKvm } from '../qemu/accel.js';

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
};

export async function probeHost(qemu: string, probes: Probes = hostProbes): Promise<Check[]> {
  const checks: Check[] = [];
  try {
    checks.push({ check: 'qemu', status: 'ok', detail: `${qemu}: ${await probes.qemuVersion(qemu)}` });
  } catch {
    checks.push({ check: 'qemu', status: 'fail', detail: `${qemu} not found (apt-get install qemu-system-x86)` });
  }
  const tun = probes.tunUsable();
  checks.push({
    check: '/dev/net/tun',
    status: tun ? 'ok' : 'fail',
    detail: tun ? 'usable' : 'missing or not accessible: taps cannot be made',
  });
  const vhost = probes.vhostNetUsable();
  checks.push({
    check: '/dev/vhost-net',
    status: vhost ? 'ok' : 'warn',
    detail: vhost ? 'usable: --vhost auto turns vhost on' : 'missing: NICs run without vhost (--vhost on is refused)',
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
  return checks;
}
