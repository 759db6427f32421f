#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host (as root) to run and test vfiowatch: `setup-host.sh [GROUP...]`
# (groups of deploy/packages.txt; default run and test). Idempotent and quick when done:
# installs only missing apt packages, links kernel headers for bcc when none match the running
# kernel, mounts tracefs. It never touches a PCI device.
set -euo pipefail

# The packages are listed, by purpose, in deploy/packages.txt; packages.sh reads it and holds
# the one "is it installed" check. Groups to set up: the arguments, else run and test.
HERE=$(dirname "$(readlink -f "$0")")
PACKAGES="$HERE/packages.sh"
groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(run test)
extra=()
if [ -n "${VFIOWATCH_EXTRA_APT:-}" ]; then
  read -r -a extra <<<"$VFIOWATCH_EXTRA_APT"
fi
entries=$("$PACKAGES" list "${groups[@]}")

[ "$(id -u)" = 0 ] || { echo "setup-host: run as root (apt-get, tracefs)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

# The steps the list names (@name) for the chosen groups.
step() { grep -qx "@$1" <<<"$entries"; }

release=$(uname -r)
headers=()
if step kernel-headers && [ ! -e "/lib/modules/$release/build" ]; then
  # Prefer the exact headers; otherwise the distribution's generic ones (see README, eBPF).
  # (apt-cache knows no package before the first apt-get update: then the generic ones.)
  if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
    headers+=("linux-headers-$release")
  else
    headers+=("linux-headers-amd64")
  fi
fi

"$PACKAGES" install "${groups[@]}" -- "${extra[@]}" "${headers[@]}"

if step kernel-headers && [ ! -e "/lib/modules/$release/build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$hdr" ]; then
    # Mismatched headers: bcc compiles against them; our probes read no kernel structs, so
    # only tracepoint arguments and helpers are used (host-facts: safe with other headers).
    mkdir -p "/lib/modules/$release"
    ln -sfn "$hdr" "/lib/modules/$release/build"
    [ -n "$common" ] && ln -sfn "$common" "/lib/modules/$release/source"
    echo "setup-host: linked /lib/modules/$release/build -> $hdr (no headers for $release)"
  fi
fi

if step tracefs && [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
exit 0
