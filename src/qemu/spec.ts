/**
 * What a VM is made of, and the QEMU command line for it. The command line has no NIC: only the
 * two QMP monitors, the CPUs, memory, disks, kernel, console and the spare hot-plug slots.
 */
import { openSync, readSync, closeSync } from 'node:fs';

export type Machine = 'pc' | 'q35';

export interface VmSpec {
  name: string;
  cpus: number;
  memory: string;
  machine: Machine;
  accel: 'kvm' | 'tcg';
  disks: string[];
  kernel?: string;
  initrd?: string;
  append?: string;
  /** Unix socket path for the guest's serial console (its output is also logged to serial.log). */
  serial?: string;
  /** q35: spare pcie-root-ports, one per hot-pluggable device. pc: unused (pci.0 slots are hot-pluggable). */
  hotplugSlots: number;
  qemu: string;
  qemuArgs: string[];
  /** Default bridge for `add`. */
  bridge?: string;
  /** The user QEMU runs as: a user's name, or 'root'; absent: the VM's own user (qemu/vm-user.ts). */
  runAs?: string;
}

export interface VmPaths {
  dir: string;
  /** QEMU's own directory (its user owns it): the sockets QEMU makes, and the serial log it writes */
  qemuDir: string;
  qmp: string;
  eventsQmp: string;
  log: string;
  serialSocket: string;
  serialLog: string;
}

/**
 * QEMU's seccomp sandbox, as libvirt sets it: no obsolete syscalls, no setuid and friends, no
 * fork/exec (so no ifup scripts: taps are made beforehand), no changes to scheduling or affinity.
 */
export const SANDBOX = 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny';

/** Root port ids on q35: mqh-port0..N-1; `add` plugs one device into each. */
export const rootPortId = (i: number) => `mqh-port${i}`;

export function qemuArgv(spec: VmSpec, paths: VmPaths): string[] {
  const args = [
    '-name',
    `${spec.name},process=mqh-${spec.name}`,
    '-machine',
    `${spec.machine},accel=${spec.accel}`,
    '-smp',
    String(spec.cpus),
    '-m',
    spec.memory,
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-sandbox',
    SANDBOX,
    // Two monitors: one for one-shot commands (add/remove), one for a long-running watcher.
    '-qmp',
    `unix:${paths.qmp},server=on,wait=off`,
    '-qmp',
    `unix:${paths.eventsQmp},server=on,wait=off`,
  ];
  if (spec.kernel) args.push('-kernel', spec.kernel);
  if (spec.initrd) args.push('-initrd', spec.initrd);
  if (spec.append) args.push('-append', spec.append);
  for (const [i, disk] of spec.disks.entries()) {
    args.push('-drive', `file=${disk.replaceAll(',', ',,')},if=virtio,format=${diskFormat(disk)},index=${i}`);
  }
  if (spec.serial) {
    args.push(
      '-chardev',
      // in QEMU's directory, where its user can make it; spec.serial becomes a link to it (launcher.ts)
      `socket,id=serial0,path=${paths.serialSocket.replaceAll(',', ',,')},server=on,wait=off,logfile=${paths.serialLog.replaceAll(',', ',,')}`,
      '-serial',
      'chardev:serial0',
    );
  }
  if (spec.machine === 'q35') {
    for (let i = 0; i < spec.hotplugSlots; i++) {
      args.push('-device', `pcie-root-port,id=${rootPortId(i)},bus=pcie.0,chassis=${i + 1}`);
    }
  }
  args.push(...spec.qemuArgs);
  return args;
}

/** qcow2 by its magic bytes, raw otherwise: QEMU refuses to guess raw silently for writes to block 0. */
function diskFormat(path: string): 'qcow2' | 'raw' {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const magic = Buffer.alloc(4);
    readSync(fd, magic, 0, 4, 0);
    return magic.toString('latin1') === 'QFI\xfb' ? 'qcow2' : 'raw';
  } catch {
    return 'raw';
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
