#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host (as root) to run and test vfiowatch. Idempotent and quick when
# done: installs only missing apt packages, links kernel headers for bcc when none match the
# running kernel, mounts tracefs. It never touches a PCI device.
set -euo pipefail

# One package per line; every apt package the project needs is here.
APT_PACKAGES=(
  python3 python3-venv python3-pip python3-dev
  python3-bpfcc bpfcc-tools           # bcc (not on PyPI: PyPI's "bcc" is another project)
  iproute2 kmod pciutils udev         # ip/ip netns, modinfo, lspci + pci.ids, udevadm (tests)
  tmux                                # the dashboard's real-terminal test
  librsvg2-bin                        # rsvg-convert: make screenshots renders the SVGs to PNG
  prometheus                          # real scrape test of the metrics endpoint
  systemd systemd-journal-remote      # systemd-analyze verify; real journal files for tests
  gzip make git ca-certificates
  gcc                                 # tests: the uevent storm writer is compiled at test time
  # deploy: make image, the image tier, the unit's sandbox (promtool comes with prometheus)
  podman buildah mmdebstrap           # build the agent image; a Debian base without a registry
  runc                                # podman run where crun refuses (cgroup v1/v2 hybrid hosts)
  strace                              # the unit's sandbox test traces the agent's system calls
)
if [ -n "${VFIOWATCH_EXTRA_APT:-}" ]; then
  read -r -a extra <<<"$VFIOWATCH_EXTRA_APT"
  APT_PACKAGES+=("${extra[@]}")
fi

[ "$(id -u)" = 0 ] || { echo "setup-host: run as root (apt-get, tracefs)" >&2; exit 1; }
export DEBIAN_FRONTEND=noninteractive

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

release=$(uname -r)
if [ ! -e "/lib/modules/$release/build" ]; then
  # Prefer the exact headers; otherwise the distribution's generic ones (see README, eBPF).
  if apt-cache show "linux-headers-$release" >/dev/null 2>&1; then
    missing+=("linux-headers-$release")
  else
    dpkg-query -W -f='${Status}' linux-headers-amd64 2>/dev/null | grep -q "install ok installed" \
      || missing+=("linux-headers-amd64")
  fi
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-host: installing ${missing[*]}"
  apt-get update -qq
  # apt-cache may not have known linux-headers-$release before the update: re-check.
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -e "/lib/modules/$release/build" ]; then
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

if [ ! -d /sys/kernel/tracing/events ]; then
  mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || true
fi
exit 0
