"""The decoders on real datagrams recorded on this machine kind (tests/fixtures/host)."""

from __future__ import annotations

from pathlib import Path

from diag import events as ev
from diag.sources.rtnl import decode_rtnl
from diag.sources.uevent.decode import DeviceTracker, decode_uevent
from tests.fixtures.dumps import load_dump

HOST = Path(__file__).resolve().parents[2] / "fixtures" / "host"


def test_synthetic_uevents_from_this_machine_decode_marked_synthetic() -> None:
    """Every kept synthetic datagram decodes to its event with synthetic=True; the virtio
    device's unbind names its driver, the driverless bridge's gets it from state (none here),
    lo's change (a virtual netdev) is dropped; like the core, the view does not move."""
    recs = load_dump(HOST / "host-synthetic.uevent.dump")
    tr = DeviceTracker([ev.PciDevice(bdf="0000:00:00.0", driver=None),
                        ev.PciDevice(bdf="0000:00:01.0", driver="virtio-pci")])
    decoded = [decode_uevent(r.data, r.t_real_ns) for r in recs]
    out = [tr.apply(e) for e in decoded if e is not None]
    assert all(e.synthetic and not e.resync for e in out)
    summary = [(e.kind, getattr(e, "bdf", getattr(e, "driver", None))) for e in out]
    assert summary == [
        ("device_bound", "0000:00:01.0"), ("device_changed", "0000:00:01.0"),
        ("device_unbound", "0000:00:01.0"), ("device_unbound", "0000:00:00.0"),
        ("device_added", "0000:00:01.0"), ("driver_registered", "virtio-pci"),
        ("device_changed", "0000:00:01.0"),
    ]
    unbinds = [e for e in out if isinstance(e, ev.DeviceUnbound)]
    assert [e.previous_driver for e in unbinds] == ["virtio-pci", None]
    assert sum(e is None for e in decoded) == 1
    # As in the core: a synthetic unbind claims a move that did not happen; the view keeps it.
    assert tr.driver("0000:00:01.0") == "virtio-pci"


def test_a_veth_ends_life_in_a_namespace_decodes_in_order() -> None:
    """Arrive, up, down, rename, leave, come back, delete: one event per kernel message, the
    same ifindex throughout, the namespace given by the caller."""
    ref = ev.NetnsRef(inode=4026532000, name="vwrec-a")
    events = [e for r in load_dump(HOST / "host-veth-netns.rtnl.dump")
              for e in decode_rtnl(r.data, r.t_real_ns, ref)]
    story = [(e.kind, e.ifname, getattr(e, "admin_up", None)) for e in events]
    assert story == [
        ("link_changed", "vwrec1", False), ("link_changed", "vwrec1", True),
        ("link_changed", "vwrec1", False), ("link_changed", "vwrec1r", False),
        ("link_removed", "vwrec1r", None), ("link_changed", "vwrec1r", False),
        ("link_removed", "vwrec1r", None),
    ]
    assert len({e.ifindex for e in events}) == 1  # type: ignore[attr-defined]
    assert all(e.netns == ref and e.bdf is None for e in events)  # type: ignore[attr-defined]
    assert {e.link_kind for e in events if isinstance(e, ev.LinkChanged)} == {"veth"}
