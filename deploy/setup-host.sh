#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host (as root) to run and test vfiowatch: `setup-host.sh [GROUP...]`
# (groups of deploy/packages.txt; default run and test). Idempotent and quick when done:
# installs only missing apt packages, links kernel headers for bcc when none match the running
# kernel (saying so before it does; VFIOWATCH_HEADERS=none skips the headers), mounts tracefs.
# It never touches a PCI device.
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
mods="/lib/modules/$release"
if [ "${VFIOWATCH_HEADERS:-}" = none ] && step kernel-headers; then
  echo "setup-host: VFIOWATCH_HEADERS=none: no kernel headers installed or linked (the eBPF source needs them: vfiowatch check)" >&2
  entries=$(grep -vx '@kernel-headers' <<<"$entries" || true)
fi
headers=()
link_generic=no
if step kernel-headers && [ ! -e "$mods/build" ]; then
  # Prefer the exact headers; otherwise the distribution's generic ones (README: Set-up, in detail).
  # (apt-cache knows no package before the first apt-get update: then the generic ones.)
  if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
    headers+=("linux-headers-$release")
  else
    # Mismatched headers: bcc compiles against them; our probes read no kernel structs, so
    # only tracepoint arguments and helpers are used (host-facts: safe with other headers).
    # Said before anything is installed or linked, with how to undo it (README: Set-up).
    headers+=("linux-headers-amd64")
    link_generic=yes
    made=""
    [ -d "$mods" ] || made=" && rmdir $mods"
    echo "setup-host: no kernel headers for the running kernel $release: bcc needs headers to" >&2
    echo "  compile the eBPF probes, and as these read no kernel structs, other ones serve." >&2
    echo "  Installing linux-headers-amd64 (if missing) and linking its newest headers as" >&2
    echo "  $mods/build (and .../source)." >&2
    echo "  Undo: rm -f $mods/build $mods/source$made. Skip: VFIOWATCH_HEADERS=none (no eBPF source)." >&2
  fi
fi

"$PACKAGES" install "${groups[@]}" -- "${extra[@]}" "${headers[@]}"

if [ "$link_generic" = yes ] && [ ! -e "$mods/build" ]; then
  hdr=$(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V | tail -n1 || true)
  common=$(ls -d /usr/src/linux-headers-*-common 2>/dev/null | sort -V | tail -n1 || true)
  if [ -n "$hdr" ]; then
    mkdir -p "$mods"
    ln -sfn "$hdr" "$mods/build"
    if [ -n "$common" ]; then ln -sfn "$common" "$mods/source"; fi
    echo "setup-host: linked $mods/build -> $hdr${common:+, $mods/source -> $common}" >&2
  fi
fi

if step tracefs && [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
exit 0
