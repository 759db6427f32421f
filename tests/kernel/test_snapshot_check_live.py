"""`vfiowatch snapshot` and `check` on this machine's real sysfs and kernel, changing nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import vfiowatch_bin

pytestmark = pytest.mark.usefixtures("require_root")


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([vfiowatch_bin(), *args], capture_output=True, text=True, timeout=60)


def _drivers() -> dict[str, str | None]:
    base = "/sys/bus/pci/devices"
    out = {}
    for bdf in sorted(os.listdir(base)):
        link = os.path.join(base, bdf, "driver")
        out[bdf] = os.path.basename(os.readlink(link)) if os.path.islink(link) else None
    return out


def test_snapshot_json_matches_the_live_drivers_and_changes_nothing() -> None:
    """Every live PCI device is listed with the driver its sysfs link names; no driver moved."""
    before = _drivers()
    res = _run("snapshot", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["schema"] == 1
    assert {d["bdf"]: d["driver"] for d in doc["devices"]} == before
    assert _drivers() == before


def test_snapshot_table_shows_each_device_and_a_total() -> None:
    """The table has a row per device and the closing count line."""
    res = _run("snapshot")
    assert res.returncode == 0
    for bdf, drv in _drivers().items():
        row = next(line for line in res.stdout.splitlines() if line.startswith(bdf))
        assert (drv or "(none)") in row
    assert res.stdout.rstrip().endswith(f"{len(_drivers())} PCI devices, 0 on vfio-pci")


def test_check_reports_what_this_kernel_allows() -> None:
    """bcc and syscall tracepoints are ✓, kprobes ! (optional) with the kernel-config reason; exit 0."""
    res = _run("check", "--format", "json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    by = {c["name"]: c for c in doc["checks"]}
    assert doc["can_run"] is True
    assert by["bcc"]["ok"] and by["syscall tracepoints"]["ok"] and by["uevent socket"]["ok"]
    has_kprobes = os.path.exists("/sys/bus/event_source/devices/kprobe")
    assert by["kprobes"]["ok"] is has_kprobes
    if not has_kprobes:
        assert "CONFIG_KPROBES" in by["kprobes"]["detail"] and by["kprobes"]["fix"]
    text = _run("check")
    assert "✓ bcc" in text.stdout
    assert ("! kprobes" in text.stdout) is not has_kprobes  # optional: a warning, not ✗


def test_python_dash_m_diag_is_the_same_command() -> None:
    """`python -m diag --version` prints the same as `vfiowatch --version`."""
    a = subprocess.run([sys.executable, "-m", "diag", "--version"], capture_output=True, text=True)
    assert a.stdout == _run("--version").stdout and a.stdout.startswith("vfiowatch ")
