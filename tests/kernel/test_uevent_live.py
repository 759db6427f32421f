"""The uevent source on the real kernel: synthetic uevents, previous driver from state, storms."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.runtime import Pipeline, PipelineOptions
from diag.sources import SourceContext, sysfs
from diag.sources.uevent.decode import decode_uevent
from diag.sources.uevent.source import UeventSource
from diag.testing import Collector, wait_for
from tests.kernel.vw_kernel_helpers import build_storm_writer, new_uuid, storm, storm_device

pytestmark = pytest.mark.usefixtures("require_root")


class Running:
    """A UeventSource running on its own thread, counting the datagrams that carry `tag`."""

    def __init__(self, src: UeventSource, tag: str) -> None:
        self.src = src
        self.out = Collector()
        self.stop = threading.Event()
        self.ours = 0
        needle = tag.encode()

        def counting(data: bytes, ts: int, **kw: str) -> ev.Event | None:
            if needle in data:
                self.ours += 1
            return decode_uevent(data, ts, **kw)

        src.decode = counting
        self.thread = threading.Thread(target=src.run, args=(self.out, self.stop), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        ok = wait_for(lambda: any(isinstance(e, ev.InventoryObserved) for e in self.out.snapshot()))
        if not ok:  # never leave the source thread running behind a failed test
            self.__exit__()
            raise AssertionError("the source did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture
def tag() -> str:
    return new_uuid()


def _write_uevent(bdf: str, text: str) -> None:
    with open(f"/sys/bus/pci/devices/{bdf}/uevent", "w") as fh:
        fh.write(text)


def test_a_synthetic_bind_decodes_with_the_devices_real_driver_and_is_marked(tag: str) -> None:
    """`echo "bind <uuid>" > uevent` gives DeviceBound(bdf, its real driver, synthetic=True)."""
    bdf = storm_device()
    driver = sysfs.read_driver(HostPaths(), bdf)
    with Running(UeventSource(SourceContext()), tag) as run:
        _write_uevent(bdf, f"bind {tag}")
        _write_uevent(bdf, f"change {tag}")
        assert wait_for(lambda: run.ours == 2)
        assert wait_for(lambda: len(run.out.snapshot()) >= 3)
    got = [e for e in run.out.snapshot() if getattr(e, "bdf", None) == bdf and e.synthetic]
    assert [(e.kind, getattr(e, "driver", None)) for e in got[-2:]] == [
        ("device_bound", driver), ("device_changed", driver)]
    inv = run.out.snapshot()[0]
    assert isinstance(inv, ev.InventoryObserved)
    assert {d.bdf for d in inv.devices} == {d.bdf for d in sysfs.scan(HostPaths())}


@pytest.fixture
def fake_root(tmp_path: Path) -> Iterator[Path]:
    """A root whose sysfs says 0000:00:00.0 (really driverless here) is bound to igbvf."""
    root = tmp_path / "root"
    dev = root / "sys/devices/pci0000:00/0000:00:00.0"
    dev.mkdir(parents=True)
    (root / "sys/bus/pci/drivers/igbvf").mkdir(parents=True)
    for name in ("vendor", "device", "class"):
        shutil.copy(f"/sys/bus/pci/devices/0000:00:00.0/{name}", dev / name)
    os.symlink("../../../bus/pci/drivers/igbvf", dev / "driver")
    (root / "sys/bus/pci/devices").mkdir(parents=True)
    os.symlink("../../../devices/pci0000:00/0000:00:00.0", root / "sys/bus/pci/devices/0000:00:00.0")
    yield root


def test_an_unbind_without_driver_gets_the_previous_driver_from_the_sources_state(
    tag: str, fake_root: Path
) -> None:
    """A real kernel `unbind` uevent for a driverless device carries no DRIVER; the source names
    the driver its state (here a sysfs root saying igbvf) last saw."""
    if sysfs.read_driver(HostPaths(), "0000:00:00.0") is not None:
        pytest.skip("0000:00:00.0 has a driver on this machine")
    src = UeventSource(SourceContext(paths=HostPaths.at(fake_root)))
    with Running(src, tag) as run:
        _write_uevent("0000:00:00.0", f"unbind {tag}")
        assert wait_for(lambda: any(isinstance(e, ev.DeviceUnbound) for e in run.out.snapshot()))
    (e,) = [e for e in run.out.snapshot() if isinstance(e, ev.DeviceUnbound)]
    assert (e.bdf, e.previous_driver, e.synthetic) == ("0000:00:00.0", "igbvf", True)


def test_datagrams_from_userspace_senders_are_dropped_and_counted(tag: str) -> None:
    """Anything root sends to the kernel group (nl_pid != 0) is not taken for a kernel uevent."""
    with Running(UeventSource(SourceContext()), tag) as run:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15)
        try:
            s.bind((0, 0))
            fake = f"bind@/devices/x\0ACTION=bind\0SUBSYSTEM=pci\0SYNTH_UUID={tag}\0".encode()
            s.sendto(fake, (0, 1))
        finally:
            s.close()
        assert wait_for(lambda: run.src.stats.foreign >= 1)
    assert run.ours == 0
    assert not [e for e in run.out.snapshot() if isinstance(e, ev.DeviceBound)]


def test_a_50000_uevent_storm_is_received_whole_with_the_default_settings(
    tmp_path: Path, tag: str
) -> None:
    """50,000 synthetic uevents at full kernel speed: every one decoded, nothing lost."""
    exe = build_storm_writer(tmp_path)
    bdf = storm_device()
    with Running(UeventSource(SourceContext()), tag) as run:
        sent, _secs = storm(exe, bdf, 50_000, f"bind {tag}")
        assert wait_for(lambda: run.ours >= sent, timeout=30)
    assert (sent, run.ours) == (50_000, 50_000)
    assert not [e for e in run.out.snapshot() if isinstance(e, (ev.EventsLost, ev.DecodeFailed))]
    assert run.src.stats.enobufs == 0


def test_with_a_tiny_buffer_loss_is_reported_and_resync_leaves_state_identical_to_sysfs(
    tmp_path: Path, tag: str
) -> None:
    """rcvbuf=4 KiB under a storm: ENOBUFS -> EventsLost, Resynced; the core's drivers then equal
    a fresh sysfs scan, device for device."""
    exe = build_storm_writer(tmp_path)
    bdf = storm_device()
    src = UeventSource(SourceContext(options={"rcvbuf": 4096}))
    counted = Running(src, tag)  # installs the counting seam; the pipeline runs the source
    core = Correlator(rules=[])  # the model alone: rules belong to the core's tests
    p = Pipeline([src], correlator=core, options=PipelineOptions(merge_window_ns=10_000_000))
    items = Collector()
    p.on_item(items)
    p.start()
    try:
        assert wait_for(lambda: any(isinstance(e, ev.InventoryObserved) for e in items.snapshot()))
        storm(exe, bdf, 50_000, f"bind {tag}")
        assert wait_for(lambda: any(isinstance(e, ev.Resynced) for e in items.snapshot()), timeout=20)
        assert p.wait_idle(10)
    finally:
        p.stop()
    got = items.snapshot()
    lost = [e for e in got if isinstance(e, ev.EventsLost) and e.lost_source == "uevent"]
    assert lost and "ENOBUFS" in lost[0].reason
    assert counted.ours < 50_000
    resynced = [e for e in got if isinstance(e, ev.Resynced)]
    assert resynced[0].resynced_source == "uevent"
    truth = {d.bdf: d.driver for d in sysfs.scan(HostPaths())}
    state = core.snapshot()
    assert {d.bdf: d.driver for d in state.devices} == truth
    assert {d.bdf: d.driver for d in src.tracker.view()} == truth
    health = {h.name: h for h in state.sources}
    assert health["uevent"].lost >= 1 and health["uevent"].resyncs >= 1


def _kernel_seqnum() -> int:
    return int(Path("/sys/kernel/uevent_seqnum").read_text())


def _kernel_datagrams(src: UeventSource) -> int:
    return src.stats.received - src.stats.foreign


def _settled(src: UeventSource, timeout: float = 30) -> bool:
    """The source has read and decoded everything and closed its loss window, and nothing new
    came for 0.5 s (a resync can happen between two overflows of one storm)."""
    end = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < end:
        reader = src._reader
        n = src.stats.received
        window = getattr(src, "gaps", None)  # (absent before counting by SEQNUM)
        idle = (reader is not None and reader.drained and not reader.q
                and not (window is not None and window.open))
        if n != last or not idle:
            last, since = n, time.monotonic()
        elif time.monotonic() - since >= 0.5:
            return True
        time.sleep(0.05)
    return False


def test_with_a_tiny_buffer_the_lost_count_is_the_number_of_uevents_not_received(
    tmp_path: Path
) -> None:
    """rcvbuf=4 KiB, a 50,000-uevent storm: EventsLost counts uevents (from SEQNUM gaps), not
    ENOBUFS incidents. The count equals sent minus received whenever nothing else took a
    uevent number during the storm or since the source's last uevent before it (a shared
    machine: up to three tries for such a window); always, it lies between what we lost and
    every number we did not receive."""
    exe = build_storm_writer(tmp_path)
    bdf = storm_device()
    outcomes = []
    for _attempt in range(3):
        tag = new_uuid()
        src = UeventSource(SourceContext(options={"rcvbuf": 4096}))
        with Running(src, tag) as run:
            time.sleep(0.3)  # idle before the storm: nothing of ours still on its way
            # Numbers are counted from the last one the source received, not from the kernel's
            # current one: a uevent sent only to another network namespace (a veth made there)
            # in between takes a number this socket never gets, and the first gap of the loss
            # window spans it (the reason says such uevents widen the count).
            seq0, k0 = _kernel_seqnum(), _kernel_datagrams(src)
            seq0 = min(seq0, src.gaps.last) if src.gaps.last is not None else seq0
            sent, _ = storm(exe, bdf, 50_000, f"change {tag}")
            assert wait_for(lambda: any(isinstance(e, ev.Resynced) for e in run.out.snapshot()),
                            timeout=30)
            assert _settled(src)
            seq1, k1 = _kernel_seqnum(), _kernel_datagrams(src)
            losses = [e for e in run.out.snapshot()
                      if isinstance(e, ev.EventsLost) and e.lost_source == "uevent"]
            ours = run.ours
        assert src.stats.enobufs >= 1 and losses
        assert all(e.count is not None and "SEQNUM" in e.reason for e in losses), losses
        counted = sum(e.count or 0 for e in losses)
        numbered, received = seq1 - seq0, k1 - k0
        assert sent - ours <= counted <= numbered - received
        outcomes.append((sent, ours, counted, numbered, received))
        if numbered == sent:  # no other uevent in the window: the count is exact
            assert counted == sent - ours, outcomes
            assert src.stats.enobufs < counted  # many uevents per ENOBUFS: not an incident count
            return
    pytest.skip(f"other uevents took numbers during every storm (shared machine): {outcomes}")


def test_a_synthetic_unbind_moves_neither_the_core_nor_the_source_so_a_resync_finds_nothing(
    tag: str,
) -> None:
    """`unbind <uuid>` of a bound device reaches the core marked synthetic; the core's state
    and the source's view both keep the driver, so a resync against sysfs has nothing to do."""
    bdf = storm_device()
    driver = sysfs.read_driver(HostPaths(), bdf)
    src = UeventSource(SourceContext())
    core = Correlator(rules=[])  # the model alone: rules belong to the core's tests
    p = Pipeline([src], correlator=core, options=PipelineOptions(merge_window_ns=10_000_000))
    items = Collector()
    p.on_item(items)
    p.start()

    def core_driver() -> str | None:
        state = p.state()
        view = state.device(bdf) if state else None
        return view.driver if view else "?"

    try:
        assert wait_for(lambda: core_driver() == driver)
        _write_uevent(bdf, f"unbind {tag}")
        assert wait_for(lambda: any(isinstance(e, ev.DeviceUnbound) and e.synthetic
                                    for e in items.snapshot()))
        src.request_resync("test")
        assert wait_for(lambda: any(isinstance(e, ev.Resynced) for e in items.snapshot()))
        assert p.wait_idle(5)
        time.sleep(0.3)  # one more snapshot
        assert core_driver() == driver and src.tracker.driver(bdf) == driver
    finally:
        p.stop()
    (unbound,) = [e for e in items.snapshot() if isinstance(e, ev.DeviceUnbound)]
    assert unbound.previous_driver == driver
    (res,) = [e for e in items.snapshot() if isinstance(e, ev.Resynced)]
    assert res.changes == 0 and res.reason == "test"


def test_a_full_reader_queue_pauses_the_reader_instead_of_dropping(tmp_path: Path, tag: str) -> None:
    """With a 16-datagram queue between reader and decoder, a 5,000-uevent burst still arrives
    whole: the reader waits and the kernel's socket buffer holds the rest."""
    exe = build_storm_writer(tmp_path)
    src = UeventSource(SourceContext(options={"queue": 16}))
    with Running(src, tag) as run:
        sent, _ = storm(exe, storm_device(), 5_000, f"bind {tag}")
        assert wait_for(lambda: run.ours >= sent, timeout=30)
    assert run.ours == 5_000 and src.stats.backpressure > 0 and src.stats.enobufs == 0
    assert not [e for e in run.out.snapshot() if isinstance(e, ev.EventsLost)]
