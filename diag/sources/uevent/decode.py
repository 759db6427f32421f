"""Provides the pure half of the `uevent` source: a raw kernel uevent -> event, and the device view.

* `decode_uevent(data, ts_ns)`: one raw datagram (`ACTION@DEVPATH\\0KEY=VALUE\\0...`) to one
  event, or None for the subsystems the agent does not need. It keeps pci, net (only netdevs
  under a PCI function), vfio, vfio-dev and PCI driver add/remove. The subsystem is found on the
  raw bytes before anything is split or decoded, so the other subsystems (queues, module,
  wakeup, block, ... the bulk of a busy host) cost one `bytes.find` each. Malformed datagrams
  raise `MalformedUevent`.
* `DeviceTracker`: the source's own view of the PCI devices, seeded from a sysfs scan and
  followed by uevents. An `unbind` uevent carries no DRIVER (sriov-lab.md), so the tracker fills
  `previous_driver` from what it saw last; it also fills the IOMMU group of a `vfio-dev` node and
  the device of a `vfio` group node. Synthetic uevents (SYNTH_UUID: `udevadm trigger`, tests) are
  marked `synthetic`; their bind/unbind/remove/netdev copies claim a move that did not happen,
  so they change the view no more than they change the core's state (the view must stay what
  the core believes, so that a resync's difference repairs the core).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from diag import events as ev
from diag.common.bdf import is_bdf
from diag.events import replace

MAX_UEVENT = 8192
"""Larger than any kernel uevent (UEVENT_BUFFER_SIZE is 2048 for the environment)."""

SOURCE = "uevent"

_SUB = b"\0SUBSYSTEM="
_SUBLEN = len(_SUB)


class MalformedUevent(ValueError):
    """A datagram that is not a well-formed kernel uevent."""


def _text(b: bytes) -> str:
    return b.decode("utf-8", "replace")


def _after(path: str, marker: str) -> str | None:
    """The path component right before `marker` (`.../0000:01:10.0/net/eth1`, `/net/`)."""
    k = path.rfind(marker)
    if k < 0:
        return None
    head = path[:k]
    return head[head.rfind("/") + 1 :]


def _field(data: bytes, key: bytes) -> bytes | None:
    """The value of `\\0KEY=` in a NUL-terminated datagram, None when absent."""
    i = data.find(key)
    if i < 0:
        return None
    i += len(key)
    return data[i : data.find(b"\0", i)]


def _hexid(raw: bytes | None, width: int) -> str:
    if not raw:
        return ""
    return _text(raw).lower().zfill(width)[-width:]


def _int(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        return None


def decode_uevent(data: bytes, ts_ns: int, *, source: str = SOURCE) -> ev.Event | None:
    """Decode one raw kernel uevent datagram; None when it is about something we do not keep.

    Raises MalformedUevent for a datagram that is empty, too large, not NUL-terminated
    (truncated), has no SUBSYSTEM, no `ACTION@DEVPATH` header, or a field without `=`.
    """
    n = len(data)
    if n == 0:
        raise MalformedUevent("empty datagram")
    if n > MAX_UEVENT:
        raise MalformedUevent(f"{n} bytes, larger than any kernel uevent ({MAX_UEVENT})")
    if data[-1] != 0:
        raise MalformedUevent("not NUL-terminated (truncated?)")
    i = data.find(_SUB)
    if i < 0:
        raise MalformedUevent("no SUBSYSTEM field")
    j = data.find(b"\0", i + _SUBLEN)
    decode = _BY_SUBSYSTEM.get(data[i + _SUBLEN : j])
    if decode is None:
        return None
    first = data.find(b"\0")
    at = data.find(b"@", 0, first)
    if at <= 0:
        raise MalformedUevent("no ACTION@DEVPATH header")
    # Every field after the header is KEY=VALUE: fewer '=' than fields means one lacks it.
    # Fields are then read by an anchored find (`\0KEY=`) rather than split into a dict: the
    # kernel never sends NUL inside a value, and three or four finds cost less than a split.
    if data.count(b"=") < data.count(b"\0") - 1:
        raise MalformedUevent("a field without '='")
    # The header is ACTION@DEVPATH as the kernel wrote ACTION= and DEVPATH= (lib/kobject_uevent.c).
    action = data[:at].decode("ascii", "replace")
    devpath = data[at + 1 : first].decode("utf-8", "replace")
    synthetic = data.find(b"\0SYNTH_UUID=") >= 0
    return decode(data, action, devpath, ts_ns, source, synthetic)


def _pci(data: bytes, action: str, devpath: str, ts_ns: int, source: str,
         synthetic: bool) -> ev.Event | None:
    """`/devices/.../<bdf>`: the driver moves of a PCI device, its arrival and departure."""
    bdf = devpath[devpath.rfind("/") + 1 :]  # = PCI_SLOT_NAME, without a search
    if action == "bind":
        return ev.DeviceBound(ts_ns=ts_ns, source=source, synthetic=synthetic, bdf=bdf,
                              driver=_text(_field(data, b"\0DRIVER=") or b""))
    common: dict[str, Any] = {"ts_ns": ts_ns, "source": source, "synthetic": synthetic}
    if action == "unbind":
        drv = _field(data, b"\0DRIVER=")  # real unbinds never carry it; synthetic ones do
        return ev.DeviceUnbound(bdf=bdf, previous_driver=_text(drv) if drv else None, **common)
    if action == "add":
        vendor, _, device = (_field(data, b"\0PCI_ID=") or b"").partition(b":")
        return ev.DeviceAdded(
            bdf=bdf, vendor=_hexid(vendor, 4), device=_hexid(device, 4),
            class_code=_hexid(_field(data, b"\0PCI_CLASS="), 6), **common,
        )
    if action == "remove":
        return ev.DeviceRemoved(bdf=bdf, **common)
    drv = _field(data, b"\0DRIVER=")
    if action == "change":
        return ev.DeviceChanged(bdf=bdf, driver=_text(drv) if drv else None, **common)
    # move, online, offline: nothing about drivers, but the user asked the kernel for them.
    return ev.DeviceChanged(
        bdf=bdf, driver=_text(drv) if drv else None, attribute="action", value=action, **common
    )


def _net(data: bytes, action: str, devpath: str, ts_ns: int, source: str,
         synthetic: bool) -> ev.Event | None:
    """`.../<bdf>/net/<ifname>`: a PCI function's netdev registered, renamed or gone."""
    bdf = _after(devpath, "/net/")
    if bdf is None or not is_bdf(bdf):
        return None  # a virtual or non-PCI netdev: the links source covers it
    ifname = _text(_field(data, b"\0INTERFACE=") or devpath[devpath.rfind("/") + 1 :].encode())
    ifindex = _int(_field(data, b"\0IFINDEX="))
    # move = rename: the device's netdev now has this name
    return _added_or_removed(action, ev.NetdevAdded, ev.NetdevRemoved, ("add", "move"),
                             ts_ns=ts_ns, source=source, synthetic=synthetic, bdf=bdf,
                             ifname=ifname, ifindex=ifindex)


def _vfio_group(data: bytes, action: str, devpath: str, ts_ns: int, source: str,
                synthetic: bool) -> ev.Event | None:
    """The group node: /devices/virtual/vfio/<group> (noiommu-<group> without an IOMMU)."""
    name = devpath[devpath.rfind("/") + 1 :]
    group = _int(name.removeprefix("noiommu-").encode())
    devname = _text(_field(data, b"\0DEVNAME=") or b"")
    return _added_or_removed(action, ev.VfioDeviceAdded, ev.VfioDeviceRemoved, ts_ns=ts_ns,
                             source=source, synthetic=synthetic, bdf=None, group=group,
                             devname=devname)


def _vfio_dev(data: bytes, action: str, devpath: str, ts_ns: int, source: str,
              synthetic: bool) -> ev.Event | None:
    """The cdev node of one device: `.../<bdf>/vfio-dev/vfio<N>`."""
    bdf = _after(devpath, "/vfio-dev/")
    if bdf is not None and not is_bdf(bdf):
        bdf = None
    dn = _field(data, b"\0DEVNAME=")
    devname = _text(dn) if dn else "vfio-dev/" + devpath[devpath.rfind("/") + 1 :]
    return _added_or_removed(action, ev.VfioDeviceAdded, ev.VfioDeviceRemoved, ts_ns=ts_ns,
                             source=source, synthetic=synthetic, bdf=bdf, devname=devname)


def _driver(data: bytes, action: str, devpath: str, ts_ns: int, source: str,
            synthetic: bool) -> ev.Event | None:
    """`/bus/<bus>/drivers/<driver>`: a PCI driver registered (module loaded) or gone."""
    bits = devpath.split("/")
    if len(bits) != 5 or bits[1] != "bus" or bits[3] != "drivers" or bits[2] != "pci":
        return None
    return _added_or_removed(action, ev.DriverRegistered, ev.DriverUnregistered, ts_ns=ts_ns,
                             source=source, synthetic=synthetic, bus=bits[2], driver=bits[4])


def _added_or_removed(action: str, added: type[ev.Event], removed: type[ev.Event],
                      adds: tuple[str, ...] = ("add",), **fields: Any) -> ev.Event | None:
    """`added` for an add (or another action in `adds`), `removed` for a remove, else None."""
    if action in adds:
        return added(**fields)
    if action == "remove":
        return removed(**fields)
    return None


_BY_SUBSYSTEM: dict[bytes, Callable[[bytes, str, str, int, str, bool], ev.Event | None]] = {
    b"pci": _pci, b"net": _net, b"vfio": _vfio_group, b"vfio-dev": _vfio_dev, b"drivers": _driver,
}
"""The subsystems kept, each with its decoder (every other uevent is dropped unread)."""


_NOT_A_MOVE_WHEN_SYNTHETIC = frozenset({
    ev.DeviceBound, ev.DeviceUnbound, ev.DeviceRemoved, ev.NetdevAdded, ev.NetdevRemoved,
})
"""Events whose synthetic copies change no state (the core's rule, diag/core/model.py)."""


class DeviceTracker:
    """The uevent source's view of the PCI devices: seeded by a scan, followed by uevents.

    Pure. `apply(event)` returns the event completed from the view (previous_driver of an
    unbind, the group of a vfio-dev node, the device of a vfio group) and folds it into the
    view exactly as the core folds it into its state (synthetic moves are not folded in).
    """

    def __init__(self, devices: Iterable[ev.PciDevice] = ()) -> None:
        self.devices: dict[str, ev.PciDevice] = {}
        self.last_driver: dict[str, str] = {}
        self.reset(devices)

    def reset(self, devices: Iterable[ev.PciDevice]) -> None:
        """Replace the view with a fresh scan (start, resync)."""
        self.devices = {d.bdf: d for d in devices}
        self.last_driver = {}

    def view(self) -> list[ev.PciDevice]:
        """The view as a scan-like list, ordered by address (what `sysfs.diff` compares)."""
        return [self.devices[b] for b in sorted(self.devices)]

    def driver(self, bdf: str) -> str | None:
        d = self.devices.get(bdf)
        return d.driver if d else None

    def _group_owner(self, group: int | None) -> str | None:
        if group is None:
            return None
        owners = [d.bdf for d in self.devices.values() if d.iommu_group == group]
        return owners[0] if len(owners) == 1 else None

    def apply(self, e: ev.Event) -> ev.Event:
        """Follow `e` in the view; `e` completed from it (the driver an unbind left, the device
        of a vfio group node, the group of a vfio-dev node)."""
        t = type(e)
        if t is ev.DeviceBound:
            assert isinstance(e, ev.DeviceBound)
            return self._bound(e)
        if t is ev.DeviceUnbound:
            assert isinstance(e, ev.DeviceUnbound)
            return self._unbound(e)
        if e.synthetic and t in _NOT_A_MOVE_WHEN_SYNTHETIC:
            return e
        if t is ev.DeviceAdded:
            assert isinstance(e, ev.DeviceAdded)
            if e.bdf not in self.devices:
                self.devices[e.bdf] = ev.PciDevice(
                    bdf=e.bdf, vendor=e.vendor, device=e.device, class_code=e.class_code,
                    pf=e.pf, vf_index=e.vf_index, role="vf" if e.pf else "none",
                )
        elif t is ev.DeviceRemoved:
            assert isinstance(e, ev.DeviceRemoved)
            self.devices.pop(e.bdf, None)
            self.last_driver.pop(e.bdf, None)
        elif t is ev.NetdevAdded or t is ev.NetdevRemoved:
            assert isinstance(e, (ev.NetdevAdded, ev.NetdevRemoved))
            self._netdev(e)
        elif t is ev.VfioDeviceAdded or t is ev.VfioDeviceRemoved:
            assert isinstance(e, (ev.VfioDeviceAdded, ev.VfioDeviceRemoved))
            return self._vfio(e)
        return e

    def _bound(self, e: ev.DeviceBound) -> ev.DeviceBound:
        d = self.devices.get(e.bdf)
        cur = d.driver if d else None
        prev = cur if cur and cur != e.driver else self.last_driver.get(e.bdf)
        if prev != e.previous_driver:
            e = replace(e, previous_driver=prev)
        if not e.synthetic and (d is None or cur != e.driver):
            d = d or ev.PciDevice(bdf=e.bdf)
            self.devices[e.bdf] = replace(
                d, driver=e.driver,
                vfio_group_path=f"/dev/vfio/{d.iommu_group}"
                if e.driver == "vfio-pci" and d.iommu_group is not None else None,
            )
        return e

    def _unbound(self, e: ev.DeviceUnbound) -> ev.DeviceUnbound:
        d = self.devices.get(e.bdf)
        prev = e.previous_driver or (d.driver if d else None) or self.last_driver.get(e.bdf)
        if prev != e.previous_driver:
            e = replace(e, previous_driver=prev)
        if e.synthetic:
            return e
        if prev:
            self.last_driver[e.bdf] = prev
        if d is not None and d.driver is not None:
            self.devices[e.bdf] = replace(d, driver=None, vfio_group_path=None)
        return e

    def _netdev(self, e: ev.NetdevAdded | ev.NetdevRemoved) -> None:
        d = self.devices.get(e.bdf or "")
        if d is not None:
            names = set(d.netdevs)
            if type(e) is ev.NetdevAdded:
                names.add(e.ifname)
            else:
                names.discard(e.ifname)
            self.devices[d.bdf] = replace(d, netdevs=tuple(sorted(names)))

    def _vfio(self, e: ev.VfioDeviceAdded | ev.VfioDeviceRemoved) -> ev.Event:
        if e.bdf is None and e.group is not None:
            owner = self._group_owner(e.group)
            if owner:
                return replace(e, bdf=owner)
        elif e.bdf is not None and e.group is None:
            d = self.devices.get(e.bdf)
            if d is not None and d.iommu_group is not None:
                return replace(e, group=d.iommu_group)
        return e
