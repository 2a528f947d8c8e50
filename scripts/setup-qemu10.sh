#!/usr/bin/env bash
# QEMU 10.0 beside Debian 12's 7.2, for the suites' second run (npm run test:qemu10): the packages
# of bookworm-backports, fetched with a private sources list and private apt directories (the
# system's /etc/apt and its QEMU are not touched) and unpacked into a private root. Two traps
# (../shared/FACTS.md): 10.0 would also load 7.2's modules and abort, so the root gets QEMU's own
# relocation link (usr/bin/qemu-bundle -> ../..); and its firmware is under the root, so a wrapper
# passes -L. Prints the wrapper's path. Idempotent; two runs at once each unpack apart, and a
# working copy already in place is kept. Needs root.
set -euo pipefail
cache=/var/cache/mq-hotplug
dest=$cache/qemu-10.0
wrapper=$dest/qemu-system-x86_64
if "$wrapper" --version 2>/dev/null | grep -q 'version 10\.'; then echo "$wrapper"; exit 0; fi
mkdir -p "$cache"
work=$(mktemp -d "$cache/.qemu-10.0.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$work/debs" "$work/root"
echo 'deb http://deb.debian.org/debian bookworm-backports main' > "$work/sources.list"
apt=(-o "Dir::Etc::sourcelist=$work/sources.list" -o Dir::Etc::sourceparts=/nonexistent
  -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update -q >&2
(cd "$work/debs" && apt-get "${apt[@]}" download qemu-system-x86 qemu-system-common qemu-system-data seabios >&2)
for deb in "$work"/debs/*.deb; do dpkg-deb -x "$deb" "$work/root"; done
ln -s ../.. "$work/root/usr/bin/qemu-bundle"
# ipxe-qemu is bookworm's (the system's, installed with 7.2); the rest is the root's
cat > "$work/root/qemu-system-x86_64" <<WRAPPER
#!/bin/sh
exec $dest/usr/bin/qemu-system-x86_64 -L $dest/usr/share/qemu -L $dest/usr/share/seabios -L /usr/lib/ipxe/qemu "\$@"
WRAPPER
chmod 0755 "$work/root/qemu-system-x86_64"
# another run may have put a working one there meanwhile: keep it; a broken one is replaced
if ! "$wrapper" --version 2>/dev/null | grep -q 'version 10\.'; then
  rm -rf "$dest"
  mv "$work/root" "$dest"
fi
"$wrapper" --version | head -n 1 >&2
echo "$wrapper"
