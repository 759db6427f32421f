"""Exposure of every fixture host tree (version timeline x configuration x VFs), and the drop-in that fixes it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata.exposure import host_exposure
from diag.sources.sysfs import scan
from tests.conftest import REPO

TREES = REPO / "tests" / "fixtures" / "kata-exposure"
SYSFS = REPO / "tests" / "fixtures" / "sysfs"

EXPECTED = {
    "go32-noport": [("9014", "error")], "go32-dropin": [("9014", "error")], "go32-annotation": [("9014", "error")],
    "go38-noport": [("10162", "error")], "go38-dropin": [], "go38-annotation": [("10162", "error")],
    "go39-noport": [("10210", "warning")], "go39-dropin": [], "go39-annotation": [("10210", "warning")],
    "go41-noport": [("10210", "warning")], "go41-dropin": [("13837", "error")],
    "go41-annotation": [("10210", "warning"), ("13837", "error")],
    "rs41-noport": [("10162", "error")], "rs41-dropin": [], "rs41-annotation": [("10162", "error")],
    "unknown-noport": [("unknown-version", "warning")], "unknown-dropin": [("unknown-version", "warning")],
    "unknown-annotation": [("unknown-version", "warning")],
}
VERSION_SOURCE = {"go32": ("dpkg", "3.2.0"), "go38": ("dpkg", "3.8.0"), "go39": ("kata-deploy", "3.9.0"),
                  "go41": ("kata-deploy", "4.1.0"), "rs41": ("kata-deploy", "4.1.0"), "unknown": (None, None)}


@pytest.fixture(scope="module")
def inventories() -> dict[str, list[ev.PciDevice]]:
    return {"vfs": scan(HostPaths.at(SYSFS / "sriov-lab"), names=False),
            "none": scan(HostPaths.at(SYSFS / "host-virtio"), names=False)}


def test_every_tree_is_in_the_table() -> None:
    """The builder's trees and the expected table name the same 18 trees."""
    assert sorted(p.name for p in TREES.iterdir() if p.is_dir()) == sorted(EXPECTED)


@pytest.mark.parametrize("inv", ["vfs", "none"])
@pytest.mark.parametrize("tree", sorted(EXPECTED))
def test_each_tree_gives_its_expected_exposure(tree: str, inv: str, inventories: dict[str, list[ev.PciDevice]]) -> None:
    """Version (and its source), runtime, effective cold_plug_vfio and the VFs give the table's rows; no VF: latent."""
    he = host_exposure(HostPaths.at(TREES / tree), devices=inventories[inv])
    (facts,), (a,) = he.facts, he.assessments
    src, ver = VERSION_SOURCE[tree.split("-")[0]]
    assert (facts.version_source.source if facts.version_source else None, str(facts.version) if facts.version else None) == (src, ver)
    assert facts.runtime == ("rs" if tree.startswith("rs") else "go")
    assert facts.cold_plug_vfio == ("root-port" if tree.endswith("dropin") else "no-port")
    assert facts.annotation_enabled == tree.endswith("annotation")
    assert [(r.issue, r.severity.label) for r in a.rows] == EXPECTED[tree]
    assert all(r.exposed == (inv == "vfs") for r in a.rows)
    assert [v.bdf for v in facts.vfs] == (["0000:01:10.2"] if inv == "vfs" else [])


def test_the_suggested_drop_in_resolves_the_10162_exposure(tmp_path: Path, inventories: dict[str, list[ev.PciDevice]]) -> None:
    """Kata 3.8 from dpkg, no-port, a VF: #10162 with dpkg as the source; writing the drop-in it names clears it."""
    root = tmp_path / "host"
    shutil.copytree(TREES / "go38-noport", root, symlinks=True)
    (row,) = host_exposure(HostPaths.at(root), devices=inventories["vfs"]).assessments[0].rows
    assert row.issue == "10162" and row.severity is ev.Severity.ERROR
    assert row.why[0] == ("Kata 3.8.0 (Go runtime), read from dpkg kata-containers 3.8.0-1 (/var/lib/dpkg/status) "
                          "owns /usr/bin/containerd-shim-kata-v2")
    path, _, _ = row.dropin.partition("\n")
    target = root / path.removeprefix("# /")
    target.parent.mkdir(parents=True)
    target.write_text(row.dropin)
    assert host_exposure(HostPaths.at(root), devices=inventories["vfs"]).assessments[0].rows == ()


def test_root_port_without_root_ports_is_still_exposed(tmp_path: Path, inventories: dict[str, list[ev.PciDevice]]) -> None:
    """A drop-in with root-port alone (pcie_root_port stays 0) trades #10162 for 'Bus rp0 not found' (inference)."""
    root = tmp_path / "host"
    shutil.copytree(TREES / "go38-noport", root, symlinks=True)
    d = root / "usr/share/defaults/kata-containers/config.d"
    d.mkdir()
    (d / "50-root-port.toml").write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n')
    (row,) = host_exposure(HostPaths.at(root), devices=inventories["vfs"]).assessments[0].rows
    assert (row.issue, row.inference) == ("5676", True)
