/**
 * Which accelerator can really run a guest. /dev/kvm existing is not enough: nested setups such as
 * the kvm_pvm module answer query-kvm "enabled" yet fail on the first guest instruction they cannot
 * emulate. KVM is usable only with the vmx/svm CPU flag and without kvm_pvm.
 */
import { constants, accessSync, existsSync, readFileSync } from 'node:fs';

export interface KvmCheck {
  usable: boolean;
  reason: string;
}

export function checkKvm(): KvmCheck {
  try {
    accessSync('/dev/kvm', constants.R_OK | constants.W_OK);
  } catch {
    return { usable: false, reason: '/dev/kvm is missing or not accessible' };
  }
  if (existsSync('/sys/module/kvm_pvm')) {
    return { usable: false, reason: 'KVM here is the nested kvm_pvm module, which cannot run a full guest' };
  }
  let cpuinfo: string;
  try {
    cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    return { usable: false, reason: '/proc/cpuinfo is unreadable' };
  }
  if (!/^flags\s*:.*\b(vmx|svm)\b/m.test(cpuinfo)) {
    return { usable: false, reason: 'the CPU shows no vmx/svm flag' };
  }
  return { usable: true, reason: '/dev/kvm usable and the CPU has hardware virtualization' };
}

export type AccelChoice = 'auto' | 'kvm' | 'tcg';

/** Resolves 'auto' to kvm or tcg and says why. */
export function resolveAccel(choice: AccelChoice): { accel: 'kvm' | 'tcg'; reason: string } {
  if (choice !== 'auto') return { accel: choice, reason: 'requested' };
  const kvm = checkKvm();
  return kvm.usable ? { accel: 'kvm', reason: kvm.reason } : { accel: 'tcg', reason: `KVM not usable: ${kvm.reason}` };
}
