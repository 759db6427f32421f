"""Provides the pure decoding of eBPF probe records: raw bytes -> RawRecord -> SysfsWriteObserved.

No I/O here: path resolution (cwd, symlinks) and process identity are done by the source and
handed in as plain values, so recorded records (tests/fixtures/ebpf/) decode on any machine.
"""

from __future__ import annotations

import ctypes
import posixpath
from dataclasses import dataclass

from diag import events as ev
from diag.common.bdf import is_bdf
from diag.sources.ebpf import layouts as L

SOURCE = "ebpf"

_DEVICE_CONTROLS = frozenset({
    "driver_override", "remove", "reset", "sriov_numvfs", "sriov_drivers_autoprobe", "rescan",
})
_DRIVER_CONTROLS = frozenset({"bind", "unbind", "new_id", "remove_id"})
_BUS_CONTROLS = frozenset({"drivers_probe", "rescan"})
DEVICE_CONTROLS = _DEVICE_CONTROLS
CONTROLS = frozenset(L.CONTROL_NAMES.values())


class RecordError(ValueError):
    """Bytes that are not a vfw_record (wrong size): counted as DecodeFailed by the source."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RawRecord:
    """One `struct vfw_record`, with strings decoded and the value kept as bytes."""

    ts_ns: int
    cgroup_id: int
    result: int
    kind: int
    control: int
    pid: int
    tid: int
    ppid: int
    fd: int
    dirfd: int
    flags: int
    count: int
    value: bytes
    syscall_nr: int
    truncated: int
    comm: str
    name: str
    bus: str
    path: str

    @property
    def control_name(self) -> str:
        return L.CONTROL_NAMES.get(self.control, "")


def _s(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def parse_record(data: bytes) -> RawRecord:
    """Parse one ring-buffer record; raises RecordError on a size mismatch."""
    if len(data) < L.RECORD_SIZE:
        raise RecordError(f"record of {len(data)} bytes, expected {L.RECORD_SIZE}")
    r = L.VfwRecord.from_buffer_copy(data[: L.RECORD_SIZE])
    n = min(r.value_len, L.VFW_VALUE_LEN)
    value = ctypes.string_at(ctypes.addressof(r) + L.VfwRecord.value.offset, n)
    return RawRecord(
        ts_ns=r.ts_ns, cgroup_id=r.cgroup_id, result=r.result, kind=r.kind, control=r.control,
        pid=r.pid, tid=r.tid, ppid=r.ppid, fd=r.fd, dirfd=r.dirfd, flags=r.flags, count=r.count,
        value=value, syscall_nr=r.syscall_nr, truncated=r.truncated,
        comm=_s(bytes(r.comm)), name=_s(bytes(r.name)), bus=_s(bytes(r.bus)),
        path=_s(bytes(r.path)),
    )


@dataclass(frozen=True, slots=True)
class ControlFile:
    """What a resolved sysfs path is: which control file, and the device or driver it names."""

    control: str
    bdf: str | None = None
    driver: str | None = None
    bus: str | None = None


def classify_path(path: str) -> ControlFile | None:
    """Classify a resolved (symlink-free, absolute) path; None when it is no control file.

    Accepted forms: `/sys/bus/<bus>/drivers/<drv>/{bind,unbind,new_id,remove_id}`,
    `/sys/bus/<bus>/{drivers_probe,rescan}`, `/sys/devices/.../<bdf>/<device control>`, and the
    unresolved link forms `/sys/bus/pci/devices/<bdf>/<device control>`,
    `/sys/bus/pci/devices/<bdf>/driver/<driver control>` and
    `/sys/class/<class>/<name>/device/[driver/]<control>` (device unknown but for the value).
    """
    p = posixpath.normpath(path)
    parts = p.split("/")
    if len(parts) < 4 or parts[0] != "" or parts[1] != "sys":
        return None
    ctl = parts[-1]
    if ctl not in CONTROLS:
        return None
    if parts[2] == "bus":
        if len(parts) == 5 and ctl in _BUS_CONTROLS:
            return ControlFile(ctl, bus=parts[3])
        if len(parts) == 7 and parts[4] == "drivers" and ctl in _DRIVER_CONTROLS:
            return ControlFile(ctl, driver=parts[5], bus=parts[3])
        if len(parts) == 7 and parts[4] == "devices" and ctl in _DEVICE_CONTROLS and is_bdf(parts[5]):
            return ControlFile(ctl, bdf=parts[5], bus=parts[3])
        if (len(parts) == 8 and parts[4] == "devices" and parts[6] == "driver"
                and ctl in _DRIVER_CONTROLS):
            # The unresolved link form (the link was gone when we looked): the device in the
            # path only led to the driver; the device acted on is the value.
            return ControlFile(ctl, bus=parts[3])
        return None
    if parts[2] == "devices" and ctl in _DEVICE_CONTROLS and is_bdf(parts[-2]):
        return ControlFile(ctl, bdf=parts[-2], bus="pci")
    if parts[2] == "class" and len(parts) >= 7 and parts[5] == "device":
        # `/sys/class/net/<if>/device/driver/unbind`, the form operators use (sriovnet #26),
        # left unresolved because the link was gone when we looked: the unbind took the netdev,
        # and its /sys/class/net entry, with it. The device acted on is the value.
        rest = parts[6:]
        if rest == ["driver", ctl] and ctl in _DRIVER_CONTROLS:
            return ControlFile(ctl)
        if rest == [ctl] and ctl in _DEVICE_CONTROLS:
            return ControlFile(ctl)
    return None


def driver_link_form(path: str) -> tuple[str, str] | None:
    """(device directory, control) of `<device>/driver/<driver control>`, the form Kata and
    operators write (`/sys/bus/pci/devices/<bdf>/driver/unbind`,
    `/sys/class/net/<if>/device/driver/unbind`); None for any other path.

    Such a path must not be resolved through its `driver` link after the fact: by the time the
    record is handled the unbind has removed the link, or a new bind has pointed it at another
    driver. Only the device part is resolved."""
    head, sep, ctl = path.rpartition("/driver/")
    if sep and ctl in _DRIVER_CONTROLS and head.startswith("/sys/"):
        return head, ctl
    return None


def resolve_against(path: str, base: str | None) -> str | None:
    """`path` made absolute against directory `base` (None when relative and base unknown)."""
    if path.startswith("/"):
        return posixpath.normpath(path)
    if not base:
        return None
    return posixpath.normpath(posixpath.join(base, path))


def kprobe_path(rec: RawRecord) -> str:
    """The sysfs file a store handler serves, rebuilt from the names the handler was given."""
    ctl = rec.control_name
    if ctl in _DRIVER_CONTROLS:
        return f"/sys/bus/{rec.bus or 'pci'}/drivers/{rec.name}/{ctl}"
    if ctl == "drivers_probe" or (ctl == "rescan" and not is_bdf(rec.name)):
        return f"/sys/bus/{rec.name or 'pci'}/{ctl}"
    return f"/sys/bus/pci/devices/{rec.name}/{ctl}"


READBACK_CONTROLS = frozenset({"driver_override", "sriov_numvfs", "sriov_drivers_autoprobe"})
"""Control files whose content after a write is the value written (the open-only variant reads
them back; `bind`, `unbind`, `drivers_probe`, ... keep nothing)."""


def readback_value(control: str, content: str) -> str:
    """The value a read-back file shows was written (`(null)` is an empty driver_override)."""
    text = content.strip()
    return "" if control == "driver_override" and text == "(null)" else text


def value_text(rec: RawRecord) -> str:
    """What was written, as text, trailing newline (and NULs) stripped."""
    return rec.value.rstrip(b"\0").decode("utf-8", "replace").rstrip("\n")


def decode_record(
    rec: RawRecord,
    *,
    actor: ev.Process,
    resolved_path: str | None,
    wall_offset_ns: int,
    mode: str,
    source: str = SOURCE,
) -> ev.SysfsWriteObserved | None:
    """A write or open record -> SysfsWriteObserved; None for other kinds or files.

    `resolved_path` is the symlink-free absolute path of the file (the source resolves it under
    the root); when None the path as the writer gave it is classified (relative paths then fail
    to classify and the record is dropped). Kprobe records carry no path: it is rebuilt.
    """
    if rec.kind == L.VFW_KIND_STORE:
        path = kprobe_path(rec)
    elif rec.kind in (L.VFW_KIND_WRITE, L.VFW_KIND_OPEN_FAIL, L.VFW_KIND_OPEN):
        path = resolved_path or rec.path
    else:
        return None
    cf = classify_path(path)
    if cf is None:
        return None
    stage = "open" if rec.kind in (L.VFW_KIND_OPEN_FAIL, L.VFW_KIND_OPEN) else "write"
    value = value_text(rec) if stage == "write" else ""
    bdf = cf.bdf
    driver = cf.driver
    if bdf is None and cf.control in ("bind", "unbind", "drivers_probe") and is_bdf(value.strip()):
        bdf = value.strip()
    if cf.control == "driver_override":
        driver = value.strip() or None
    return ev.SysfsWriteObserved(
        ts_ns=rec.ts_ns + wall_offset_ns,
        source=source,
        actor=actor,
        path=path,
        control=cf.control,
        value=value,
        bdf=bdf,
        driver=driver,
        result=rec.result,
        mode=mode,
        stage=stage,
    )
