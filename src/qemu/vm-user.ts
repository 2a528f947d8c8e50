/**
 * Who a VM's QEMU runs as. By default each VM has its own system user, `mqh-<vm>`, made by
 * mq-hotplug on the VM's first start (its GECOS says so) and deleted once the VM is neither
 * running nor defined: one uid per VM, so no VM's QEMU can open another's taps or files.
 * `--run-as USER` takes a user that exists (never made or deleted here); `--run-as root` runs
 * QEMU as root, with all its capabilities, only when asked.
 *
 * QEMU is started as that user (setpriv: uid, gid, only the groups it needs, no capabilities,
 * no new privileges), in the seccomp sandbox of spec.ts. Not with QEMU's own -runas: 7.2 dies by
 * SIGSYS with elevateprivileges=deny, and 10.0 has no -runas.
 */
import fs from 'node:fs';
import { UsageError } from '../errors.js';
import { type Credentials, type HostUser, deleteSystemUser, findUser, makeSystemUser } from '../host/users.js';
import { withVmLock } from './lock.js';

export interface QemuUser extends Credentials {
  name: string;
  /** mq-hotplug made it for this VM (and deletes it once the VM is neither running nor defined) */
  made: boolean;
}

/** The user of a VM's own: `mqh-` and the VM's name (at most 32 characters, useradd's limit). */
export function vmUserName(vm: string): string {
  return `mqh-${vm}`.slice(0, 32);
}

/** The GECOS of a user mq-hotplug made for a VM. */
export const vmUserComment = (vm: string) => `mq-hotplug VM ${vm}`;

const ROOT_USER: QemuUser = { name: 'root', uid: 0, gid: 0, groups: [], made: false };

/** useradd and userdel of concurrent starts queue here rather than on /etc/passwd's lock. */
const USERS_LOCK = 'mq-hotplug/users';

/**
 * The user a VM's QEMU runs as, made where it is the VM's own and missing. `groups`: the extra
 * groups it needs (kvm's, where KVM is used and /dev/kvm is not open to all). `madeNow` says the
 * call made it, so a start that fails can take it back.
 */
export async function resolveQemuUser(
  vm: string,
  runAs: string | undefined,
  groups: number[] = [],
): Promise<{ user: QemuUser; madeNow: boolean }> {
  if (runAs === 'root') return { user: ROOT_USER, madeNow: false };
  const own = vmUserName(vm);
  const name = runAs ?? own;
  const found = await findUser(name);
  if (found) {
    const made = found.comment === vmUserComment(vm);
    if (name === own && runAs === undefined && !made)
      throw new UsageError(
        `user '${name}' exists but was not made by mq-hotplug for VM '${vm}'; to run QEMU as it, start with --run-as ${name}`,
      );
    return { user: qemuUserOf(found, made, groups), madeNow: false };
  }
  if (runAs !== undefined && runAs !== own)
    throw new UsageError(
      `unknown user '${runAs}' for --run-as: give a user that exists, 'root', or leave --run-as out for a user of the VM's own (${own})`,
    );
  const made = await withVmLock(USERS_LOCK, () => makeSystemUser(name, vmUserComment(vm)), 30_000, 'the user list');
  return { user: qemuUserOf(made, true, groups), madeNow: true };
}

function qemuUserOf(u: HostUser, made: boolean, groups: number[]): QemuUser {
  return { name: u.name, uid: u.uid, gid: u.gid, groups, made };
}

/** Deletes the VM's own user, if mq-hotplug made it for this VM. */
export async function deleteVmUser(vm: string, name = vmUserName(vm)): Promise<boolean> {
  const found = await findUser(name);
  if (!found || found.comment !== vmUserComment(vm)) return false;
  await withVmLock(USERS_LOCK, () => deleteSystemUser(name), 30_000, 'the user list');
  return true;
}

/** The argv that runs `argv` as the user: setpriv where it is not root. */
export function runAsArgv(user: Credentials, argv: string[]): string[] {
  if (user.uid === 0) return argv;
  return [
    'setpriv',
    ...['--reuid', String(user.uid), '--regid', String(user.gid)],
    ...(user.groups.length ? ['--groups', user.groups.join(',')] : ['--clear-groups']),
    ...['--inh-caps=-all', '--bounding-set=-all', '--no-new-privs', '--'],
    ...argv,
  ];
}

/** The group of /dev/kvm, where QEMU's user needs it to use KVM (the node is not open to all). */
export function kvmGroups(accel: 'kvm' | 'tcg'): number[] {
  if (accel !== 'kvm') return [];
  try {
    const st = fs.statSync('/dev/kvm');
    return (st.mode & 0o006) === 0o006 ? [] : [st.gid];
  } catch {
    return [];
  }
}
