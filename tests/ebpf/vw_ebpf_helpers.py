"""Helpers of the eBPF tier (imported by its conftest and tests): collector, host lookups."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from diag import events as ev

HARMLESS_BDF = "0000:ff:1f.7"
"""Nonexistent address: bind/unbind/drivers_probe fail with ENODEV and touch no device."""
DRV = "/sys/bus/pci/drivers/virtio-pci"


class Collected:
    """Events the source emitted, with a wait that polls until a predicate holds."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, e: ev.Event) -> None:
        with self._lock:
            self.events.append(e)

    def writes(self, pid: int | None = None) -> list[ev.SysfsWriteObserved]:
        with self._lock:
            return [e for e in self.events if isinstance(e, ev.SysfsWriteObserved)
                    and (pid is None or e.actor.pid == pid)]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred():
                return True
            time.sleep(0.05)
        return pred()


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
