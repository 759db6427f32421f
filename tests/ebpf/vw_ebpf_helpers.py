"""Helpers of the eBPF tier (imported by its conftest and tests): harmless targets, host lookups."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HARMLESS_BDF = "0000:ff:1f.7"
"""Nonexistent address: bind/unbind/drivers_probe fail with ENODEV and touch no device."""
DRV = "/sys/bus/pci/drivers/virtio-pci"


def real_virtio_bdf() -> str:
    """A real device of this machine on virtio-pci: only its `driver` link is followed."""
    for d in sorted(os.listdir("/sys/bus/pci/devices")):
        if os.path.realpath(f"/sys/bus/pci/devices/{d}/driver") == os.path.realpath(DRV):
            return d
    pytest.skip("no device bound to virtio-pci here")


def cgroup2_mount() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, sep, right = line.partition(" - ")
        if sep and right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    pytest.skip("no cgroup v2 hierarchy mounted")
