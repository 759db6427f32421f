"""Provides the `uevent` source: kernel uevents (NETLINK_KOBJECT_UEVENT, group 1) -> PCI events.

Split as every source is (DESIGN.md):

* `decode_uevent` and `DeviceTracker` are pure (`diag.sources.uevent.decode`): a raw datagram
  to one event (or None for what the agent does not keep), and the source's own view of the
  PCI devices that completes unbinds with their driver.
* `UeventSource.run` is thin: a reader thread that only `recv()`s into a bounded queue (the
  kernel socket must be drained faster than a storm fills it: pyroute2's UeventSocket read with
  select()/get() lost half of a 50,000-event burst, host-facts.md), and the calling thread that
  decodes, tracks and emits.

Loss: the socket's receive buffer is raised with SO_RCVBUFFORCE (option `rcvbuf`, default
128 MiB like systemd-udevd; netlink only uses it when a burst needs it). When the kernel still
drops (ENOBUFS; the reader's bounded queue never drops: when it is full the reader pauses and
the kernel's buffer holds the rest), the source emits `EventsLost`, re-scans sysfs,
emits the difference with its own view as `resync=True` events, then `Resynced(changes=N)`.

How many were lost is counted in uevents, not in ENOBUFS incidents: every kernel uevent
carries SEQNUM (one counter for the whole kernel), so from the first ENOBUFS until the socket
is drained again the gaps between consecutive SEQNUMs are the uevents the kernel dropped, plus
the tail up to /sys/kernel/uevent_seqnum once nothing more arrives (`SeqnumGaps`). Gaps outside
such a window are not losses: uevents of devices in other network namespaces (a pod's veth)
take numbers too but are sent only there; inside a window they would be counted as lost, which
the reason says. A window in which no number was missing reports count=None (some, unknown).
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
from dataclasses import dataclass

from diag import events as ev
from diag.common.faults import Share
from diag.events import replace
from diag.sources import (
    Availability,
    Emit,
    SocketCounters,
    SourceContext,
    check_options,
    refusal_events,
    register,
)
from diag.sources import sysfs as sysfs_mod
from diag.sources._wake import StopRelay
from diag.sources.uevent.decode import SOURCE, DeviceTracker, MalformedUevent, decode_uevent
from diag.sources.watermark import Watermark

log = logging.getLogger("vfiowatch.sources.uevent")

NETLINK_KOBJECT_UEVENT = 15
KERNEL_GROUP = 1
"""The kernel's broadcast group (udevd rebroadcasts on group 2, which pods never see)."""
DEFAULT_RCVBUF = 128 * 1024 * 1024
DEFAULT_QUEUE = 65_536
"""Datagrams held between the reader thread and the decoder (about 400 bytes each). When it is
full the reader stops reading, so the kernel's far larger socket buffer holds the rest: a slow
decoder never drops here, only the kernel can (ENOBUFS, then a resync)."""
_RECV_SIZE = 16384



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
class UeventStats(SocketCounters):
    """Counters of one run of the source (read from any thread)."""

    received: int = 0
    """Datagrams read from the socket."""
    kept: int = 0
    """Events emitted from live datagrams."""
    foreign: int = 0
    """Datagrams from a sender other than the kernel (dropped)."""
    backpressure: int = 0
    """Times the reader paused because the decoder's queue was full (nothing is lost)."""
    rcvbuf: int = 0
    """The receive buffer the kernel granted, bytes."""
    injected_drops: int = 0
    """Datagrams thrown away on purpose (`[faults] uevent_drop_percent`), each as a kernel drop."""


_LOST = None  # marker put in the queue by the reader where the kernel reported ENOBUFS
SEQNUM_FILE = "/sys/kernel/uevent_seqnum"
SETTLE_S = 0.02
"""Before the tail of a loss window is counted from SEQNUM_FILE, the drained socket is given
this long for uevents already numbered but still being broadcast (microseconds in practice)."""


def seqnum_of(data: bytes) -> int | None:
    """The SEQNUM of a raw uevent datagram (None when it has none or it is not a number)."""
    i = data.find(b"\0SEQNUM=")
    if i < 0:
        return None
    j = data.find(b"\0", i + 8)
    digits = data[i + 8: j if j >= 0 else len(data)]
    return int(digits) if digits.isdigit() and len(digits) <= 20 else None


class SeqnumGaps:
    """Counts uevents lost from SEQNUM gaps inside loss windows (pure: no I/O).

    `seen(seq)` for every kernel datagram in order; `overflowed()` when the kernel reported
    ENOBUFS, which opens a window; `take()` the gaps counted since the last take; `close(now)`
    ends the window with the tail up to the kernel's current number, returning that tail.
    """

    __slots__ = ("last", "open", "pending", "total", "windows")

    def __init__(self) -> None:
        self.last: int | None = None
        self.open = False
        self.pending = 0
        self.total = 0
        """Uevents counted lost since the source started."""
        self.windows = 0

    def seen(self, seq: int) -> None:
        last = self.last
        if last is not None and seq > last + 1 and self.open:
            self.pending += seq - last - 1
        if last is None or seq > last:
            self.last = seq

    def overflowed(self) -> None:
        if not self.open:
            self.open = True
            self.windows += 1

    def take(self) -> int:
        n, self.pending = self.pending, 0
        self.total += n
        return n

    def close(self, kernel_seq: int | None) -> int:
        """End the window; the uevents numbered after the last one received (all lost: the
        socket is drained), counted once."""
        tail = 0
        if kernel_seq is not None and self.last is not None and kernel_seq > self.last:
            tail = kernel_seq - self.last
            self.last = kernel_seq
        self.open = False
        self.total += tail
        return tail


class _ReaderWatermark(Watermark):
    """The uevent source's watermark: two threads, the reader stamping datagrams as it reads
    them and the decoder emitting them in that order. Complete up to the clock only when the
    reader found the socket empty, nothing waits between the two, and the decoder waits; else
    up to the stamp of the last datagram emitted (the next one is stamped no earlier)."""

    __slots__ = ("reader",)

    def __init__(self) -> None:
        super().__init__()
        self.reader: _Reader | None = None

    def value(self, now_ns: int) -> int:
        r = self.reader
        # Upstream to downstream: the reader clears `drained` before it stamps and queues, the
        # decoder leaves `waiting` only after it emitted all it popped (see watermark.py).
        if r is not None and r.drained and not r.q and self._waiting:
            return now_ns
        return super().value(now_ns) if r is None else self._mark


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
        self.drop: Share | None = None
        """`[faults] uevent_drop_percent`: which kernel datagrams to throw away."""

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
        drop = self.drop
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
                # Not drained before the stamp: a watermark that saw `drained` set may promise
                # the clock it read before, and this stamp comes after.
                self.drained = False
                ts = now()
                stats.received += 1
                if addr[0] != 0:
                    stats.foreign += 1
                    continue
                if drop is not None and drop():
                    # An injected fault: lost as the kernel loses one (ENOBUFS, a SEQNUM gap).
                    stats.injected_drops += 1
                    append((ts, _LOST))
                    wake.set()
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


@register
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
        self.faults = ctx.faults
        self.tracker = DeviceTracker()
        self._resync_reason: str | None = None
        self._reader: _Reader | None = None
        self._malformed_reported = 0
        self._last_decode_failed_ns = 0
        self.gaps = SeqnumGaps()
        self._window_counted = 0
        """Uevents reported lost in the open window so far (0 at its end: the count is None)."""
        self._settle_until = 0.0
        self.decode = decode_uevent
        """The decoder the loop calls (a seam: tests wrap it to count their own datagrams)."""
        self.watermark = _ReaderWatermark()
        """How far this source's stream is complete (the runtime's merge reads it)."""

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
        self.gaps = SeqnumGaps()
        sock, st.rcvbuf = open_socket(self.rcvbuf)
        reader = _Reader(sock, self.queue_size, st)
        if self.faults.uevent_drop_percent:
            reader.drop = Share(self.faults.uevent_drop_percent)
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
        wm = self.watermark
        wm.reader = reader
        while True:
            if stop.is_set():
                return
            if reader.error is not None:
                raise reader.error
            if not q:
                settle = 5.0
                if self._resync_reason is not None and reader.drained:
                    settle = self._close_window(emit)
                    if settle == 0:
                        reason, self._resync_reason = self._resync_reason, None
                        self._resync(emit, reason)
                        settle = 5.0
                reader.wake.clear()
                # Re-check after the clear: a stop or resync request may have just set it.
                if not q and not stop.is_set() and (self._resync_reason is None
                                                    or not reader.drained or settle < 5.0):
                    wm.waiting()  # with the reader drained: complete up to the clock
                    reader.wake.wait(settle)  # set by the reader, the stop relay, request_resync
                    wm.busy()  # what the reader queued meanwhile carries older stamps
                continue
            lost = False
            gaps = self.gaps
            for _ in range(len(q)):
                ts, data = popleft()
                if data is None:
                    gaps.overflowed()
                    lost = True
                    continue
                seq = seqnum_of(data)
                if seq is not None:
                    gaps.seen(seq)
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
            wm.emitted(ts)
            reader.space.set()
            self._settle_until = 0.0  # datagrams came: a loss window's tail waits afresh
            if gaps.pending:
                self._report_lost(emit, gaps.take(), "")
            if self.paths.confined:  # a device scanned for its PF may have met a refused link
                self._refused(emit)
            if lost:
                # Decode what was already received first, so the diff is against the newest view.
                self._resync_reason = self._resync_reason or "events lost"
                if not q and reader.drained and self._close_window(emit) == 0:
                    reason, self._resync_reason = self._resync_reason, None
                    self._resync(emit, reason)

    def _report_lost(self, emit: Emit, n: int, tail: str) -> None:
        self._window_counted += n
        emit(ev.EventsLost(
            ts_ns=time.time_ns(), source=self.name, lost_source=self.name, count=n,
            reason=f"{self._why_lost()}: the kernel dropped {n} uevent(s) (receive buffer full; counted "
                   f"from SEQNUM gaps{tail}, which uevents of devices in other network "
                   f"namespaces would also widen)"))

    def _why_lost(self) -> str:
        if self.faults.uevent_drop_percent:
            return (f"ENOBUFS or an injected drop ([faults] uevent_drop_percent = "
                    f"{self.faults.uevent_drop_percent:g})")
        return "ENOBUFS"

    def _close_window(self, emit: Emit) -> float:
        """At the end of a loss (socket drained): count the tail from the kernel's current
        SEQNUM once nothing more came for SETTLE_S. Returns 0 when the window is closed (or
        none is open), else how long to wait for datagrams still on their way."""
        gaps = self.gaps
        if not gaps.open:
            return 0
        kernel_seq: int | None = None
        try:
            text = self.paths.read_text(SEQNUM_FILE, 64)
            kernel_seq = int(text.strip()) if text.strip().isdigit() else None
        except OSError:
            pass
        now = time.monotonic()
        if kernel_seq is not None and gaps.last is not None and kernel_seq > gaps.last:
            if not self._settle_until:
                self._settle_until = now + SETTLE_S
            if now < self._settle_until:
                return self._settle_until - now
        self._settle_until = 0.0
        tail = gaps.close(kernel_seq)
        if tail:
            self._report_lost(emit, tail, f" and {SEQNUM_FILE}")
        if not self._window_counted:  # ENOBUFS, yet no number missing: say some, not zero
            emit(ev.EventsLost(ts_ns=time.time_ns(), source=self.name, lost_source=self.name,
                               count=None, reason=f"{self._why_lost()}: the kernel dropped "
                                                  "uevents (receive buffer full; no SEQNUM gap "
                                                  "seen: how many is unknown)"))
        self._window_counted = 0
        return 0

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
