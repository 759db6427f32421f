"""`vfiowatch record sysfs` on this machine gives a tree that scans like the live sysfs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from diag.common.paths import HostPaths
from diag.events import replace
from diag.sources import sysfs
from tests.conftest import vfiowatch_bin


@pytest.mark.usefixtures("require_root")
def test_recorded_tree_scans_like_the_live_host(tmp_path: Path) -> None:
    """Every device field but the pci.ids names (not copied) is identical."""
    out = tmp_path / "tree"
    res = subprocess.run([vfiowatch_bin(), "record", "sysfs", "--out", str(out)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    strip = lambda d: replace(d, vendor_name="", device_name="")  # noqa: E731
    live = [strip(d) for d in sysfs.scan(HostPaths())]
    assert [strip(d) for d in sysfs.scan(HostPaths(out))] == live
