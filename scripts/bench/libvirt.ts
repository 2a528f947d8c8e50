/**
 * libvirt as a second reference for the bench: `virsh attach-device` of the same 8-queue bridged
 * virtio NIC, one virsh process per NIC. Sets libvirt up on this machine when it can (Debian's
 * packages; the libvirt-qemu user its -system package would make; libvirtd and virtlogd started
 * with pid files here and ended by those pids), else says why not.
 */
import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { sleep } from '../../test/helpers/env.js';

export interface Libvirt {
  attach(): Promise<void>;
  teardown(): Promise<void>;
}

const VIRSH = ['-c', 'qemu:///system'];

async function sh(file: string, args: string[]): Promise<string> {
  return (await execa(file, args, { stdin: 'ignore' })).stdout;
}

export async function setupLibvirt(workDir: string, bridge: string, domain: string): Promise<Libvirt | string> {
  try {
    if (!fs.existsSync('/usr/sbin/libvirtd')) {
      await sh('apt-get', [
        'install',
        '-y',
        '-q',
        '--no-install-recommends',
        'libvirt-daemon',
        'libvirt-daemon-driver-qemu',
        'libvirt-clients',
      ]);
    }
    if ((await execa('getent', ['passwd', 'libvirt-qemu'], { reject: false })).exitCode !== 0) {
      await execa('groupadd', ['-r', '-f', 'kvm']);
      await execa('groupadd', ['-r', '-f', 'libvirt-qemu']);
      await sh('useradd', [
        '-r',
        '-g',
        'libvirt-qemu',
        '-G',
        'kvm',
        '-d',
        '/var/lib/libvirt',
        '-s',
        '/usr/sbin/nologin',
        'libvirt-qemu',
      ]);
    }
    for (const d of ['/var/log/libvirt', '/run/libvirt', '/var/lib/libvirt/qemu', '/var/cache/libvirt'])
      fs.mkdirSync(d, { recursive: true });
    const pids: number[] = [];
    for (const daemon of ['virtlogd', 'libvirtd']) {
      const pidFile = path.join(workDir, `${daemon}.pid`);
      await sh(`/usr/sbin/${daemon}`, ['--daemon', '--pid-file', pidFile]);
      for (let i = 0; i < 100 && !fs.existsSync(pidFile); i++) await sleep(50);
      pids.push(Number(fs.readFileSync(pidFile, 'utf8')));
    }
    const teardownDaemons = async () => {
      for (const pid of pids.reverse()) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {}
      }
    };
    const dom = path.join(workDir, 'domain.xml');
    fs.writeFileSync(
      dom,
      `<domain type='qemu'><name>${domain}</name><memory unit='MiB'>128</memory><vcpu>2</vcpu>` +
        `<features><acpi/></features><os><type arch='x86_64' machine='pc'>hvm</type></os>` +
        `<devices><emulator>/usr/bin/qemu-system-x86_64</emulator><video><model type='none'/></video><memballoon model='none'/></devices></domain>`,
    );
    const nic = path.join(workDir, 'nic.xml');
    fs.writeFileSync(
      nic,
      `<interface type='bridge'><source bridge='${bridge}'/><model type='virtio'/><driver name='qemu' queues='8'/></interface>`,
    );
    try {
      await sh('virsh', [...VIRSH, 'create', dom]);
    } catch (e) {
      await teardownDaemons();
      throw e;
    }
    return {
      attach: async () => void (await sh('virsh', [...VIRSH, 'attach-device', domain, nic, '--live'])),
      teardown: async () => {
        await execa('virsh', [...VIRSH, 'destroy', domain], { reject: false });
        await teardownDaemons();
      },
    };
  } catch (e) {
    const err = e as { shortMessage?: string; message: string; stderr?: string };
    return `libvirt could not be set up here: ${(err.stderr || err.shortMessage || err.message).split('\n')[0]}`;
  }
}
