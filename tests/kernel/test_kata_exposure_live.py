"""The issue's done-when, live: `vfiowatch run` on a Kata 3.8 host tree (dpkg, no-port, a VF) scraped by a real
Prometheus, and `vfiowatch check` on the same tree; the root-port-only drop-in trades #10162 for #5676, the
drop-in with a root port ends both, in the check line, the finding, the metric and the fleet query."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from diag.testing import wait_for
from tests.conftest import vfiowatch_bin
from tests.kernel.test_service_live import Agent, Prometheus, agents, prometheus  # noqa: F401 - fixtures
from tests.unit.sources.test_kata_exposure_matrix import host

DROPIN = "usr/share/defaults/kata-containers/config.d/90-vfiowatch-vfio-cold-plug.toml"
FLEET = "max by (instance, handler, issue) (vfiowatch_kata_exposure == 1)"
"""The README's query: every node and handler exposed now."""


def check_line(root: Path) -> tuple[str, str]:
    """`vfiowatch --root <root> check` as an operator runs it: the exposure line and the line after (its fix)."""
    p = subprocess.run([vfiowatch_bin(), "--root", str(root), "check"], capture_output=True, text=True, timeout=120)
    lines = p.stdout.splitlines()
    i = next(n for n, x in enumerate(lines) if "kata exposure" in x)
    return lines[i], lines[i + 1] if i + 1 < len(lines) else ""


def write(root: Path, text: str) -> None:
    """The drop-in written whole, at once (as an operator's tool writes it)."""
    target = root / DROPIN
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, target)


def test_done_when_exposed_host_then_the_fixing_drop_in(
        agents: Callable[..., Agent], prometheus: Callable[[list[str]], Prometheus],  # noqa: F811
        tmp_path: Path) -> None:
    """Exposed: check fails naming #10162, dpkg as the version's source and the drop-in; the finding opens
    (error); Prometheus holds vfiowatch_kata_exposure{handler="kata",issue="10162"} = 1 and the fleet query
    finds the node. root-port alone: #10162 resolves, #5676 (Bus 'rp0') opens, in check and metric. With
    pcie_root_port = 1: check passes, every finding resolved, no series, the fleet query is empty."""
    root = host(tmp_path, "go38-noport", "vfs")
    line, fix = check_line(root)
    assert line.startswith("✗ kata exposure") and "exposed to Kata #10162 (error)" in line
    assert "read from dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status)" in line
    assert 'cold_plug_vfio = "root-port"; pcie_root_port = 1' in fix

    a = agents("--sources", "kata", env={"VFIOWATCH_ROOT": str(root)}, sources=("kata",))

    def exposure_record(status: str, issue: str) -> dict[str, object]:
        return a.wait_for(lambda d: d["event"] == "finding" and d["rule"] == "kata-vfio-exposure"
                          and d["status"] == status and issue in d["finding_id"].split("/"))

    opened = exposure_record("open", "10162")
    assert opened["severity"] == "error"
    assert wait_for(lambda: a.metric("vfiowatch_kata_exposure") == {"handler=kata,issue=10162": 1.0}, 10)
    prom = prometheus([f"127.0.0.1:{a.port}"])
    (series,) = prom.until('vfiowatch_kata_exposure{handler="kata"}', bool)
    assert series["metric"]["issue"] == "10162" and series["value"][1] == "1"
    (fleet,) = prom.until(FLEET, bool)
    assert fleet["metric"] == {"instance": f"127.0.0.1:{a.port}", "handler": "kata", "issue": "10162"}

    write(root, '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n')  # the issue's literal drop-in
    resolved = exposure_record("resolved", "10162")
    assert resolved["finding_id"] == opened["finding_id"]
    assert str(resolved["resolved_reason"]).startswith("cold_plug_vfio is now 'root-port'")
    rp0 = exposure_record("open", "5676")
    assert wait_for(lambda: a.metric("vfiowatch_kata_exposure") == {"handler=kata,issue=5676": 1.0}, 10)
    prom.until(FLEET, lambda r: [x["metric"]["issue"] for x in r] == ["5676"])
    line, fix = check_line(root)
    assert "Kata #5676" in line and "Kata #10162" not in line and "pcie_root_port = 1" in fix

    write(root, '[hypervisor.qemu]\ncold_plug_vfio = "root-port"\npcie_root_port = 1\n')
    gone = exposure_record("resolved", "5676")
    assert gone["finding_id"] == rp0["finding_id"]
    assert wait_for(lambda: a.metric("vfiowatch_kata_exposure") == {}, 10)
    prom.until(FLEET, lambda r: r == [])
    prom.until("vfiowatch_kata_exposure", lambda r: r == [])
    line, _ = check_line(root)
    assert line.startswith("✓ kata exposure") and "not exposed to a known Kata VFIO bug" in line
