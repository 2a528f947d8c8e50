#!/usr/bin/env bash
# Installs what mq-hotplug's demo and tests need on a fresh Debian machine, only what is missing:
# QEMU, iproute2, Open vSwitch, the tools the guest builder uses, and for the fleet tests ansible-core and
# systemd-analyze; refreshes apt's lists when they lack the guest's kernel package. Needs root.
set -euo pipefail
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
command -v ip >/dev/null || missing+=(iproute2)
command -v xz >/dev/null || missing+=(xz-utils)
command -v gzip >/dev/null || missing+=(gzip)
command -v tc >/dev/null || missing+=(iproute2)
# Open vSwitch bridges: the tests run their own ovsdb-server and ovs-vswitchd (systemd cannot start them here)
command -v ovs-vswitchd >/dev/null || missing+=(openvswitch-switch)
# the VLAN tests ping a guest from its network namespaces
command -v ping >/dev/null || missing+=(iputils-ping)
# the fleet tests: the Ansible example, and systemd-analyze for the unit template
command -v ansible-playbook >/dev/null || missing+=(ansible-core)
command -v systemd-analyze >/dev/null || missing+=(systemd)
updated=no
if ! apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'Depends: linux-image-[0-9]'; then
  apt-get update -q >&2
  updated=yes
fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$updated" = yes ] || apt-get update -q >&2
  echo "setup-host: installing ${missing[*]}" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
# Each VM's QEMU runs as its own user and opens its taps through /dev/net/tun, so every user must
# be able to open it, as on a stock Debian (0666). That is safe: the taps mq-hotplug makes have an
# owner, and the kernel refuses an attach to them by any other uid.
if [ -c /dev/net/tun ] && [ "$(stat -c %a /dev/net/tun)" != 666 ]; then
  echo "setup-host: /dev/net/tun was $(stat -c %a /dev/net/tun); making it 0666, Debian's default, so unprivileged QEMUs can attach their own taps" >&2
  chmod 0666 /dev/net/tun
fi
[ -w /dev/net/tun ] || { echo "setup-host: /dev/net/tun is missing or not writable: taps cannot be made here" >&2; exit 1; }
