"""Benchmark of the kata source's exposure round beside what an operator would run (printed, never asserted).

On a Kata 3.8 host tree (dpkg's status and file list, the shim, the SR-IOV lab's sysfs):

* the first round (shim binary, dpkg status and lists, every PCI device, the device plugin's file)
  beside `dpkg -S <shim>` + `lspci -Dk` (who owns the shim, which driver each device has), run on
  this machine (its whole package database and PCI bus: the tree's are smaller);
* a round with nothing changed (a readlink per PCI device, a stat per version source);
* the loop's CPU over 10 s at the default intervals, with the exposure round every 5 s and with
  it off (interval 1e9 s), side by side.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from diag.common.paths import HostPaths
from diag.sources.kata.exposure import host_exposure
from diag.sources.kata.source import KataWatcher
from tests.conftest import FIXTURES

ROWS: list[tuple[str, str, str]] = []


def _per_call(fn: Callable[[], object], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _tool(argv: list[str], n: int = 5) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - t) / n


def _loop_cpu(paths: HostPaths, exposure_interval_s: float) -> float:
    """CPU seconds per second of the source's rounds as KataSource.run drives them."""
    w = KataWatcher(paths, {"journal": False, "kmsg": False, "exposure_interval_s": exposure_interval_s})
    cpu0, t0 = time.process_time(), time.monotonic()
    first = True
    while time.monotonic() - t0 < 10:
        w.step(time.time_ns(), force=first)
        first = False
        w.step_logs(time.time_ns(), timeout=0.1)
    return (time.process_time() - cpu0) / 10


def test_kata_exposure_round_cost(tmp_path: Path) -> None:
    """Prints the table; checks only that every measurement ran."""
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "kata-exposure" / "go38-noport", root, symlinks=True)
    shutil.copytree(FIXTURES / "sysfs" / "sriov-lab", root, symlinks=True, dirs_exist_ok=True)
    paths = HostPaths.at(root)
    ndev = len(list((root / "sys/bus/pci/devices").iterdir()))

    first = _per_call(lambda: host_exposure(paths), 20)
    tools = _tool(["dpkg", "-S", "/usr/bin/dpkg"]) + _tool(["lspci", "-Dk"])
    ROWS.append((f"exposure, first round ({ndev} PCI devices)", f"{first * 1e3:.2f} ms",
                 f"dpkg -S <shim> + lspci -Dk: {tools * 1e3:.2f} ms ({tools / first:.1f}x)"))

    w = KataWatcher(paths, {"journal": False, "kmsg": False})
    w.step(time.time_ns(), force=True)
    unchanged = _per_call(lambda: w.step_exposure(time.time_ns()), 200)
    ROWS.append(("exposure, nothing changed", f"{unchanged * 1e6:.0f} µs",
                 f"first round / unchanged: {first / unchanged:.0f}x"))

    on, off = _loop_cpu(paths, 5.0), _loop_cpu(paths, 1e9)
    ROWS.append(("loop CPU, exposure every 5 s", f"{on * 100:.2f} % of a core",
                 f"exposure off: {off * 100:.2f} % ({on / off:.2f}x)"))

    print()
    width = max(len(r[0]) for r in ROWS)
    for what, ours, other in ROWS:
        print(f"{what:<{width}}  {ours:>18}  {other}")
    assert len(ROWS) == 3
