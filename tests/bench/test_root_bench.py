"""Benchmark: the PCI scan under `--root` confinement, beside `--root /` and lspci (printed, never asserted).

* `--root /`: the plain system calls, as the live agent on a host runs;
* `--root DIR` on this host's own tree bound at DIR (`mount --rbind / DIR` in a private mount
  namespace that dies with the run): the confined walk, as the DaemonSet's `--root /host` runs;
* the recorded sriov-lab tree (confined, what tests and bug reports read);
* `lspci -D -k`, what an operator would run, for scale.

Each case runs in turns with the others inside one process, medians of many scans.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.bench.benchtable import table
from tests.conftest import FIXTURES

pytestmark = pytest.mark.usefixtures("require_root")

PROBE = textwrap.dedent("""
    import json, statistics, sys, time
    from diag.common.paths import HostPaths
    from diag.sources import sysfs
    roots = sys.argv[1:]
    times = {r: [] for r in roots}
    for r in roots:
        sysfs.scan(HostPaths.at(r), names=False)
    for _ in range(15):
        for r in roots:
            for _ in range(40):
                t = time.perf_counter()
                sysfs.scan(HostPaths.at(r), names=False)
                times[r].append(time.perf_counter() - t)
    n = {r: len(sysfs.scan(HostPaths.at(r), names=False)) for r in roots}
    print(json.dumps({r: [statistics.median(v), n[r]] for r, v in times.items()}))
""")


def test_pci_scan_confined_beside_root_slash_and_lspci(tmp_path: Path) -> None:
    """Prints the table; checks only that every case scanned the same number of devices."""
    host = tmp_path / "host"
    host.mkdir()
    (tmp_path / "probe.py").write_text(PROBE)
    lab = FIXTURES / "sysfs" / "sriov-lab"
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount --rbind / {host}\n{sys.executable} {tmp_path}/probe.py / {host} {lab}"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[2])
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    slash, (confined, n_conf), (fixture, n_lab) = got["/"][0], got[str(host)], got[str(lab)]
    t = time.perf_counter()
    for _ in range(20):
        subprocess.run(["lspci", "-D", "-k"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    lspci = (time.perf_counter() - t) / 20
    rows = [
        ("--root / (plain system calls)", f"{slash * 1e6:.0f} µs", f"{got['/'][1]}", "1.00",
         f"lspci -D -k: {lspci * 1e3:.1f} ms ({lspci / slash:.0f}x)"),
        ("--root DIR, this host bound at DIR (confined)", f"{confined * 1e6:.0f} µs", f"{n_conf}",
         f"{confined / slash:.2f}", "the DaemonSet's --root /host"),
        ("--root sriov-lab fixture tree (confined)", f"{fixture * 1e6:.0f} µs", f"{n_lab}", "",
         f"{fixture / max(n_lab, 1) * 1e6:.0f} µs per device"),
    ]
    print()
    print(table("PCI scan (names off), median of 600", ("case", "per scan", "devices", "vs /", "beside"), rows))
    assert got["/"][1] == n_conf and n_lab == 9
