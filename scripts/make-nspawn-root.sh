#!/usr/bin/env bash
# Builds (once) the minimal Debian 12 root that the container test boots with
# systemd-nspawn, and prints its path. Kept outside the repository so a machine that is
# reused keeps it. Needs root, debootstrap and the Debian mirror.
set -euo pipefail
# The name carries a version: bump it when the package list changes.
ROOT=${1:-/var/tmp/contera-nspawn-root-v2}
if [ -x "$ROOT/lib/systemd/systemd" ]; then
  echo "$ROOT"
  exit 0
fi
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
rm -rf "$ROOT.tmp"
debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,ca-certificates,procps \
  bookworm "$ROOT.tmp" "$MIRROR" >&2
mv "$ROOT.tmp" "$ROOT"
echo "$ROOT"
