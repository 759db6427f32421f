"""`vfiowatch check` on VF passthrough, as `kata-runtime check` would: IOMMU, vfio modules, SR-IOV, marks.

Trees are the SR-IOV lab's recorded sysfs (PF 0000:01:00.0 on igb with 2 of 7 VFs, IOMMU
dmar0 with groups 0-6, vfio-pci loaded) with one thing changed per test.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diag import cli
from tests.conftest import FIXTURES

PF = "sys/devices/pci0000:00/0000:00:02.0/0000:01:00.0"


def lab(tmp_path: Path, cmdline: str | None = "BOOT_IMAGE=/vmlinuz intel_iommu=on iommu=pt quiet") -> Path:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "sysfs" / "sriov-lab", root, symlinks=True)
    if cmdline is not None:
        (root / "proc").mkdir()
        (root / "proc" / "cmdline").write_text(cmdline + "\n")
    return root


def checks(capsys: pytest.CaptureFixture[str], root: Path) -> tuple[dict[str, dict], list[str]]:
    """(name -> JSON line, text lines) of `check` on `root`."""
    assert cli.main(["--root", str(root), "check", "--format", "json"]) == 0
    by = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    cli.main(["--root", str(root), "check"])
    return by, capsys.readouterr().out.splitlines()


def line(text: list[str], name: str) -> str:
    return next(t for t in text if t[2:].startswith(name + " "))


def test_a_vf_host_in_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The lab: IOMMU on with its groups and the command line's switches, vfio and vfio-pci
    loaded, the PF with its VF count, driver and netdev: all ✓."""
    by, text = checks(capsys, lab(tmp_path))
    assert by["iommu"]["status"] == "ok"
    assert by["iommu"]["detail"] == ("on: dmar0, 7 IOMMU groups; kernel command line: "
                                     "intel_iommu=on iommu=pt")
    assert (by["vfio modules"]["status"], by["vfio modules"]["detail"]) == (
        "ok", "vfio (present), vfio-pci (present)")
    assert (by["sr-iov"]["status"], by["sr-iov"]["detail"]) == (
        "ok", "1 PF: 0000:01:00.0 (igb, eth0) 2/7 VFs")
    assert line(text, "sr-iov").startswith("✓ sr-iov")


def test_kprobes_are_optional_an_iommu_is_not(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """IOMMU turned off on the command line (no groups): ✗ with the switch to remove. kprobes
    missing (the tree has no kprobe PMU): the warning mark !, not the same ✗."""
    root = lab(tmp_path, "BOOT_IMAGE=/vmlinuz intel_iommu=off")
    shutil.rmtree(root / "sys" / "kernel" / "iommu_groups")
    (root / "sys" / "kernel" / "iommu_groups").mkdir()
    by, text = checks(capsys, root)
    assert by["iommu"]["status"] == "fail" and not by["iommu"]["fatal"]
    assert by["iommu"]["detail"].startswith("off: no IOMMU groups")
    assert "kernel command line: intel_iommu=off" in by["iommu"]["detail"]
    assert by["iommu"]["fix"].startswith("remove intel_iommu=off from the kernel command line")
    assert by["kprobes"]["status"] == "warn"
    assert line(text, "iommu").startswith("✗ iommu")
    assert line(text, "kprobes").startswith("! kprobes")
    assert text[-1] == "can run: yes"


def test_vfio_pci_not_loaded_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No vfio-pci driver: ✗ naming it with the modprobe and the boot-time fix; vfio itself
    loaded as a module (its initstate) is said so."""
    root = lab(tmp_path)
    shutil.rmtree(root / "sys" / "bus" / "pci" / "drivers" / "vfio-pci")
    (root / "sys" / "module" / "vfio").mkdir(parents=True)
    (root / "sys" / "module" / "vfio" / "initstate").write_text("live\n")
    by, _text = checks(capsys, root)
    c = by["vfio modules"]
    assert (c["status"], c["detail"]) == (
        "fail", "not loaded: vfio-pci (loaded: vfio (module)): Kata cannot bind VFs to vfio-pci")
    assert c["fix"].startswith("modprobe vfio-pci")


def test_sriov_without_vfs_or_without_pfs_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A PF with no VF enabled: ! with the sriov_numvfs fix; a host with no PF at all: ! too."""
    root = lab(tmp_path)
    (root / PF / "sriov_numvfs").write_text("0\n")
    by, _ = checks(capsys, root)
    assert by["sr-iov"]["status"] == "warn"
    assert by["sr-iov"]["detail"] == "1 PF: 0000:01:00.0 (igb, eth0) 0/7 VFs: no VF enabled"
    assert by["sr-iov"]["fix"].startswith("echo N > /sys/bus/pci/devices/0000:01:00.0/sriov_numvfs")
    by, _ = checks(capsys, FIXTURES / "sysfs" / "host-virtio")
    assert by["sr-iov"]["status"] == "warn"
    assert by["sr-iov"]["detail"].startswith("no SR-IOV physical function on this host")


def test_an_unreadable_command_line_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A tree without /proc/cmdline: the IOMMU line still judges by the groups and says the
    command line could not be read."""
    by, _ = checks(capsys, lab(tmp_path, cmdline=None))
    assert by["iommu"]["status"] == "ok"
    assert by["iommu"]["detail"].endswith("; kernel command line unreadable")
