"""`vfiowatch sandboxes` and the sandbox columns of `snapshot`, on a Kata host tree.

The tree joins two recorded fixtures (the SR-IOV lab's sysfs, where VF 0000:01:10.0 sits on
vfio-pci in IOMMU group 5, and the hand-written `go-physical` Kata host whose sandbox uses that
VF) with /proc entries for its shim and its QEMU, which holds /dev/vfio/5 open.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diag import cli
from tests.conftest import FIXTURES

SID = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
QEMU_PID, SHIM_PID = 2462877, 2462800
CONFIG = "/opt/kata/share/defaults/kata-containers/runtimes/qemu/configuration-qemu.toml"


def kata_host(tmp_path: Path) -> Path:
    """The joined tree (see the module docstring)."""
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "sysfs" / "sriov-lab", root, symlinks=True)
    shutil.copytree(FIXTURES / "kata" / "go-physical", root, symlinks=True, dirs_exist_ok=True)
    qemu = root / "proc" / str(QEMU_PID)
    (qemu / "fd").mkdir(parents=True)
    (qemu / "comm").write_text("qemu-system-x86\n")
    (qemu / "cmdline").write_bytes(b"\0".join([
        b"/opt/kata/bin/qemu-system-x86_64", b"-name", f"sandbox-{SID}".encode(),
        b"-device", b"vfio-pci,host=0000:01:10.0,bus=rp0"]) + b"\0")
    (qemu / "fd" / "7").symlink_to("/dev/vfio/5")
    (qemu / "ns").mkdir()
    (qemu / "ns" / "net").symlink_to("net:[4026532999]")
    shim = root / "proc" / str(SHIM_PID)
    shim.mkdir()
    (shim / "comm").write_text("containerd-shim\n")
    (shim / "cmdline").write_bytes(b"\0".join([
        b"/opt/kata/bin/containerd-shim-kata-v2", b"-namespace", b"k8s.io", b"-id",
        SID.encode()]) + b"\0")
    return root


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert cli.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_sandboxes_json_names_handler_sandbox_vfs_and_qemus_groups(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """JSON: the handler with its cold_plug_vfio and origin; the sandbox with runtime, pod,
    namespace, QEMU pid and network namespace, its VF (original host driver, driver now,
    netdev, group held by QEMU) and QEMU's vfio-pci devices."""
    doc = _json(capsys, "--root", str(kata_host(tmp_path)), "sandboxes", "--format", "json")
    assert (doc["schema"], doc["kind"]) == (1, "vfiowatch_sandboxes")
    [h] = doc["handlers"]
    assert (h["handler"], h["runtime"], h["cold_plug_vfio"], h["cold_plug_origin"]) == (
        "kata-qemu", "go", "root-port", f"file:{CONFIG}")
    [sb] = doc["sandboxes"]
    assert (sb["sandbox_id"], sb["runtime"], sb["handler"], sb["pod"], sb["namespace"]) == (
        SID, "go", "kata-qemu", "sriov-pod", "default")
    assert (sb["vmm_pid"], sb["shim_pid"], sb["cold_plug_vfio"]) == (QEMU_PID, SHIM_PID, "root-port")
    assert sb["netns"] == f"pid:{QEMU_PID}"
    assert sb["vfs"] == [{"bdf": "0000:01:10.0", "host_driver": "igbvf", "driver": "vfio-pci",
                          "netdevs": [], "iommu_group": 5, "vfio_group_path": "/dev/vfio/5",
                          "held_by_vmm": True}]
    assert sb["vmm_vfio_devices"] == [{"bdf": "0000:01:10.0", "bus": "rp0"}]
    assert sb["vmm_held_groups"] == [{"group": 5, "path": "/dev/vfio/5", "devices": ["0000:01:10.0"]}]
    assert doc["problems"] == [] and doc["refused"] == []


def test_sandboxes_table_nests_the_vfs_under_their_sandbox(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The table: a handler row, a sandbox row, then the VF and what QEMU holds under it."""
    assert cli.main(["sandboxes", "--root", str(kata_host(tmp_path))]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[1].split() == ["HANDLER", "RUNTIME", "COLD_PLUG_VFIO", "FROM", "CONFIG"]
    assert out[2].split() == ["kata-qemu", "go", "root-port", "file", CONFIG]
    row = out.index(next(line for line in out if line.startswith(SID[:12])))
    assert out[row].split() == [SID[:12], "go", "kata-qemu", "default", "sriov-pod", "root-port",
                                str(QEMU_PID), "1", "running"]
    assert out[row + 1].split() == ["└", "VF", "0000:01:10.0", "host", "driver", "igbvf", "now",
                                    "vfio-pci", "netdev", "-", "/dev/vfio/5", "held", "by", "QEMU"]
    assert "QEMU holds /dev/vfio/5: 0000:01:10.0" in out[row + 3]


def test_a_host_without_kata_says_so(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No Kata installed: the assumed built-in default, and no sandbox."""
    assert cli.main(["sandboxes", "--root", str(fixtures / "sysfs" / "sriov-lab")]) == 0
    out = capsys.readouterr().out
    assert "no-port (assumed)" in out and "(none: Kata's built-in defaults)" in out
    assert "Kata sandboxes (0)\n(none running)" in out


def test_snapshot_rows_carry_the_sandbox_pod_and_namespace(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """snapshot JSON gives every device sandbox_id, pod and namespace (null when none); the
    table shows the sandbox prefix and namespace/pod on the VF's row."""
    root = kata_host(tmp_path)
    doc = _json(capsys, "--root", str(root), "snapshot", "--format", "json")
    devs = {d["bdf"]: d for d in doc["devices"]}
    assert {k: devs["0000:01:10.0"][k] for k in ("sandbox_id", "pod", "namespace")} == {
        "sandbox_id": SID, "pod": "sriov-pod", "namespace": "default"}
    assert all(d["sandbox_id"] is None and d["pod"] is None and d["namespace"] is None
               for bdf, d in devs.items() if bdf != "0000:01:10.0")
    assert cli.main(["--root", str(root), "snapshot"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[-2:] == ["SANDBOX", "POD"]
    vf = next(line for line in out if "0000:01:10.0" in line)
    assert vf.split()[-2:] == [SID[:12], "default/sriov-pod"]
