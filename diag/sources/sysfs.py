"""Provides the PCI inventory: `scan(paths)` reads /sys/bus/pci under a root, `diff` compares scans.

`scan` only reads (never writes) and never raises for one device's trouble: an attribute it
cannot read is recorded in that device's `errors` as `attribute: why`. `diff` is pure and turns
two scans into the events a resync emits.
"""

from __future__ import annotations

import errno
import io
import os
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from diag import events as ev
from diag.common.bdf import is_bdf
from diag.common.paths import HostDir, HostPaths, OutsideRoot

_VIRTFN = re.compile(r"^virtfn(\d+)$")

PCI_IDS_CANDIDATES = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids", "usr/share/pci.ids")


PCI_DEVICES = "/sys/bus/pci/devices"


def _why(exc: OSError) -> str:
    if isinstance(exc, OutsideRoot):
        return str(exc)
    if exc.errno is not None and exc.errno in errno.errorcode:
        return f"{errno.errorcode[exc.errno]} ({os.strerror(exc.errno)})"
    return str(exc)


class _Reader:
    """Reads one device directory, collecting per-attribute errors instead of raising."""

    __slots__ = ("dir", "errors")

    def __init__(self, d: HostDir | None, errors: list[str]) -> None:
        self.dir = d
        self.errors = errors

    def text(self, name: str, *, optional: bool = False) -> str | None:
        if self.dir is None:
            return None
        try:
            return self.dir.read_bytes(name, 4096).decode("utf-8", "replace").strip()
        except FileNotFoundError:
            if not optional:
                self.errors.append(f"{name}: missing")
            return None
        except OSError as exc:
            self.errors.append(f"{name}: {_why(exc)}")
            return None

    def hexid(self, name: str, width: int) -> str:
        raw = self.text(name)
        if raw is None:
            return ""
        raw = raw.lower().removeprefix("0x")
        return raw.zfill(width)[-width:] if raw else ""

    def integer(self, name: str, *, optional: bool = True) -> int | None:
        raw = self.text(name, optional=optional)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            self.errors.append(f"{name}: not an integer ({raw[:20]!r})")
            return None

    def link(self, name: str) -> str | None:
        """The name a link points at (its target's last component); nothing is followed, and a
        link that leads outside --root is refused like a read through it would be."""
        if self.dir is None:
            return None
        try:
            return self.dir.link_name(name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL and not isinstance(exc, OutsideRoot):  # not a link
                self.errors.append(f"{name}: not a symlink")
            else:
                self.errors.append(f"{name}: {_why(exc)}")
            return None


class PciIds:
    """Vendor and device names from pci.ids, parsed once on first use."""

    def __init__(self, path: Path | None, *, opener: Callable[[], BinaryIO] | None = None) -> None:
        self.path = path
        self._open = opener
        self._vendors: dict[str, str] | None = None
        self._devices: dict[tuple[str, str], str] = {}

    @classmethod
    def under(cls, paths: HostPaths) -> PciIds:
        for rel in PCI_IDS_CANDIDATES:
            host = "/" + rel
            if paths.is_file(host):
                return cls(paths.host(host), opener=lambda h=host: paths.open_file(h))
        return cls(None)

    def _load(self) -> dict[str, str]:
        if self._vendors is not None:
            return self._vendors
        vendors: dict[str, str] = {}
        try:
            if self._open is not None:
                fh: BinaryIO | None = self._open()
            else:
                fh = open(self.path, "rb") if self.path is not None else None  # noqa: SIM115
        except OSError:
            fh = None
        if fh is not None:
            try:
                with io.TextIOWrapper(fh, encoding="utf-8", errors="replace") as text:
                    vendor = ""
                    for line in text:  # streamed: about 1.4 MB, stopped at the classes
                        if not line or line[0] == "#" or line == "\n":
                            continue
                        if line.startswith("C "):  # device classes follow: nothing more we need
                            break
                        if line[0] != "\t":
                            vendor = line[:4].lower()
                            vendors[vendor] = line[6:].strip()
                        elif line[1] != "\t" and vendor:
                            self._devices[(vendor, line[1:5].lower())] = line[7:].strip()
            except OSError:
                pass
        self._vendors = vendors
        return vendors

    def vendor(self, vid: str) -> str:
        return self._load().get(vid, "")

    def device(self, vid: str, did: str) -> str:
        self._load()
        return self._devices.get((vid, did), "")


def _scan_one(paths: HostPaths, bdf: str, ids: PciIds | None,
              vf_indexes: dict[str, dict[str, int]] | None = None) -> ev.PciDevice:
    errors: list[str] = []
    try:
        d: HostDir | None = paths.opendir(f"{PCI_DEVICES}/{bdf}")
    except OSError as exc:
        d = None
        errors.append(f".: {_why(exc)}")
    try:
        return _read_device(paths, bdf, ids, _Reader(d, errors), vf_indexes)
    finally:
        if d is not None:
            d.close()


def _read_device(paths: HostPaths, bdf: str, ids: PciIds | None, r: _Reader,
                 vf_indexes: dict[str, dict[str, int]] | None = None) -> ev.PciDevice:
    """One device's attributes, in the order they are read; what cannot be read is in `errors`."""
    identity = _identity(r, ids)
    binding = _binding(r)
    physfn = r.link("physfn")
    entries: list[str] = []
    if r.dir is not None:
        try:
            entries = r.dir.listdir()
        except OSError as exc:
            r.errors.append(f".: {_why(exc)}")
    sriov = _sriov(paths, bdf, r, physfn, entries, vf_indexes)
    return ev.PciDevice(bdf=bdf, **identity, **binding, **sriov, netdevs=_netdevs(r, entries),
                        errors=tuple(r.errors))


def _identity(r: _Reader, ids: PciIds | None) -> dict[str, Any]:
    """Vendor, device, class and subsystem ids, and their names from pci.ids."""
    vendor, device = r.hexid("vendor", 4), r.hexid("device", 4)
    return {
        "vendor": vendor, "device": device, "class_code": r.hexid("class", 6),
        "subsystem_vendor": r.hexid("subsystem_vendor", 4),
        "subsystem_device": r.hexid("subsystem_device", 4),
        "vendor_name": ids.vendor(vendor) if ids and vendor else "",
        "device_name": ids.device(vendor, device) if ids and vendor and device else "",
    }


def _binding(r: _Reader) -> dict[str, Any]:
    """The driver, driver_override, IOMMU group (and its /dev/vfio node) and NUMA node."""
    driver = r.link("driver")
    override_raw = r.text("driver_override", optional=True)
    group_name = r.link("iommu_group")
    group: int | None = None
    if group_name:
        try:
            group = int(group_name)
        except ValueError:
            r.errors.append(f"iommu_group: unexpected target {group_name!r}")
    numa = r.integer("numa_node")
    return {
        "driver": driver,
        "driver_override": None if override_raw in (None, "", "(null)") else override_raw,
        "iommu_group": group,
        "numa_node": None if numa is not None and numa < 0 else numa,
        "vfio_group_path": f"/dev/vfio/{group}" if driver == "vfio-pci" and group is not None
        else None,
    }


def _virtfn_indexes(paths: HostPaths, pf: str) -> dict[str, int]:
    """VF address -> N of the PF's `virtfnN` link to it."""
    out: dict[str, int] = {}
    with paths.opendir(f"{PCI_DEVICES}/{pf}") as pf_dir:
        for name in pf_dir.listdir():
            m = _VIRTFN.match(name)
            if m:
                out[pf_dir.link_name(name)] = int(m.group(1))
    return out


def _sriov(paths: HostPaths, bdf: str, r: _Reader, physfn: str | None,
           entries: list[str], vf_indexes: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """The SR-IOV role: a VF's PF and index, a PF's VF counts and VFs in index order."""
    out: dict[str, Any] = {"role": "none"}
    if physfn:
        out.update(role="vf", pf=physfn)
        # Our index is the PF's virtfnN that points back at us. A scan reads each PF's links
        # once for all its VFs (per VF it would be quadratic: 4 x 128 VFs took a second).
        indexes = vf_indexes.get(physfn) if vf_indexes is not None else None
        if indexes is None:
            try:
                indexes = _virtfn_indexes(paths, physfn)
            except OSError as exc:
                r.errors.append(f"physfn: {_why(exc)}")
                indexes = {}
            if vf_indexes is not None:
                vf_indexes[physfn] = indexes
        if bdf in indexes:
            out["vf_index"] = indexes[bdf]
    if "sriov_totalvfs" in entries:
        vfs: list[tuple[int, str]] = []
        out.update(role="pf", sriov_totalvfs=r.integer("sriov_totalvfs"),
                   sriov_numvfs=r.integer("sriov_numvfs"))
        for name in entries:
            m = _VIRTFN.match(name)
            if m:
                target = r.link(name)
                if target:
                    vfs.append((int(m.group(1)), target))
        out["vfs"] = tuple(b for _, b in sorted(vfs))
    return out


def _netdevs(r: _Reader, entries: list[str]) -> tuple[str, ...]:
    """The interfaces under the device's `net/` (host namespace only)."""
    if "net" not in entries or r.dir is None:
        return ()
    try:
        return tuple(sorted(r.dir.listdir("net")))
    except OSError as exc:
        r.errors.append(f"net: {_why(exc)}")
        return ()


def scan(paths: HostPaths, *, names: bool = True) -> list[ev.PciDevice]:
    """Read every PCI device under `paths`, ordered by address.

    Raises RootError only when the root holds no PCI sysfs at all.
    """
    paths.require_sysfs()
    ids = PciIds.under(paths) if names else None
    out = []
    vf_indexes: dict[str, dict[str, int]] = {}
    for bdf in sorted(paths.listdir(PCI_DEVICES)):
        if is_bdf(bdf):
            out.append(_scan_one(paths, bdf, ids, vf_indexes))
    return out


def scan_device(paths: HostPaths, bdf: str) -> ev.PciDevice | None:
    """Read one device; None when it does not exist (any more)."""
    if not paths.lexists(f"{PCI_DEVICES}/{bdf}"):
        return None
    return _scan_one(paths, bdf, None)


def read_driver(paths: HostPaths, bdf: str) -> str | None:
    """The driver bound to `bdf` right now, None when unbound, gone, or refused."""
    try:
        with paths.opendir(f"{PCI_DEVICES}/{bdf}") as d:
            return d.link_name("driver")
    except OSError:
        return None


def diff(
    before: Sequence[ev.PciDevice], after: Sequence[ev.PciDevice], *, ts_ns: int, source: str
) -> list[ev.Event]:
    """The events that turn scan `before` into scan `after` (all marked resync)."""
    old = {d.bdf: d for d in before}
    new = {d.bdf: d for d in after}
    out: list[ev.Event] = []
    common = {"ts_ns": ts_ns, "source": source, "resync": True}
    for bdf in sorted(old.keys() - new.keys()):
        if old[bdf].driver:
            out.append(ev.DeviceUnbound(bdf=bdf, previous_driver=old[bdf].driver, **common))
        out.append(ev.DeviceRemoved(bdf=bdf, **common))
    for bdf in sorted(new.keys() - old.keys()):
        d = new[bdf]
        out.append(
            ev.DeviceAdded(
                bdf=bdf, vendor=d.vendor, device=d.device, class_code=d.class_code,
                pf=d.pf, vf_index=d.vf_index, **common,
            )
        )
        if d.driver:
            out.append(ev.DeviceBound(bdf=bdf, driver=d.driver, **common))
    for bdf in sorted(old.keys() & new.keys()):
        a, b = old[bdf], new[bdf]
        if a.driver != b.driver:
            if a.driver:
                out.append(ev.DeviceUnbound(bdf=bdf, previous_driver=a.driver, **common))
            if b.driver:
                out.append(ev.DeviceBound(bdf=bdf, driver=b.driver, previous_driver=a.driver, **common))
        if a.driver_override != b.driver_override:
            out.append(
                ev.DeviceChanged(
                    bdf=bdf, driver=b.driver, attribute="driver_override",
                    value=b.driver_override, **common,
                )
            )
        if a.sriov_numvfs != b.sriov_numvfs:
            out.append(
                ev.DeviceChanged(
                    bdf=bdf, driver=b.driver, attribute="sriov_numvfs",
                    value=None if b.sriov_numvfs is None else str(b.sriov_numvfs), **common,
                )
            )
        for name in sorted(set(a.netdevs) - set(b.netdevs)):
            out.append(ev.NetdevRemoved(bdf=bdf, ifname=name, **common))
        for name in sorted(set(b.netdevs) - set(a.netdevs)):
            out.append(ev.NetdevAdded(bdf=bdf, ifname=name, **common))
    return out


def pf_vf_order(devices: Iterable[ev.PciDevice]) -> list[tuple[ev.PciDevice, int]]:
    """Devices ordered for display: each PF followed by its VFs (depth 1), others by address."""
    by_bdf = {d.bdf: d for d in devices}
    out: list[tuple[ev.PciDevice, int]] = []
    seen: set[str] = set()
    for bdf in sorted(by_bdf):
        d = by_bdf[bdf]
        if d.role == "vf" and d.pf in by_bdf:
            continue  # shown under its PF
        out.append((d, 0))
        seen.add(bdf)
        if d.role == "pf":
            kids = [by_bdf[v] for v in d.vfs if v in by_bdf]
            kids += [x for x in by_bdf.values() if x.pf == bdf and x.bdf not in d.vfs]
            for vf in kids:
                out.append((vf, 1))
                seen.add(vf.bdf)
    return out
