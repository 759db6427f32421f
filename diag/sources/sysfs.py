"""Provides the PCI inventory: `scan(paths)` reads /sys/bus/pci under a root, `diff` compares scans.

`scan` only reads (never writes) and never raises for one device's trouble: an attribute it
cannot read is recorded in that device's `errors` as `attribute: why`. `diff` is pure and turns
two scans into the events a resync emits.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths

_BDF = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_VIRTFN = re.compile(r"^virtfn(\d+)$")

PCI_IDS_CANDIDATES = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids", "usr/share/pci.ids")


def is_bdf(text: str) -> bool:
    """True for a full PCI address with domain (`0000:01:10.0`)."""
    return bool(_BDF.match(text))


def _why(exc: OSError) -> str:
    if exc.errno is not None and exc.errno in errno.errorcode:
        return f"{errno.errorcode[exc.errno]} ({os.strerror(exc.errno)})"
    return str(exc)


class _Reader:
    """Reads one device directory, collecting per-attribute errors instead of raising."""

    __slots__ = ("base", "errors")

    def __init__(self, base: Path) -> None:
        self.base = base
        self.errors: list[str] = []

    def text(self, name: str, *, optional: bool = False) -> str | None:
        try:
            with open(self.base / name, "rb") as fh:
                return fh.read(4096).decode("utf-8", "replace").strip()
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
        try:
            return os.readlink(self.base / name)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EINVAL:  # exists but is not a link
                self.errors.append(f"{name}: not a symlink")
            else:
                self.errors.append(f"{name}: {_why(exc)}")
            return None


class PciIds:
    """Vendor and device names from pci.ids, parsed once on first use."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._vendors: dict[str, str] | None = None
        self._devices: dict[tuple[str, str], str] = {}

    @classmethod
    def under(cls, paths: HostPaths) -> PciIds:
        for rel in PCI_IDS_CANDIDATES:
            p = paths.root / rel
            if p.is_file():
                return cls(p)
        return cls(None)

    def _load(self) -> dict[str, str]:
        if self._vendors is not None:
            return self._vendors
        vendors: dict[str, str] = {}
        if self.path is not None:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as fh:
                    vendor = ""
                    for line in fh:
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


def _scan_one(paths: HostPaths, bdf: str, ids: PciIds | None) -> ev.PciDevice:
    base = paths.pci_devices / bdf
    r = _Reader(base)
    vendor = r.hexid("vendor", 4)
    device = r.hexid("device", 4)
    class_code = r.hexid("class", 6)
    sub_vendor = r.hexid("subsystem_vendor", 4)
    sub_device = r.hexid("subsystem_device", 4)

    drv_link = r.link("driver")
    driver = os.path.basename(drv_link) if drv_link else None

    override_raw = r.text("driver_override", optional=True)
    override = None if override_raw in (None, "", "(null)") else override_raw

    group_link = r.link("iommu_group")
    group: int | None = None
    if group_link:
        try:
            group = int(os.path.basename(group_link))
        except ValueError:
            r.errors.append(f"iommu_group: unexpected target {group_link!r}")

    numa = r.integer("numa_node")
    if numa is not None and numa < 0:
        numa = None

    role = "none"
    pf: str | None = None
    vf_index: int | None = None
    vfs: list[tuple[int, str]] = []
    numvfs = totalvfs = None
    physfn = r.link("physfn")
    try:
        entries = os.listdir(base)
    except OSError as exc:
        entries = []
        r.errors.append(f".: {_why(exc)}")
    if physfn:
        role = "vf"
        pf = os.path.basename(physfn)
        # Our index is the PF's virtfnN that points back at us.
        pf_dir = paths.pci_devices / pf
        try:
            for name in os.listdir(pf_dir):
                m = _VIRTFN.match(name)
                if m and os.path.basename(os.readlink(pf_dir / name)) == bdf:
                    vf_index = int(m.group(1))
                    break
        except OSError as exc:
            r.errors.append(f"physfn: {_why(exc)}")
    if "sriov_totalvfs" in entries:
        role = "pf"
        totalvfs = r.integer("sriov_totalvfs")
        numvfs = r.integer("sriov_numvfs")
        for name in entries:
            m = _VIRTFN.match(name)
            if m:
                target = r.link(name)
                if target:
                    vfs.append((int(m.group(1)), os.path.basename(target)))
        vfs.sort()

    netdevs: tuple[str, ...] = ()
    if "net" in entries:
        try:
            netdevs = tuple(sorted(os.listdir(base / "net")))
        except OSError as exc:
            r.errors.append(f"net: {_why(exc)}")

    vfio_path = f"/dev/vfio/{group}" if driver == "vfio-pci" and group is not None else None

    return ev.PciDevice(
        bdf=bdf,
        vendor=vendor,
        device=device,
        class_code=class_code,
        subsystem_vendor=sub_vendor,
        subsystem_device=sub_device,
        vendor_name=ids.vendor(vendor) if ids and vendor else "",
        device_name=ids.device(vendor, device) if ids and vendor and device else "",
        driver=driver,
        driver_override=override,
        iommu_group=group,
        numa_node=numa,
        role=role,
        pf=pf,
        vf_index=vf_index,
        sriov_numvfs=numvfs,
        sriov_totalvfs=totalvfs,
        vfs=tuple(b for _, b in vfs),
        netdevs=netdevs,
        vfio_group_path=vfio_path,
        errors=tuple(r.errors),
    )


def scan(paths: HostPaths, *, names: bool = True) -> list[ev.PciDevice]:
    """Read every PCI device under `paths`, ordered by address.

    Raises RootError only when the root holds no PCI sysfs at all.
    """
    paths.require_sysfs()
    ids = PciIds.under(paths) if names else None
    out = []
    for bdf in sorted(os.listdir(paths.pci_devices)):
        if is_bdf(bdf):
            out.append(_scan_one(paths, bdf, ids))
    return out


def scan_device(paths: HostPaths, bdf: str) -> ev.PciDevice | None:
    """Read one device; None when it does not exist (any more)."""
    if not (paths.pci_devices / bdf).exists():
        return None
    return _scan_one(paths, bdf, None)


def read_driver(paths: HostPaths, bdf: str) -> str | None:
    """The driver bound to `bdf` right now, None when unbound or gone."""
    try:
        return os.path.basename(os.readlink(paths.pci_devices / bdf / "driver"))
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
