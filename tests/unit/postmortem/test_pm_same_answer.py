"""Same engine, same answer: a journal written by the live pipeline replays to identical findings."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import ClassVar

from diag import codec
from diag import events as ev
from diag import postmortem as pm
from diag.importers import FileStats
from diag.importers import journal as jmod
from diag.runtime import Pipeline, PipelineOptions
from diag.sinks.journal import JournalSink
from diag.sources import Availability, Emit
from diag.sources.uevent.decode import DeviceTracker, decode_uevent
from diag.testing import FakeClock
from tests.fixtures.dumps import load_dump

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
PHASES = ("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio")
"""The lab's real moves, stopping with VF 0000:01:10.0 left on vfio-pci (no holder)."""


def lab_events() -> list[ev.Event]:
    """The lab's real uevent datagrams decoded as the live uevent source does, wall-clock stamped."""
    from diag.common.paths import HostPaths
    from diag.events import replace
    from diag.sources import sysfs

    # The state after `sriov-create` (the lab's sysfs tree, both VFs on igbvf), as the live
    # uevent source's opening scan.
    scan = [replace(d, driver="igbvf", driver_override=None, vfio_group_path=None)
            if d.role == "vf" else d
            for d in sysfs.scan(HostPaths.at(FIXTURES / "sysfs" / "sriov-lab"))]
    first = load_dump(FIXTURES / "uevent" / f"{PHASES[0]}.dump")[0].t_real_ns
    tracker = DeviceTracker(scan)
    out: list[ev.Event] = [ev.InventoryObserved(ts_ns=first - 1_000_000, source="uevent",
                                                devices=tuple(scan))]
    for phase in PHASES:
        for rec in load_dump(FIXTURES / "uevent" / f"{phase}.dump"):
            e = decode_uevent(rec.data, rec.t_real_ns)
            if e is not None:
                out.append(tracker.apply(e))
    return out


class _Replayer:
    """A source that plays recorded events in real time order and moves the wall clock with them."""

    name: ClassVar[str] = "uevent"

    def __init__(self, events: list[ev.Event], clock: FakeClock, tail_ns: int) -> None:
        self.events, self.clock, self.tail_ns = events, clock, tail_ns
        self.done = threading.Event()

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        for e in self.events:
            self.clock.ns = max(self.clock.ns, e.ts_ns + 1_000_000)
            emit(e)
            time.sleep(0.001)
        # Nothing else happens for a while: live, timer ticks let the grace periods expire.
        end = self.events[-1].ts_ns + self.tail_ns
        while self.clock.ns < end and not stop.is_set():
            self.clock.ns = min(end, self.clock.ns + 5_000_000_000)
            time.sleep(0.03)
        self.done.set()
        stop.wait(5)


def _recorded_findings(path: Path) -> dict[str, ev.Finding]:
    out: dict[str, ev.Finding] = {}
    for e in jmod.read_journal(str(path)).events:
        if isinstance(e, ev.Finding):
            out[e.finding_id] = e
    return out


def test_live_journal_replays_to_identical_findings(tmp_path: Path) -> None:
    """Lab moves through the live Pipeline into a JournalSink; postmortem of that journal gives
    the same findings (ids, transitions' final states), including one raised by a timer tick."""
    events = lab_events()
    clock = FakeClock(events[0].ts_ns)
    src = _Replayer(events, clock, tail_ns=180 * 1_000_000_000)
    holder: list[Pipeline] = []
    path = tmp_path / "journal.jsonl"
    sink = JournalSink(path, fsync_interval_s=0,
                       state=lambda: holder[0].correlator.snapshot() if holder else None,
                       clock_ns=clock)
    pipe = Pipeline([src], sinks=[sink], clock_ns=clock,
                    options=PipelineOptions(tick_interval_s=0.01, snapshot_interval_s=0.05))
    holder.append(pipe)
    pipe.start()
    assert src.done.wait(30)
    time.sleep(0.3)
    pipe.stop()

    recorded = _recorded_findings(path)
    assert recorded, "the live run raised no finding"
    report = pm.run([str(path)], pm.Options())
    replayed = {f.finding_id: f for f in report.findings}
    assert replayed == recorded
    assert report.replay_matches_recording is True
    rules = {f.rule for f in replayed.values()}
    assert "vfio-bind-coldplug-disabled" in rules
    assert "vf-stranded-on-vfio" in rules  # only a timer tick (grace period) raises this one
    # The journal really carried the tick that raised it.
    st = FileStats(str(path))
    kinds = [e.kind for e in jmod.parse_file(str(path), st).events]
    assert "clock_ticked" in kinds


def test_journal_built_through_the_codec_replays_like_the_correlator_fed_directly() -> None:
    """Events fed to a Correlator directly and the same events as journal lines give equal findings."""
    from diag.core.correlator import Correlator

    events = lab_events()
    corr = Correlator()
    direct: dict[str, ev.Finding] = {}
    lines = [codec.dumps(codec.Header(boot_id="b", started_ns=events[0].ts_ns))]
    for e in events:
        lines.append(codec.dumps(e))
        for f in corr.feed(e):
            direct[f.finding_id] = f
            lines.append(codec.dumps(f))
    inp = pm.Input(index=0, path="<mem>", stats=FileStats("<mem>", format="journal"))
    parsed = jmod._JournalImporter().parse(iter(lines), inp.stats, "<mem>")
    inp.parsed, inp.stats.clock = parsed, "realtime"
    report = pm.replay([inp], pm.Options())
    assert {f.finding_id: f for f in report.findings} == direct
    assert report.replay_matches_recording is True


def test_udevadm_is_aligned_to_the_agent_journal_of_the_same_session(tmp_path: Path) -> None:
    """The lab's raw uevents as an agent journal (wall clock) and its udevadm capture
    (monotonic): matched, the offset lands within its ± of the true one, and each move shows once."""
    lines = [codec.dumps(codec.Header(boot_id="lab", started_ns=1))]
    tracker = DeviceTracker()
    truth = None
    for phase in ("pf-probe", "sriov-create", *PHASES, "kata30-restore", "sriov-destroy"):
        for rec in load_dump(FIXTURES / "uevent" / f"{phase}.dump"):
            truth = rec.t_real_ns - rec.t_mono_ns if truth is None else truth
            e = decode_uevent(rec.data, rec.t_real_ns)
            if e is not None:
                lines.append(codec.dumps(tracker.apply(e)))
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b"".join(lines))
    udev = FIXTURES / "postmortem" / "udevadm-monitor-kernel-property.txt"
    report = pm.run([str(journal), str(udev)], pm.Options())
    a = report.inputs[1].alignment
    assert a is not None and a.uncertainty_ns is not None and a.support >= 10
    assert truth is not None and abs(a.offset_ns - truth) <= a.uncertainty_ns
    binds = [e for e in report.timeline if e.event.kind == "device_bound"
             and getattr(e.event, "driver", "") == "vfio-pci"]
    assert len(binds) == 2  # the two Kata-style binds, each seen by both inputs, shown once
