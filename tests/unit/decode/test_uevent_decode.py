"""The pure uevent decoder and driver tracker on the lab's real igb/igbvf/vfio-pci datagrams."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.events import replace
from diag.sources import sysfs
from diag.sources.uevent.decode import DeviceTracker, MalformedUevent, decode_uevent
from tests.fixtures.dumps import load_dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"

VF0 = "0000:01:10.0"
VF2 = "0000:01:10.2"
PF = "0000:01:00.0"


def _lab_devices(**vf0: object) -> list[ev.PciDevice]:
    """The lab's sysfs fixture (VF0 on vfio-pci), with VF0 changed as given."""
    devs = sysfs.scan(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"))
    return [replace(d, **vf0) if d.bdf == VF0 else d for d in devs]  # type: ignore[arg-type]


def _play(tracker: DeviceTracker, phase: str) -> list[ev.Event]:
    out = []
    for rec in load_dump(FIXTURES / "uevent" / f"{phase}.dump"):
        e = decode_uevent(rec.data, rec.t_real_ns)
        if e is not None:
            out.append(tracker.apply(e))
    return out


def _brief(e: ev.Event) -> tuple[object, ...]:
    if isinstance(e, ev.DeviceBound):
        return ("bound", e.bdf, e.driver, e.previous_driver)
    if isinstance(e, ev.DeviceUnbound):
        return ("unbound", e.bdf, e.previous_driver)
    if isinstance(e, ev.DeviceAdded):
        return ("added", e.bdf, e.vendor, e.device, e.class_code)
    if isinstance(e, ev.DeviceRemoved):
        return ("removed", e.bdf)
    if isinstance(e, ev.DeviceChanged):
        return ("changed", e.bdf, e.driver)
    if isinstance(e, ev.NetdevAdded):
        return ("netdev+", e.bdf, e.ifname, e.ifindex)
    if isinstance(e, ev.NetdevRemoved):
        return ("netdev-", e.bdf, e.ifname, e.ifindex)
    if isinstance(e, ev.VfioDeviceAdded):
        return ("vfio+", e.bdf, e.group, e.devname)
    if isinstance(e, ev.VfioDeviceRemoved):
        return ("vfio-", e.bdf, e.group, e.devname)
    if isinstance(e, ev.DriverRegistered):
        return ("driver+", e.bus, e.driver)
    return (e.kind,)


def test_pf_probe_keeps_the_pf_bind_and_pci_driver_registrations_only() -> None:
    """modprobe igb/igbvf/vfio-pci: the PF's netdev and bind, three PCI drivers; queues, modules,
    wakeup, ptp and misc are dropped."""
    tr = DeviceTracker(_lab_devices())
    assert [_brief(e) for e in _play(tr, "pf-probe")] == [
        ("netdev+", PF, "eth0", 2),
        ("bound", PF, "igb", None),
        ("driver+", "pci", "igb"),
        ("driver+", "pci", "igbvf"),
        ("driver+", "pci", "vfio-pci"),
    ]


def test_sriov_create_gives_per_vf_add_change_netdev_bind_then_pf_change() -> None:
    """sriov-lab.md: per VF `add pci`, `change pci` (no DRIVER), `add net`, `bind igbvf`; then
    `change pci DRIVER=igb` for the PF."""
    pf_only = [d for d in _lab_devices() if d.bdf not in (VF0, VF2)]
    tr = DeviceTracker(pf_only)
    assert [_brief(e) for e in _play(tr, "sriov-create")] == [
        ("added", VF0, "8086", "10ca", "020000"),
        ("changed", VF0, None),
        ("netdev+", VF0, "eth1", 3),
        ("bound", VF0, "igbvf", None),
        ("added", VF2, "8086", "10ca", "020000"),
        ("changed", VF2, None),
        ("netdev+", VF2, "eth2", 4),
        ("bound", VF2, "igbvf", None),
        ("changed", PF, "igb"),
    ]
    assert tr.driver(VF0) == "igbvf" and tr.devices[VF0].netdevs == ("eth1",)


@pytest.mark.parametrize("phase", ["kata38-bind-vfio", "kata30-bind-vfio"])
def test_bind_to_vfio_unbind_carries_the_previous_driver_from_state(phase: str) -> None:
    """Kata's BindDevicetoVFIO: netdev removed, unbind (no DRIVER in the datagram) reported as
    leaving igbvf, the vfio group and vfio-dev nodes tied to the VF, bind to vfio-pci."""
    ifindex = 3 if phase.startswith("kata38") else 5
    tr = DeviceTracker(_lab_devices(driver="igbvf", driver_override=None, netdevs=("eth1",)))
    raw = [r.data for r in load_dump(FIXTURES / "uevent" / f"{phase}.dump")]
    assert any(d.startswith(b"unbind@") and b"DRIVER=" not in d for d in raw)
    assert [_brief(e) for e in _play(tr, phase)] == [
        ("netdev-", VF0, "eth1", ifindex),
        ("unbound", VF0, "igbvf"),
        ("vfio+", VF0, 5, "vfio/5"),
        ("vfio+", VF0, 5, "vfio-dev/vfio0"),
        ("bound", VF0, "vfio-pci", "igbvf"),
    ]
    assert tr.driver(VF0) == "vfio-pci"


@pytest.mark.parametrize("phase", ["kata38-restore", "kata30-restore"])
def test_restore_to_host_reports_leaving_vfio_and_the_netdev_with_a_new_ifindex(phase: str) -> None:
    """BindDevicetoHost: vfio nodes removed, unbind from vfio-pci, eth1 back with a new ifindex,
    bind igbvf with vfio-pci as the previous driver."""
    ifindex = 5 if phase.startswith("kata38") else 6
    tr = DeviceTracker(_lab_devices())
    assert [_brief(e) for e in _play(tr, phase)] == [
        ("vfio-", VF0, 5, "vfio-dev/vfio0"),
        ("vfio-", VF0, 5, "vfio/5"),
        ("unbound", VF0, "vfio-pci"),
        ("netdev+", VF0, "eth1", ifindex),
        ("bound", VF0, "igbvf", "vfio-pci"),
    ]


def test_the_whole_lab_session_in_order_ends_with_the_pf_alone() -> None:
    """All phases replayed into one tracker: every unbind names its driver and the view ends
    with the VFs gone, the PF on igb."""
    tr = DeviceTracker(_lab_devices(driver="igbvf", driver_override=None, netdevs=("eth1",)))
    events: list[ev.Event] = []
    for phase in ("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio",
                  "kata30-restore", "sriov-destroy"):
        events += _play(tr, phase)
    unbinds = [e for e in events if isinstance(e, ev.DeviceUnbound)]
    assert [(e.bdf, e.previous_driver) for e in unbinds] == [
        (VF0, "igbvf"), (VF0, "vfio-pci"), (VF0, "igbvf"), (VF0, "vfio-pci"), (VF0, "igbvf"),
        (VF2, "igbvf"),
    ]
    assert [_brief(e) for e in events[-6:]] == [
        ("netdev-", VF0, "eth1", 6), ("unbound", VF0, "igbvf"), ("removed", VF0),
        ("netdev-", VF2, "eth2", 4), ("unbound", VF2, "igbvf"), ("removed", VF2),
    ]
    assert VF0 not in tr.devices and VF2 not in tr.devices and tr.driver(PF) == "igb"


def test_events_keep_the_receive_time_and_source() -> None:
    """ts_ns is the caller's stamp and source is `uevent`; real rebinds are not synthetic."""
    rec = next(r for r in load_dump(FIXTURES / "uevent" / "kata38-bind-vfio.dump")
               if r.data.startswith(b"bind@"))
    e = decode_uevent(rec.data, rec.t_real_ns)
    assert e is not None and e.ts_ns == rec.t_real_ns and e.source == "uevent"
    assert not e.synthetic and not e.resync


SYNTH = (b"bind@/devices/pci0000:00/0000:00:01.0\0ACTION=bind\0DEVPATH=/devices/pci0000:00/"
         b"0000:00:01.0\0SUBSYSTEM=pci\0DRIVER=virtio-pci\0PCI_SLOT_NAME=0000:00:01.0\0"
         b"SYNTH_UUID=5c0ffee0-0000-4000-8000-000000000001\0SYNTH_ARG_WHO=test\0SEQNUM=9\0")


def test_synthetic_uevents_are_marked_and_change_no_state() -> None:
    """SYNTH_UUID marks the event synthetic; the tracker completes it (the driver the unbind
    names) but, like the core, does not take it for a move."""
    tr = DeviceTracker([ev.PciDevice(bdf="0000:00:01.0", driver="virtio-pci")])
    unbind = SYNTH.replace(b"bind@", b"unbind@").replace(b"ACTION=bind", b"ACTION=unbind")
    e = tr.apply(decode_uevent(unbind, 1) or ev.ClockTicked(ts_ns=0, source="x"))
    assert isinstance(e, ev.DeviceUnbound) and e.synthetic and e.previous_driver == "virtio-pci"
    assert tr.driver("0000:00:01.0") == "virtio-pci"
    b = tr.apply(decode_uevent(SYNTH, 2) or ev.ClockTicked(ts_ns=0, source="x"))
    assert isinstance(b, ev.DeviceBound) and b.synthetic and b.driver == "virtio-pci"
    assert tr.driver("0000:00:01.0") == "virtio-pci"


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (SYNTH[:-1], "NUL-terminated"),
        (SYNTH[:40], "NUL-terminated"),
        (b"x" * 9000 + b"\0", "larger"),
        (b"add@/x\0ACTION=add\0\0", "SUBSYSTEM"),
        (b"noheader\0SUBSYSTEM=pci\0", "ACTION@DEVPATH"),
        (b"add@/d\0SUBSYSTEM=pci\0garbage\0", "without '='"),
    ],
)
def test_malformed_datagrams_raise_a_counted_error_naming_the_fault(data: bytes, why: str) -> None:
    """Truncated, unterminated, huge or field-less datagrams raise MalformedUevent."""
    with pytest.raises(MalformedUevent, match=why):
        decode_uevent(data, 0)


def test_other_subsystems_and_virtual_netdevs_are_dropped() -> None:
    """queues/module/block and netdevs that are not under a PCI function decode to None."""
    assert decode_uevent(b"add@/module/x\0ACTION=add\0SUBSYSTEM=module\0", 0) is None
    veth = (b"add@/devices/virtual/net/veth0\0ACTION=add\0DEVPATH=/devices/virtual/net/veth0\0"
            b"SUBSYSTEM=net\0INTERFACE=veth0\0IFINDEX=9\0")
    assert decode_uevent(veth, 0) is None
    usb_drv = b"add@/bus/usb/drivers/x\0ACTION=add\0DEVPATH=/bus/usb/drivers/x\0SUBSYSTEM=drivers\0"
    assert decode_uevent(usb_drv, 0) is None


def test_a_net_rename_is_the_device_netdev_under_its_new_name() -> None:
    """`move` on a PCI netdev (rename) decodes to NetdevAdded with the new name."""
    mv = (b"move@/devices/pci0000:00/0000:00:02.0/0000:01:10.0/net/ens1\0ACTION=move\0"
          b"DEVPATH=/devices/pci0000:00/0000:00:02.0/0000:01:10.0/net/ens1\0SUBSYSTEM=net\0"
          b"DEVPATH_OLD=/devices/pci0000:00/0000:00:02.0/0000:01:10.0/net/eth1\0INTERFACE=ens1\0"
          b"IFINDEX=3\0")
    e = decode_uevent(mv, 0)
    assert isinstance(e, ev.NetdevAdded) and (e.bdf, e.ifname, e.ifindex) == (VF0, "ens1", 3)
