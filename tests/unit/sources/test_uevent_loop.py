"""The uevent source's decode loop without a socket: loss -> resync against a sysfs root, bad input."""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.events import replace
from diag.sources import SourceContext, sysfs
from diag.sources.uevent.source import UeventSource

LAB = Path(__file__).resolve().parents[2] / "fixtures" / "sysfs" / "sriov-lab"
VF0 = "0000:01:10.0"


class FakeReader:
    """Stands in for the reader thread: a queue of (ts_ns, datagram or None for ENOBUFS)."""

    def __init__(self, items: list[tuple[int, bytes | None]]) -> None:
        self.q: deque[tuple[int, bytes | None]] = deque(items)
        self.wake = threading.Event()
        self.space = threading.Event()
        self.drained = True
        self.error: BaseException | None = None


def _run(src: UeventSource, reader: FakeReader, until: type[ev.Event] | None) -> list[ev.Event]:
    out: list[ev.Event] = []
    stop = threading.Event()

    def emit(e: ev.Event) -> None:
        out.append(e)
        if until is not None and isinstance(e, until):
            stop.set()
            reader.wake.set()  # what the stop relay does in run()

    t = threading.Thread(target=src._loop, args=(emit, stop, reader), daemon=True)
    t.start()
    if until is None:
        for _ in range(100):
            if not reader.q:
                break
            threading.Event().wait(0.01)
        stop.set()
        reader.wake.set()
    t.join(5)
    assert not t.is_alive()
    return out


def test_enobufs_is_reported_then_sysfs_is_rescanned_and_the_difference_emitted() -> None:
    """The source believed VF0 on igbvf with eth1; sysfs says vfio-pci with an override: after
    EventsLost come exactly those differences (resync=True), then Resynced(changes=N)."""
    src = UeventSource(SourceContext(paths=HostPaths.at(LAB)))
    truth = sysfs.scan(HostPaths.at(LAB))
    stale = [replace(d, driver="igbvf", driver_override=None, netdevs=("eth1",), vfio_group_path=None)
             if d.bdf == VF0 else d for d in truth]
    src.tracker.reset(stale)
    out = _run(src, FakeReader([(1, None)]), until=ev.Resynced)
    assert isinstance(out[0], ev.EventsLost) and out[0].lost_source == "uevent"
    assert out[0].count is None and "ENOBUFS" in out[0].reason
    diff = out[1:-1]
    assert all(e.resync and e.source == "uevent" for e in diff)
    assert [(e.kind, getattr(e, "driver", None) or getattr(e, "ifname", None)) for e in diff] == [
        ("device_unbound", None), ("device_bound", "vfio-pci"), ("device_changed", "vfio-pci"),
        ("netdev_removed", "eth1"),
    ]
    assert isinstance(out[-1], ev.Resynced) and out[-1].changes == len(diff) == 4
    assert {d.bdf: d.driver for d in src.tracker.view()} == {d.bdf: d.driver for d in truth}
    assert src.stats.resyncs == 1


def test_malformed_datagrams_are_counted_and_only_the_first_is_emitted_with_a_hex_sample() -> None:
    """Three bad datagrams among good ones: one DecodeFailed (sample = the first's bytes), the
    count in stats, and the good datagram after them still decoded."""
    good = (b"bind@/devices/pci0000:00/0000:01:10.0\0ACTION=bind\0DEVPATH=/devices/pci0000:00/"
            b"0000:01:10.0\0SUBSYSTEM=pci\0DRIVER=igbvf\0SEQNUM=1\0")
    src = UeventSource(SourceContext(paths=HostPaths.at(LAB)))
    src.tracker.reset(sysfs.scan(HostPaths.at(LAB)))
    reader = FakeReader([(1, b"junk-without-nul"), (2, b""), (3, b"x" * 10000 + b"\0"), (4, good)])
    out = _run(src, reader, until=ev.DeviceBound)
    failed = [e for e in out if isinstance(e, ev.DecodeFailed)]
    assert len(failed) == 1 and failed[0].failed_source == "uevent"
    assert failed[0].sample_hex == b"junk-without-nul".hex() and "NUL" in failed[0].reason
    assert src.stats.malformed == 3
    (bound,) = [e for e in out if isinstance(e, ev.DeviceBound)]
    assert (bound.bdf, bound.driver, bound.previous_driver) == (VF0, "igbvf", "vfio-pci")


def test_a_requested_resync_runs_when_the_queue_is_empty() -> None:
    """request_resync() (the runtime's answer to its own queue overflow) re-scans and reports
    Resynced with the reason, with no EventsLost of its own."""
    src = UeventSource(SourceContext(paths=HostPaths.at(LAB)))
    src.tracker.reset(sysfs.scan(HostPaths.at(LAB)))
    src.request_resync("queue overflow")
    out = _run(src, FakeReader([]), until=ev.Resynced)
    assert [e.kind for e in out] == ["resynced"]
    assert isinstance(out[0], ev.Resynced) and out[0].changes == 0 and out[0].reason == "queue overflow"


def _dgram(seq: int) -> bytes:
    return (b"change@/devices/virtual/misc/x\0ACTION=change\0DEVPATH=/devices/virtual/misc/x\0"
            b"SUBSYSTEM=misc\0SEQNUM=" + str(seq).encode() + b"\0")


def test_a_loss_is_counted_in_uevents_from_seqnum_gaps_and_the_kernels_last_number(
        tmp_path: Path) -> None:
    """SEQNUMs 1, 2, 40, ENOBUFS, 41, 45, 46, then the kernel's counter at 50: 3 lost in the
    gap (42-44) and 4 after the last received (47-50), reported as counts of uevents; the gap
    before the ENOBUFS (3-39: other namespaces' uevents) is not a loss."""
    (tmp_path / "sys/kernel").mkdir(parents=True)
    (tmp_path / "sys/bus/pci/devices").mkdir(parents=True)
    (tmp_path / "sys/kernel/uevent_seqnum").write_text("50\n")
    src = UeventSource(SourceContext(paths=HostPaths.at(tmp_path)))
    items = [(1, _dgram(1)), (2, _dgram(2)), (2, _dgram(40)), (3, None), (4, _dgram(41)),
             (5, _dgram(45)), (6, _dgram(46))]
    out = _run(src, FakeReader(items), until=ev.Resynced)
    lost = [e for e in out if isinstance(e, ev.EventsLost)]
    assert [e.count for e in lost] == [3, 4]
    assert all("SEQNUM" in e.reason for e in lost)
    assert src.gaps.total == 7 and not src.gaps.open


def test_seqnum_is_read_from_the_raw_datagram_or_not_at_all() -> None:
    """A datagram's SEQNUM=, or None for one without it or with a non-number."""
    from diag.sources.uevent.source import seqnum_of

    assert seqnum_of(_dgram(3320356)) == 3320356
    assert seqnum_of(b"add@/x\0ACTION=add\0") is None
    assert seqnum_of(b"add@/x\0SEQNUM=12a\0") is None
    assert seqnum_of(b"add@/x\0SEQNUM=" + b"9" * 40 + b"\0") is None
