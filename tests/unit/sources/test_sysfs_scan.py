"""The PCI scanner over recorded sysfs trees: inventory, SR-IOV roles, per-device errors, diff."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.errors import RootError
from diag.common.paths import HostPaths
from diag.sources import sysfs


def test_ci_machine_tree_lists_six_virtio_devices(fixtures: Path) -> None:
    """The recorded tree of the CI machine gives its six devices, five on virtio-pci."""
    devs = sysfs.scan(HostPaths(fixtures / "sysfs" / "host-virtio"))
    assert [d.bdf for d in devs] == [f"0000:00:0{i}.0" for i in range(6)]
    assert [d.driver for d in devs] == [None] + ["virtio-pci"] * 5
    net = devs[3]
    assert (net.vendor, net.device, net.class_code) == ("1af4", "1041", "020000")
    assert all(d.role == "none" and d.iommu_group is None and not d.errors for d in devs)


def test_missing_attribute_is_reported_per_device_not_raised(fixtures: Path, tmp_path: Path) -> None:
    """A device whose vendor file is gone scans with `vendor: missing`; the others are intact."""
    root = tmp_path / "root"
    shutil.copytree(fixtures / "sysfs" / "host-virtio", root, symlinks=True)
    dev = Path(os.path.realpath(root / "sys/bus/pci/devices/0000:00:02.0"))
    (dev / "vendor").unlink()
    devs = {d.bdf: d for d in sysfs.scan(HostPaths(root))}
    assert devs["0000:00:02.0"].errors == ("vendor: missing",)
    assert devs["0000:00:02.0"].vendor == ""
    assert devs["0000:00:02.0"].driver == "virtio-pci"
    assert not devs["0000:00:03.0"].errors


def test_root_without_sysfs_is_a_clear_error(tmp_path: Path) -> None:
    """A --root with no /sys/bus/pci names the path it looked for."""
    with pytest.raises(RootError, match=str(tmp_path / "sys/bus/pci/devices")):
        sysfs.scan(HostPaths(tmp_path))


def test_diff_turns_a_rebind_into_resync_events() -> None:
    """Two scans that differ in driver and override give unbind, bind and change, marked resync."""
    a = ev.PciDevice(bdf="0000:01:10.0", driver="igbvf", netdevs=("eth1",))
    b = ev.PciDevice(bdf="0000:01:10.0", driver="vfio-pci", driver_override="vfio-pci")
    out = sysfs.diff([a], [b], ts_ns=5, source="uevent")
    kinds = [type(e).__name__ for e in out]
    assert kinds == ["DeviceUnbound", "DeviceBound", "DeviceChanged", "NetdevRemoved"]
    assert out[0].previous_driver == "igbvf"  # type: ignore[attr-defined]
    assert out[1].previous_driver == "igbvf"  # type: ignore[attr-defined]
    assert all(e.resync and e.ts_ns == 5 for e in out)
    assert sysfs.diff([a], [a], ts_ns=5, source="x") == []


def test_sriov_lab_tree_nests_vfs_under_their_pf(fixtures: Path) -> None:
    """The lab guest's tree: igb PF with two VFs, one on igbvf with eth2, one on vfio-pci."""
    devs = {d.bdf: d for d in sysfs.scan(HostPaths(fixtures / "sysfs" / "sriov-lab"))}
    pf, vf0, vf1 = devs["0000:01:00.0"], devs["0000:01:10.0"], devs["0000:01:10.2"]
    assert (pf.role, pf.driver, pf.sriov_numvfs, pf.sriov_totalvfs) == ("pf", "igb", 2, 7)
    assert pf.vfs == ("0000:01:10.0", "0000:01:10.2") and pf.netdevs == ("eth0",)
    assert (vf0.role, vf0.pf, vf0.vf_index, vf0.driver) == ("vf", "0000:01:00.0", 0, "vfio-pci")
    assert vf0.driver_override == "vfio-pci" and vf0.netdevs == ()
    assert vf0.vfio_group_path == f"/dev/vfio/{vf0.iommu_group}"
    assert (vf1.vf_index, vf1.driver, vf1.netdevs, vf1.vfio_group_path) == (1, "igbvf", ("eth2",), None)
    order = [(d.bdf, depth) for d, depth in sysfs.pf_vf_order(devs.values())]
    i = order.index(("0000:01:00.0", 0))
    assert order[i + 1 : i + 3] == [("0000:01:10.0", 1), ("0000:01:10.2", 1)]
    assert all(not d.errors for d in devs.values())


def test_a_big_sriov_tree_gives_every_vf_its_index_and_pf(tmp_path: Path) -> None:
    """4 PFs x 40 VFs (big_tree): every VF's vf_index is the N of the virtfnN that points at
    it and its pf the PF's address; each PF lists its VFs in index order; no errors."""
    from tests.fixtures.bigsysfs import big_tree, vf_bdf

    big_tree(tmp_path / "r", 4, 40)
    devices = {d.bdf: d for d in sysfs.scan(HostPaths.at(tmp_path / "r"), names=False)}
    for p in range(4):
        pf = devices[f"0000:{0x20 + p * 4:02x}:00.0"]
        assert pf.role == "pf" and pf.sriov_numvfs == 40
        assert pf.vfs == tuple(vf_bdf(p, k) for k in range(40))
        for k in range(40):
            vf = devices[vf_bdf(p, k)]
            assert (vf.role, vf.pf, vf.vf_index, vf.errors) == ("vf", pf.bdf, k, ())
