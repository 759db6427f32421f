"""The lab's recorded netlink dumps load, and hold the kernel sequences the design relies on."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from tests.fixtures.dumps import Record, load_dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

DUMPS = sorted((FIXTURES / "uevent").glob("*.dump")) + sorted((FIXTURES / "netlink").glob("*.dump"))


def _uevent(rec: Record) -> tuple[str, dict[str, str]]:
    head, *fields = rec.data.rstrip(b"\0").split(b"\0")
    return head.decode(), dict(f.decode().split("=", 1) for f in fields)


@pytest.mark.parametrize("path", DUMPS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_dump_loads_in_time_order(path: Path) -> None:
    """Each dump parses, its records come from one socket kind and are in receive order."""
    recs = load_dump(path)
    kind = "uevent" if path.parent.name == "uevent" else "rtnl"
    assert all(r.socket == kind for r in recs)
    assert [r.t_mono_ns for r in recs] == sorted(r.t_mono_ns for r in recs)


def test_rtnl_datagrams_are_whole_netlink_messages() -> None:
    """Every rtnl datagram is a run of nlmsghdr whose lengths add up to the datagram."""
    for path in sorted((FIXTURES / "netlink").glob("*.dump")):
        for rec in load_dump(path):
            off = 0
            while off < len(rec.data):
                (length,) = struct.unpack_from("=I", rec.data, off)
                assert length >= 16
                off += (length + 3) & ~3
            assert off == len(rec.data)


def test_kata38_bind_sequence_is_remove_net_unbind_then_vfio_bind() -> None:
    """Kata >=3.8's move shows remove net, unbind without DRIVER, then bind DRIVER=vfio-pci."""
    evs = [_uevent(r) for r in load_dump(FIXTURES / "uevent" / "kata38-bind-vfio.dump")]
    pci = [(h.split("@")[0], f.get("DRIVER")) for h, f in evs if f.get("SUBSYSTEM") == "pci"]
    assert pci == [("unbind", None), ("bind", "vfio-pci")]
    assert any(h.startswith("remove@") and f.get("INTERFACE") == "eth1" for h, f in evs)
    assert any(h == "add@/devices/virtual/vfio/5" and f.get("DEVNAME") == "vfio/5" for h, f in evs)


def test_kata30_new_id_binds_before_explicit_bind() -> None:
    """In the 3.0-3.7 sequence vfio-pci binds on new_id; the explicit bind write gets EBUSY."""
    path = FIXTURES / "uevent" / "kata30-bind-vfio.dump"
    header = path.read_text()
    assert "drivers/vfio-pci/bind <- '0000:01:10.0': EBUSY" in header
    evs = [_uevent(r) for r in load_dump(path)]
    assert [h.split("@")[0] for h, f in evs if f.get("SUBSYSTEM") == "pci"] == ["unbind", "bind"]


def test_sysfs_copy_has_vf_on_vfio_and_relative_links() -> None:
    """The sysfs fixture has VF 01:10.0 on vfio-pci (override set) and links that resolve inside."""
    root = FIXTURES / "sysfs" / "sriov-lab"
    vf = root / "sys/bus/pci/devices/0000:01:10.0"
    assert (vf / "driver").resolve().name == "vfio-pci"
    assert (vf / "driver_override").read_text().strip() == "vfio-pci"
    assert (root / "dev/vfio" / (vf / "iommu_group").resolve().name).is_file()
    for link in root.rglob("*"):
        if link.is_symlink():
            assert not Path(link.readlink()).is_absolute()
            assert link.resolve().is_relative_to(root.resolve()), link
