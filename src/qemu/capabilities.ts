/**
 * What the QEMU behind a monitor does differently, decided in this one place from its version (the
 * greeting's: QMP's schema has no word for these behaviours). Measured on Debian's 7.2 and
 * bookworm-backports' 10.0 (both tested in CI); a version between them is treated as 7.2 where
 * that is the safe side.
 */
export interface QemuVersion {
  major: number;
  minor: number;
  micro: number;
}

export interface QemuCapabilities {
  /** "7.2.22"; "unknown" where no greeting said */
  version: string;
  /**
   * netdev_add with vhost: true where /dev/vhost-net is missing aborts the whole QEMU (7.2:
   * `net_client_init1: Assertion 'nc' failed`); 10.0 answers an error and the VM lives.
   */
  vhostWithoutDeviceAborts: boolean;
  /**
   * netdev_del while the device's unplug is pending keeps the tap open until DEVICE_DELETED (10.0);
   * 7.2 closes it at once.
   */
  netdevDelWaitsForUnplug: boolean;
}

export function capabilitiesOf(v: QemuVersion | undefined): QemuCapabilities {
  if (!v) return { version: 'unknown', vhostWithoutDeviceAborts: true, netdevDelWaitsForUnplug: true };
  return {
    version: `${v.major}.${v.minor}.${v.micro}`,
    vhostWithoutDeviceAborts: v.major < 10,
    netdevDelWaitsForUnplug: v.major >= 10,
  };
}
