"""The pure rtnetlink link decoder on the lab's real messages, checked against pyroute2's marshal."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from diag import events as ev
from diag.sources.rtnl import (
    RTM_DELLINK,
    RTM_NEWLINK,
    MalformedRtnl,
    decode_rtnl,
    dump_request,
    parse_rtnl,
)
from diag.sources.uevent.decode import DeviceTracker, decode_uevent
from tests.fixtures.dumps import load_dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

NETLINK = sorted((FIXTURES / "netlink").glob("*.dump"))
GUEST = ev.NetnsRef(inode=4026531840, is_host=True)
VF0 = "0000:01:10.0"


@pytest.mark.parametrize("path", NETLINK, ids=lambda p: p.stem)
def test_parser_agrees_with_pyroute2_marshal_on_every_recorded_message(path: Path) -> None:
    """Our minimal ifinfomsg parser reads the same fields as pyroute2 on real kernel bytes."""
    from pyroute2.netlink.rtnl.marshal import MarshalRtnl

    marshal = MarshalRtnl()
    for rec in load_dump(path):
        ours = parse_rtnl(rec.data)
        theirs = [m for m in marshal.parse(rec.data) if m["header"]["type"] in (16, 17)]
        assert len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            assert a.type == b["header"]["type"]
            assert a.ifindex == b["index"]
            assert a.flags == b["flags"]
            assert a.ifname == b.get_attr("IFLA_IFNAME")
            assert a.mac == b.get_attr("IFLA_ADDRESS")
            assert a.operstate == b.get_attr("IFLA_OPERSTATE")
            assert a.parent == b.get_attr("IFLA_PARENT_DEV_NAME")
            assert a.parent_bus == b.get_attr("IFLA_PARENT_DEV_BUS_NAME")
            carrier = b.get_attr("IFLA_CARRIER")
            assert a.carrier == (None if carrier is None else bool(carrier))


def _events(phase: str) -> list[ev.Event]:
    out: list[ev.Event] = []
    for rec in load_dump(FIXTURES / "netlink" / f"{phase}.dump"):
        out += decode_rtnl(rec.data, rec.t_real_ns, GUEST)
    return out


def _brief(e: ev.Event) -> tuple[object, ...]:
    if isinstance(e, ev.LinkChanged):
        return ("link", e.ifname, e.ifindex, e.bdf, e.operstate, e.admin_up, e.mac)
    assert isinstance(e, ev.LinkRemoved)
    return ("gone", e.ifname, e.ifindex, e.bdf)


def test_vf_netdevs_carry_their_pci_address_from_the_parent_device() -> None:
    """sriov-create: eth1/eth2 appear with the VFs' BDFs (IFLA_PARENT_DEV_*), eth0 with the PF's."""
    assert [_brief(e) for e in _events("sriov-create")] == [
        ("link", "eth0", 2, "0000:01:00.0", "DOWN", True, "52:54:00:12:34:56"),
        ("link", "eth1", 3, VF0, "DOWN", False, "4e:4b:10:de:fe:98"),
        ("link", "eth2", 4, "0000:01:10.2", "DOWN", False, "6a:13:a9:1f:5a:2b"),
        ("link", "eth0", 2, "0000:01:00.0", "UP", True, "52:54:00:12:34:56"),
    ]


def test_a_vf_restored_to_the_host_is_the_same_bdf_with_a_new_ifindex_and_mac() -> None:
    """kata38: eth1 (ifindex 3) goes, then comes back as ifindex 5 with another MAC; the BDF is
    the only stable key."""
    gone = _events("kata38-bind-vfio")
    back = _events("kata38-restore")
    assert [_brief(e) for e in gone] == [("gone", "eth1", 3, VF0)]
    assert [_brief(e) for e in back] == [("link", "eth1", 5, VF0, "DOWN", False, "d6:85:67:34:03:25")]
    assert isinstance(gone[0], ev.LinkRemoved) and isinstance(back[0], ev.LinkChanged)
    assert gone[0].netns == back[0].netns == GUEST


def test_sriov_destroy_removes_both_vf_links() -> None:
    """sriov_numvfs=0: RTM_DELLINK for eth1 (ifindex 6 by then) and eth2, then the PF flaps."""
    assert [_brief(e)[:4] for e in _events("sriov-destroy")] == [
        ("gone", "eth1", 6, VF0), ("gone", "eth2", 4, "0000:01:10.2"),
        ("link", "eth0", 2, "0000:01:00.0"), ("link", "eth0", 2, "0000:01:00.0"),
    ]


def test_merged_by_time_the_two_sockets_give_the_sriov_lab_order() -> None:
    """uevent and rtnl records of one phase sorted by receive time: RTM_DELLINK, remove net,
    unbind (no DRIVER, previous driver from state), vfio nodes, bind vfio-pci."""
    from diag.common.paths import HostPaths
    from diag.events import replace
    from diag.sources import sysfs

    devs = [replace(d, driver="igbvf", netdevs=("eth1",)) if d.bdf == VF0 else d
            for d in sysfs.scan(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"))]
    tr = DeviceTracker(devs)
    merged: list[tuple[int, ev.Event]] = []
    for rec in load_dump(FIXTURES / "uevent" / "kata38-bind-vfio.dump"):
        e = decode_uevent(rec.data, rec.t_real_ns)
        if e is not None:
            merged.append((rec.t_real_ns, tr.apply(e)))
    for rec in load_dump(FIXTURES / "netlink" / "kata38-bind-vfio.dump"):
        merged += [(rec.t_real_ns, e) for e in decode_rtnl(rec.data, rec.t_real_ns, GUEST)]
    kinds = [e.kind for _, e in sorted(merged, key=lambda p: p[0])]
    assert kinds == ["link_removed", "netdev_removed", "device_unbound", "vfio_device_added",
                     "vfio_device_added", "device_bound"]


def test_truncated_messages_raise() -> None:
    """A datagram cut inside a message or an attribute raises MalformedRtnl."""
    rec = load_dump(FIXTURES / "netlink" / "kata38-restore.dump")[0]
    with pytest.raises(MalformedRtnl):
        parse_rtnl(rec.data[:100])
    bad = bytearray(rec.data)
    struct.pack_into("=H", bad, 32, 9999)  # first rtattr's length runs past the message
    with pytest.raises(MalformedRtnl):
        parse_rtnl(bytes(bad))


def test_dump_request_is_a_getlink_dump() -> None:
    """The initial/resync request is RTM_GETLINK with NLM_F_REQUEST|NLM_F_DUMP and our seq."""
    req = dump_request(77)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", req)
    assert (length, mtype, flags, seq, pid) == (len(req), 18, 0x301, 77, 0)
    assert RTM_NEWLINK == 16 and RTM_DELLINK == 17


PHASE_ORDER = {
    "kata38-bind-vfio": ["link_removed", "netdev_removed", "device_unbound", "vfio_device_added",
                         "vfio_device_added", "device_bound"],
    "kata38-restore": ["vfio_device_removed", "vfio_device_removed", "device_unbound",
                       "netdev_added", "link_changed", "device_bound"],
    "kata30-bind-vfio": ["link_removed", "netdev_removed", "device_unbound", "vfio_device_added",
                         "vfio_device_added", "device_bound"],
    "kata30-restore": ["vfio_device_removed", "vfio_device_removed", "device_unbound",
                       "netdev_added", "link_changed", "device_bound"],
    "sriov-destroy": ["link_removed", "netdev_removed", "device_unbound", "device_removed",
                      "link_removed", "netdev_removed", "device_unbound", "device_removed",
                      "link_changed", "link_changed"],
}


@pytest.mark.parametrize("phase", sorted(PHASE_ORDER))
def test_the_pipeline_merges_two_sockets_of_a_lab_phase_into_kernel_time_order(phase: str) -> None:
    """All of a phase's uevents arrive first, then all its rtnetlink messages (the worst case of
    two sockets); the runtime's merge window hands them to the core in receive-time order."""
    from diag.common.paths import HostPaths
    from diag.core.correlator import Correlator
    from diag.events import replace
    from diag.runtime import Pipeline, PipelineOptions
    from diag.sources import sysfs

    devs = sysfs.scan(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"))
    if "bind-vfio" in phase or phase == "sriov-destroy":
        devs = [replace(d, driver="igbvf", netdevs=("eth1",)) if d.bdf == VF0 else d for d in devs]
    tr = DeviceTracker(devs)
    uevents = [tr.apply(e) for r in load_dump(FIXTURES / "uevent" / f"{phase}.dump")
               if (e := decode_uevent(r.data, r.t_real_ns)) is not None]
    links = [e for r in load_dump(FIXTURES / "netlink" / f"{phase}.dump")
             for e in decode_rtnl(r.data, r.t_real_ns, GUEST)]
    first_ns = min(e.ts_ns for e in uevents + links)
    released: list[ev.Event] = []
    # The wall clock stands still at the first event, so nothing leaves before stop() flushes.
    p = Pipeline([], correlator=Correlator(rules=[]), clock_ns=lambda: first_ns,
                 options=PipelineOptions(merge_window_ns=10**9))
    p.on_item(lambda e: released.append(e) if e.source != "runtime" else None)
    p.start()
    for e in uevents + links:
        p.emit(e)
    p.stop()
    assert [e.kind for e in released] == PHASE_ORDER[phase]
    assert p.stats.late == 0
