"""Provides the `uevent` source: kernel uevents (NETLINK_KOBJECT_UEVENT, group 1) -> PCI events.

Split as every source is (DESIGN.md):

* `decode_uevent(data, ts_ns)` is pure: one raw datagram (`ACTION@DEVPATH\\0KEY=VALUE\\0...`) to
  one event, or None for the subsystems the agent does not need. It keeps pci, net (only
  netdevs under a PCI function), vfio, vfio-dev and PCI driver add/remove. The subsystem is
  found on the raw bytes before anything is split or decoded, so the other subsystems (queues,
  module, wakeup, block, ... the bulk of a busy host) cost one `bytes.find` each. Malformed
  datagrams raise `MalformedUevent`.
* `DeviceTracker` is pure too: the source's own view of the PCI devices, seeded from a sysfs
  scan and followed by uevents. An `unbind` uevent carries no DRIVER (sriov-lab.md), so the
  tracker fills `previous_driver` from what it saw last; it also fills the IOMMU group of a
  `vfio-dev` node and the device of a `vfio` group node. Synthetic uevents (SYNTH_UUID: `udevadm
  trigger`, tests) are marked `synthetic`; their bind/unbind/remove/netdev copies claim a move
  that did not happen, so they change the view no more than they change the core's state (the
  view must stay what the core believes, so that a resync's difference repairs the core).
* `UeventSource.run` is thin: a reader thread that only `recv()`s into a bounded queue (the
  kernel socket must be drained faster than a storm fills it: pyroute2's UeventSocket read with
  select()/get() lost half of a 50,000-event burst, host-facts.md), and the calling thread that
  decodes, tracks and emits.

Loss: the socket's receive buffer is raised with SO_RCVBUFFORCE (option `rcvbuf`, default
128 MiB like systemd-udevd; netlink only uses it when a burst needs it). When the kernel still
drops (ENOBUFS; the reader's bounded queue never drops: when it is full the reader pauses and
the kernel's buffer holds the rest), the source emits `EventsLost`, re-scans sysfs,
emits the difference with its own view as `resync=True` events, then `Resynced(changes=N)`.
Uevents from a sender other than the kernel (nl_pid != 0) are dropped and counted: any root
process may send to the group.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from diag import events as ev
from diag.sources import Availability, Emit, SourceContext, check_options, refusal_events, register
from diag.sources import sysfs as sysfs_mod
from diag.sources._wake import StopRelay

log = logging.getLogger("vfiowatch.sources.uevent")

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
"""The kernel's broadcast group (udevd rebroadcasts on group 2, which pods never see)."""
DEFAULT_RCVBUF = 128 * 1024 * 1024
DEFAULT_QUEUE = 65_536
"""Datagrams held between the reader thread and the decoder (about 400 bytes each). When it is
full the reader stops reading, so the kernel's far larger socket buffer holds the rest: a slow
decoder never drops here, only the kernel can (ENOBUFS, then a resync)."""
MAX_UEVENT = 8192
"""Larger than any kernel uevent (UEVENT_BUFFER_SIZE is 2048 for the environment)."""
_RECV_SIZE = 16384

SOURCE = "uevent"

_KEEP = frozenset((b"pci", b"net", b"vfio", b"vfio-dev", b"drivers"))
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
    sub = data[i + _SUBLEN : j]
    if sub not in _KEEP:
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
    common: dict[str, Any] = {"ts_ns": ts_ns, "source": source, "synthetic": synthetic}

    if sub == b"pci":
        bdf = devpath[devpath.rfind("/") + 1 :]  # = PCI_SLOT_NAME, without a search
        if action == "bind":
            return ev.DeviceBound(ts_ns=ts_ns, source=source, synthetic=synthetic, bdf=bdf,
                                  driver=_text(_field(data, b"\0DRIVER=") or b""))
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

    if sub == b"net":
        bdf = _after(devpath, "/net/")
        if bdf is None or not sysfs_mod.is_bdf(bdf):
            return None  # a virtual or non-PCI netdev: the links source covers it
        ifname = _text(_field(data, b"\0INTERFACE=") or devpath[devpath.rfind("/") + 1 :].encode())
        ifindex = _int(_field(data, b"\0IFINDEX="))
        if action in ("add", "move"):  # move = rename: the device's netdev now has this name
            return ev.NetdevAdded(bdf=bdf, ifname=ifname, ifindex=ifindex, **common)
        if action == "remove":
            return ev.NetdevRemoved(bdf=bdf, ifname=ifname, ifindex=ifindex, **common)
        return None

    if sub == b"vfio":
        # The group node: /devices/virtual/vfio/<group> (noiommu-<group> without an IOMMU).
        name = devpath[devpath.rfind("/") + 1 :]
        group = _int(name.removeprefix("noiommu-").encode())
        devname = _text(_field(data, b"\0DEVNAME=") or b"")
        if action == "add":
            return ev.VfioDeviceAdded(bdf=None, group=group, devname=devname, **common)
        if action == "remove":
            return ev.VfioDeviceRemoved(bdf=None, group=group, devname=devname, **common)
        return None

    if sub == b"vfio-dev":
        bdf = _after(devpath, "/vfio-dev/")
        if bdf is not None and not sysfs_mod.is_bdf(bdf):
            bdf = None
        dn = _field(data, b"\0DEVNAME=")
        devname = _text(dn) if dn else "vfio-dev/" + devpath[devpath.rfind("/") + 1 :]
        if action == "add":
            return ev.VfioDeviceAdded(bdf=bdf, devname=devname, **common)
        if action == "remove":
            return ev.VfioDeviceRemoved(bdf=bdf, devname=devname, **common)
        return None

    # sub == b"drivers": /bus/<bus>/drivers/<driver>
    bits = devpath.split("/")
    if len(bits) != 5 or bits[1] != "bus" or bits[3] != "drivers" or bits[2] != "pci":
        return None
    if action == "add":
        return ev.DriverRegistered(bus=bits[2], driver=bits[4], **common)
    if action == "remove":
        return ev.DriverUnregistered(bus=bits[2], driver=bits[4], **common)
    return None


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
        t = type(e)
        if t is ev.DeviceBound:
            assert isinstance(e, ev.DeviceBound)
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
        if t is ev.DeviceUnbound:
            assert isinstance(e, ev.DeviceUnbound)
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
            d = self.devices.get(e.bdf or "")
            if d is not None:
                names = set(d.netdevs)
                if t is ev.NetdevAdded:
                    names.add(e.ifname)
                else:
                    names.discard(e.ifname)
                self.devices[d.bdf] = replace(d, netdevs=tuple(sorted(names)))
        elif t is ev.VfioDeviceAdded or t is ev.VfioDeviceRemoved:
            assert isinstance(e, (ev.VfioDeviceAdded, ev.VfioDeviceRemoved))
            if e.bdf is None and e.group is not None:
                owner = self._group_owner(e.group)
                if owner:
                    e = replace(e, bdf=owner)
            elif e.bdf is not None and e.group is None:
                d = self.devices.get(e.bdf)
                if d is not None and d.iommu_group is not None:
                    e = replace(e, group=d.iommu_group)
        return e


# --------------------------------------------------------------------------------------------
# I/O: the socket, the reader thread, the loop
# --------------------------------------------------------------------------------------------


def open_socket(rcvbuf: int = DEFAULT_RCVBUF) -> tuple[socket.socket, int]:
    """A non-blocking raw uevent socket bound to the kernel group; returns (socket, the buffer
    the kernel granted). SO_RCVBUFFORCE (CAP_NET_ADMIN) ignores net.core.rmem_max; without the
    capability, SO_RCVBUF is capped by it."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                         NETLINK_KOBJECT_UEVENT)
    try:
        if rcvbuf > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, KERNEL_GROUP))
        sock.setblocking(False)
        granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    except BaseException:
        sock.close()
        raise
    return sock, granted


@dataclass(slots=True)
class UeventStats:
    """Counters of one run of the source (read from any thread)."""

    received: int = 0
    """Datagrams read from the socket."""
    kept: int = 0
    """Events emitted from live datagrams."""
    malformed: int = 0
    foreign: int = 0
    """Datagrams from a sender other than the kernel (dropped)."""
    enobufs: int = 0
    backpressure: int = 0
    """Times the reader paused because the decoder's queue was full (nothing is lost)."""
    resyncs: int = 0
    rcvbuf: int = 0


_LOST = None  # marker put in the queue by the reader where the kernel reported ENOBUFS


class _Reader(threading.Thread):
    """Only reads: recv() into a bounded deque, stamping each datagram with the wall clock."""

    def __init__(self, sock: socket.socket, size: int, stats: UeventStats) -> None:
        super().__init__(name="vfiowatch-uevent-reader", daemon=True)
        self.sock = sock
        self.wake_fd: int | None = None
        """Also polled: readable when the source must stop (StopRelay)."""
        self.size = size
        self.stats = stats
        self.q: deque[tuple[int, bytes | None]] = deque()
        self.wake = threading.Event()
        self.space = threading.Event()
        """Set by the decoder after each batch: room in the queue again."""
        self.drained = False
        """True when the last recv() found the kernel socket empty (a resync waits for it: the
        kernel reports ENOBUFS before datagrams it had queued earlier, and those must not be
        applied on top of a newer scan)."""
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        sock, q, stats = self.sock, self.q, self.stats
        recvmsg = sock.recvmsg
        append = q.append
        wake = self.wake
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        if self.wake_fd is not None:
            poller.register(self.wake_fd, select.POLLIN)
        halt = self.halt
        now = time.time_ns
        size = self.size
        space = self.space
        trunc = socket.MSG_TRUNC
        try:
            while not halt.is_set():
                if len(q) >= size:
                    # Full: leave the datagrams in the kernel's (much larger) buffer.
                    stats.backpressure += 1
                    space.clear()
                    if len(q) >= size:
                        wake.set()
                        space.wait(0.05)
                    continue
                try:
                    data, _, flags, addr = recvmsg(_RECV_SIZE)
                except BlockingIOError:
                    self.drained = True
                    wake.set()  # the decoder may be waiting for `drained` to resync
                    poller.poll(5000)  # the stop relay's fd wakes it at once
                    continue
                except InterruptedError:
                    continue
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        stats.enobufs += 1
                        append((now(), _LOST))
                        wake.set()
                        continue
                    raise
                ts = now()
                self.drained = False
                stats.received += 1
                if addr[0] != 0:
                    stats.foreign += 1
                    continue
                if flags & trunc:
                    data = data + b"\x00TRUNCATED"  # no trailing NUL: counted as malformed
                append((ts, data))
                if not wake.is_set():
                    wake.set()
        except BaseException as exc:  # handed to the decoding thread, which raises it
            self.error = exc
            wake.set()


OPTIONS = ("rcvbuf", "queue", "decode_failed_interval_s")
"""The options this source takes (`[sources.uevent]` in the configuration file)."""


@register("uevent")
class UeventSource:
    """Kernel uevents for PCI driver moves, netdevs, vfio nodes and PCI driver registration.

    Options (SourceContext.options): `rcvbuf` (bytes, default 128 MiB), `queue` (datagrams
    held between reader and decoder, default 65,536), `decode_failed_interval_s` (how often a
    repeated DecodeFailed is re-reported with its count, default 60).
    """

    name = SOURCE

    def __init__(self, ctx: SourceContext | None = None) -> None:
        ctx = ctx or SourceContext()
        self.paths = ctx.paths
        opts = ctx.options
        check_options(self.name, opts, OPTIONS)
        self.rcvbuf = int(opts.get("rcvbuf", DEFAULT_RCVBUF))
        self.queue_size = int(opts.get("queue", DEFAULT_QUEUE))
        self.decode_failed_interval_ns = int(float(opts.get("decode_failed_interval_s", 60)) * 1e9)
        self.stats = UeventStats()
        self.tracker = DeviceTracker()
        self._resync_reason: str | None = None
        self._reader: _Reader | None = None
        self._malformed_reported = 0
        self._last_decode_failed_ns = 0
        self.decode = decode_uevent
        """The decoder the loop calls (a seam: tests wrap it to count their own datagrams)."""

    def probe(self) -> Availability:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_KOBJECT_UEVENT)
        except OSError as exc:
            return Availability(False, reason=f"cannot open a uevent netlink socket: {exc}",
                                hint="run on Linux with AF_NETLINK (not inside a sandbox that forbids it)")
        forced = True
        try:
            sock.bind((0, KERNEL_GROUP))
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                forced = False
        except OSError as exc:
            return Availability(False, reason=f"cannot join the kernel uevent group: {exc}",
                                hint="run in the host's network namespace (hostNetwork: true)")
        finally:
            sock.close()
        if not self.paths.is_dir("/sys/bus/pci/devices"):
            return Availability(False, reason=f"{self.paths.pci_devices} does not exist",
                                hint="mount the host's /sys and pass --root")
        if not forced:
            # Still useful: bursts beyond the smaller buffer are reported and resynced.
            return Availability(
                True, mode="netlink",
                reason="receive buffer capped by net.core.rmem_max (no CAP_NET_ADMIN): a large "
                       "uevent burst will be lost and resynced",
                hint="grant CAP_NET_ADMIN, or raise net.core.rmem_max",
            )
        return Availability(True, mode="netlink")

    def request_resync(self, reason: str) -> None:
        """Ask the running loop to re-scan sysfs and emit the difference (any thread)."""
        self._resync_reason = reason
        reader = self._reader
        if reader is not None:
            reader.wake.set()

    # ---- the loop -------------------------------------------------------------------------------

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Open the socket first, then scan (so nothing falls between), emit the inventory,
        then decode what the reader queues until `stop`."""
        self.stats = st = UeventStats()
        sock, st.rcvbuf = open_socket(self.rcvbuf)
        reader = _Reader(sock, self.queue_size, st)
        relay = StopRelay(stop, reader.halt.set, reader.wake.set)
        reader.wake_fd = relay.fd
        self._reader = reader
        try:
            devices = sysfs_mod.scan(self.paths)
            self.tracker.reset(devices)
            emit(ev.InventoryObserved(ts_ns=time.time_ns(), source=self.name, devices=tuple(devices)))
            self._refused(emit)
            reader.start()
            self._loop(emit, stop, reader)
        finally:
            self._reader = None
            reader.halt.set()
            if reader.is_alive():
                if not stop.is_set():  # leaving on an error: wake the reader's poll ourselves
                    os.eventfd_write(relay.fd, 1)
                reader.join(1.0)
            sock.close()
            relay.close()

    def _loop(self, emit: Emit, stop: threading.Event, reader: _Reader) -> None:
        st = self.stats
        q = reader.q
        popleft = q.popleft
        decode = self.decode
        track = self.tracker.apply
        name = self.name
        while True:
            if stop.is_set():
                return
            if reader.error is not None:
                raise reader.error
            if not q:
                if self._resync_reason is not None and reader.drained:
                    reason, self._resync_reason = self._resync_reason, None
                    self._resync(emit, reason)
                reader.wake.clear()
                # Re-check after the clear: a stop or resync request may have just set it.
                if not q and not stop.is_set() and (self._resync_reason is None
                                                    or not reader.drained):
                    reader.wake.wait(5.0)  # set by the reader, the stop relay, request_resync
                continue
            lost = False
            for _ in range(len(q)):
                ts, data = popleft()
                if data is None:
                    if not lost:  # one report per gap: a storm can overflow many times a batch
                        emit(ev.EventsLost(ts_ns=ts, source=name, lost_source=name, count=None,
                                           reason="ENOBUFS: the kernel dropped uevents (receive buffer full)"))
                    lost = True
                    continue
                try:
                    e = decode(data, ts)
                except MalformedUevent as exc:
                    self._malformed(emit, ts, data, str(exc))
                    continue
                if e is None:
                    continue
                if e.__class__ is ev.DeviceAdded and not e.synthetic:
                    e = self._enrich_added(e)  # type: ignore[arg-type]
                st.kept += 1
                emit(track(e))
            reader.space.set()
            if self.paths.confined:  # a device scanned for its PF may have met a refused link
                self._refused(emit)
            if lost:
                # Decode what was already received first, so the diff is against the newest view.
                self._resync_reason = self._resync_reason or "events lost"
                if not q and reader.drained:
                    reason, self._resync_reason = self._resync_reason, None
                    self._resync(emit, reason)

    def _enrich_added(self, e: ev.DeviceAdded) -> ev.DeviceAdded:
        # A new device (usually a VF from sriov_numvfs): its PF and VF index are only in sysfs.
        d = sysfs_mod.scan_device(self.paths, e.bdf)
        if d is None:
            return e
        self.tracker.devices[e.bdf] = replace(d, driver=None)
        return replace(e, pf=d.pf, vf_index=d.vf_index, vendor=e.vendor or d.vendor,
                       device=e.device or d.device, class_code=e.class_code or d.class_code)

    def _refused(self, emit: Emit) -> None:
        """Sysfs paths refused since the last call (they lead outside --root), in-band."""
        for e in refusal_events(self.paths, self.name, time.time_ns()):
            emit(e)

    def _malformed(self, emit: Emit, ts: int, data: bytes, why: str) -> None:
        st = self.stats
        st.malformed += 1
        due = ts - self._last_decode_failed_ns >= self.decode_failed_interval_ns
        if self._malformed_reported == 0 or due:
            count = st.malformed - self._malformed_reported
            self._malformed_reported = st.malformed
            self._last_decode_failed_ns = ts
            if self._malformed_reported == count:
                log.warning("malformed uevent (%s): %s", why, data[:64].hex())
            emit(ev.DecodeFailed(ts_ns=ts, source=self.name, failed_source=self.name,
                                 reason=why, sample_hex=data[:64].hex(), count=count))

    def _resync(self, emit: Emit, reason: str) -> None:
        ts = time.time_ns()
        try:
            after = sysfs_mod.scan(self.paths)
        except Exception as exc:
            log.warning("uevent resync failed: %s", exc)
            return
        changes = sysfs_mod.diff(self.tracker.view(), after, ts_ns=ts, source=self.name)
        for e in changes:
            emit(e)
        self.tracker.reset(after)
        self.stats.resyncs += 1
        emit(ev.Resynced(ts_ns=ts, source=self.name, resynced_source=self.name,
                         changes=len(changes), reason=reason))
        self._refused(emit)
