"""The watermark merge: an event leaves when every live source's watermark has passed it; in
the running pipeline, without a fixed window, bounded when a source stalls."""

from __future__ import annotations

import threading
import time

from diag import events as ev
from diag.core.correlator import Correlator
from diag.runtime import Pipeline, PipelineOptions
from diag.runtime.merge import WatermarkMerge
from diag.sources import Availability, Emit
from diag.sources.watermark import Watermark
from diag.testing import ListSink

MS = 1_000_000


class Clock:
    def __init__(self, t: int = 1_000 * MS) -> None:
        self.t = t

    def __call__(self) -> int:
        return self.t


def bound(ts: int, src: str = "uevent") -> ev.DeviceBound:
    return ev.DeviceBound(ts_ns=ts, source=src, bdf="0000:01:10.0", driver="vfio-pci")


def released(m: WatermarkMerge, now: int) -> list[int]:
    return [e.ts_ns for e in m.take(now)]


def test_an_event_waits_only_while_another_source_may_still_deliver_an_older_one() -> None:
    """A working source holds newer events back; the moment it waits they are released."""
    clock = Clock()
    ue, bpf = Watermark(clock_ns=clock), Watermark(clock_ns=clock)
    m = WatermarkMerge()
    m.add_source("uevent", ue)
    m.add_source("ebpf", bpf)
    m.set_running("uevent", True)
    m.set_running("ebpf", True)
    ue.waiting()
    bpf.working()  # woke at t0: may still emit records stamped t0 or later
    t0 = clock.t
    clock.t += 3 * MS
    m.push(bound(t0 + 1 * MS))
    assert released(m, clock.t) == []
    bpf.emitted(t0 + 1 * MS - 10)  # an older record, then nothing more to read
    m.push(ev.SysfsWriteObserved(ts_ns=t0 + 1 * MS - 10, source="ebpf", actor=ev.Process(pid=1),
                                 path="/sys/bus/pci/drivers_probe", control="drivers_probe",
                                 value="0000:01:10.0"))
    bpf.waiting()
    assert released(m, clock.t) == [t0 + 1 * MS - 10, t0 + 1 * MS]
    assert m.stats.late == 0 and m.stats.stalled_total == 0


def test_a_source_in_a_storm_that_never_waits_advances_with_what_it_emits() -> None:
    """`emitted` raises the watermark of a busy source, so the others are not held to the bound."""
    clock = Clock()
    a, b = Watermark(clock_ns=clock), Watermark(clock_ns=clock)
    m = WatermarkMerge()
    for name, wm in (("a", a), ("b", b)):
        m.add_source(name, wm)
        m.set_running(name, True)
    a.working()
    b.working()
    t0 = clock.t
    out = []
    for i in range(1, 100):
        clock.t = t0 + i * MS
        m.push(bound(clock.t, "a"))
        a.emitted(clock.t)
        m.push(bound(clock.t, "b"))
        b.emitted(clock.t)
        out += released(m, clock.t)
    assert out == sorted(out) and len(out) == 2 * 99
    assert m.stats.stalled_total == 0


def test_a_lagged_source_holds_events_for_its_lag_only() -> None:
    """eBPF records are stamped in the kernel before the thread reads them: a waiting eBPF source
    holds the others back by its lag, then lets them go with time alone."""
    clock = Clock()
    bpf = Watermark(lag_ns=2 * MS, clock_ns=clock)
    m = WatermarkMerge()
    m.add_source("ebpf", bpf)
    m.set_running("ebpf", True)
    m.add_source("uevent", None)  # not running: not considered
    bpf.waiting()
    t = clock.t
    m.push(bound(t))
    assert released(m, t + 1 * MS) == []
    assert m.due_in_ns(t + 1 * MS) == 1 * MS
    assert released(m, t + 2 * MS) == [t]


def test_a_held_read_back_pins_the_watermark_until_it_is_emitted() -> None:
    """An opened control file whose value is read back later keeps newer events behind it."""
    clock = Clock()
    bpf = Watermark(clock_ns=clock)
    m = WatermarkMerge(max_lateness_ns=10**12)
    m.add_source("ebpf", bpf)
    m.set_running("ebpf", True)
    t = clock.t
    bpf.working()
    bpf.hold(t + 1)
    bpf.waiting()
    m.push(bound(t + 5))
    clock.t += 100 * MS
    assert released(m, clock.t) == []
    bpf.working()
    m.push(bound(t + 1, "ebpf"))
    bpf.hold(None)
    bpf.waiting()
    assert released(m, clock.t) == [t + 1, t + 5]


def test_a_source_that_is_not_running_holds_nothing() -> None:
    """A crashed or stopped source is not live: its old mark does not hold the others."""
    clock = Clock()
    dead, ue = Watermark(clock_ns=clock), Watermark(clock_ns=clock)
    m = WatermarkMerge()
    m.add_source("dead", dead)
    m.add_source("uevent", ue)
    m.set_running("dead", True)
    m.set_running("uevent", True)
    dead.working()  # mark at t: would hold everything after t
    ue.waiting()
    clock.t += 10 * MS
    m.push(bound(clock.t - 1))
    assert released(m, clock.t) == []
    m.set_running("dead", False)
    assert released(m, clock.t) == [clock.t - 1]


def test_a_stalled_watermark_holds_nothing_past_the_maximum_lateness_and_is_counted() -> None:
    """A source stuck working is bounded: events older than max lateness go, counted against it."""
    clock = Clock()
    stuck, ue = Watermark(clock_ns=clock), Watermark(clock_ns=clock)
    m = WatermarkMerge(max_lateness_ns=50 * MS)
    for name, wm in (("stuck", stuck), ("uevent", ue)):
        m.add_source(name, wm)
        m.set_running(name, True)
    stuck.working()
    ue.waiting()
    t = clock.t
    m.push(bound(t + 1 * MS))
    m.push(bound(t + 30 * MS))
    clock.t = t + 40 * MS
    assert released(m, clock.t) == []
    assert m.due_in_ns(clock.t) == 11 * MS
    clock.t = t + 60 * MS
    assert released(m, clock.t) == [t + 1 * MS]
    assert m.stats.stalled == {"stuck": 1}
    # The stuck source finally emits what it read long ago: out of order, counted as late.
    m.push(bound(t + 2, "stuck"))
    stuck.waiting()
    assert released(m, clock.t) == [t + 2, t + 30 * MS]
    assert m.stats.late == 1


def test_a_source_without_a_watermark_is_assumed_complete_after_the_fallback_window() -> None:
    """Sources that report no watermark keep the former fixed window."""
    m = WatermarkMerge(unmarked_lateness_ns=75 * MS)
    m.add_source("legacy", None)
    m.set_running("legacy", True)
    t = 10_000 * MS
    m.push(bound(t))
    assert released(m, t + 74 * MS) == []
    assert released(m, t + 75 * MS) == [t]
    m.set_running("legacy", False)
    m.push(bound(t + 80 * MS))
    assert released(m, t + 80 * MS) == [t + 80 * MS]


def test_threads_that_stamp_on_read_are_merged_in_time_order_without_waiting_a_window() -> None:
    """Two real threads stamp with the wall clock and follow the protocol; a consumer reads the
    clock, then the watermarks, then the queue: what it releases is in stamp order, none late,
    with no window to wait out (the fallback window here is 1000 s)."""
    m = WatermarkMerge(unmarked_lateness_ns=10**12, max_lateness_ns=10**12)
    q: list[ev.Event] = []
    lock = threading.Lock()
    stop = threading.Event()
    marks = {name: Watermark() for name in ("a", "b")}
    for name, wm in marks.items():
        m.add_source(name, wm)
        m.set_running(name, True)

    def produce(name: str) -> None:
        wm = marks[name]
        for i in range(3000):
            wm.working()
            e = bound(time.time_ns(), name)
            with lock:
                q.append(e)
            wm.emitted(e.ts_ns)
            if i % 7 == 0:
                wm.waiting()
                time.sleep(0)
        wm.waiting()

    threads = [threading.Thread(target=produce, args=(n,)) for n in marks]
    for t in threads:
        t.start()
    out: list[int] = []
    while not stop.is_set():
        now = time.time_ns()
        low = m.watermark(now)
        with lock:
            batch, q[:] = list(q), []
        for e in batch:
            m.push(e)
        got = [e.ts_ns for e in m.take(now, low)]
        out += got
        if not any(t.is_alive() for t in threads) and not q and not len(m):
            stop.set()
    assert len(out) == 6000
    assert out == sorted(out)
    assert m.stats.late == 0


# ---- the merge in the running pipeline --------------------------------------------------------


class PingPong:
    """A source with a watermark that stamps on read: it emits one event, then waits until the
    sink has it before the next (a conversation that a fixed window would stall)."""

    def __init__(self, name: str, n: int, seen: threading.Event) -> None:
        self.name, self.n, self.seen = name, n, seen
        self.watermark = Watermark()

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        wm = self.watermark
        for _ in range(self.n):
            wm.working()
            self.seen.clear()
            emit(bound(time.time_ns(), self.name))
            wm.waiting()
            if not self.seen.wait(5) or stop.is_set():
                return
        wm.waiting()
        stop.wait()


class Stuck:
    """A source that starts working and never emits or waits again (a stuck read)."""

    name = "stuck"

    def __init__(self) -> None:
        self.watermark = Watermark()

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        stop.wait()


class Seen(ListSink):
    def __init__(self, seen: threading.Event) -> None:
        super().__init__()
        self.seen = seen

    def write(self, item: ev.Event, /) -> None:
        super().write(item)
        if item.source != "runtime":
            self.seen.set()


def test_events_of_sources_with_watermarks_reach_the_core_without_the_fallback_window() -> None:
    """Each event of a source that keeps its watermark reaches the sink while the source waits
    for it (the fallback window is 60 s: without the watermark the first event would take a
    minute and the source give up after 5 s), in time order, none late."""
    seen = threading.Event()
    sink = Seen(seen)
    a = PingPong("a", 30, seen)
    p = Pipeline([a], sinks=[sink], correlator=Correlator(rules=[]),
                 options=PipelineOptions(merge_window_ns=60 * 10**9, max_lateness_ns=60 * 10**9))
    p.start()
    try:
        deadline = time.monotonic() + 30
        while len([e for e in sink.items if e.source == "a"]) < 30 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        p.stop()
    got = [e.ts_ns for e in sink.items if e.source == "a"]
    assert len(got) == 30 and got == sorted(got)
    assert p.stats.late == 0 and p.stats.stalled == 0


def test_a_stalled_source_holds_the_others_for_the_maximum_lateness_only_and_is_named() -> None:
    """A source stuck working: the other's events still come, after max_lateness_ns, and each
    is counted against the stuck source."""
    seen = threading.Event()
    sink = Seen(seen)
    a, stuck = PingPong("a", 5, seen), Stuck()
    p = Pipeline([stuck, a], sinks=[sink], correlator=Correlator(rules=[]),
                 options=PipelineOptions(merge_window_ns=60 * 10**9, max_lateness_ns=50_000_000))
    p.start()
    try:
        deadline = time.monotonic() + 30
        while len([e for e in sink.items if e.source == "a"]) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        p.stop()
    assert len([e for e in sink.items if e.source == "a"]) == 5
    assert p.merge_stats.stalled.get("stuck", 0) >= 5 and p.stats.stalled >= 5


def test_a_source_that_crashed_holds_nothing_back() -> None:
    """A source whose run() raised is not running: its stale watermark does not hold the
    others while it waits for its restart."""
    seen = threading.Event()
    sink = Seen(seen)

    class Dies:
        name = "dies"

        def __init__(self) -> None:
            self.watermark = Watermark()

        def probe(self) -> Availability:
            return Availability(True)

        def run(self, emit: Emit, stop: threading.Event) -> None:
            raise RuntimeError("gone")

    a = PingPong("a", 10, seen)
    p = Pipeline([Dies(), a], sinks=[sink], correlator=Correlator(rules=[]),
                 options=PipelineOptions(merge_window_ns=60 * 10**9, max_lateness_ns=60 * 10**9,
                                         retry_initial_s=60))
    p.start()
    try:
        deadline = time.monotonic() + 30
        while len([e for e in sink.items if e.source == "a"]) < 10 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        p.stop()
    assert len([e for e in sink.items if e.source == "a"]) == 10
    assert p.stats.stalled == 0


def test_a_source_that_wakes_with_nothing_to_say_does_not_wake_the_core_thread() -> None:
    """Idle, sources wake often (Kata's log poll every 100 ms, eBPF records of files nobody
    follows) and each wake-up moves their watermark: with nothing held the core thread sleeps
    on (once it woke for every one of them: idle CPU grew)."""
    done = threading.Event()

    class Poller:
        name = "poller"

        def __init__(self) -> None:
            self.watermark = Watermark()

        def probe(self) -> Availability:
            return Availability(True)

        def run(self, emit: Emit, stop: threading.Event) -> None:
            for _ in range(200):
                self.watermark.working()
                self.watermark.waiting()
                time.sleep(0.0005)
            done.set()
            stop.wait()

    p = Pipeline([Poller()], sinks=[ListSink()], correlator=Correlator(rules=[]),
                 options=PipelineOptions(tick_interval_s=60, flush_interval_s=60))
    p.start()
    try:
        assert done.wait(30)
        kicks = p._queue.kicks
    finally:
        p.stop()
    assert kicks < 10, f"{kicks} wake-ups of the core thread for 200 idle polls"


def test_the_store_takes_batches_in_ts_then_arrival_order_whatever_the_mix() -> None:
    """Batches in order, out of order, with ties, single pushes, and takes at random points
    interleaved: what the store gives is always the held events sorted by (ts_ns, arrival) up
    to the cut, and len/oldest_ns agree with that reference."""
    import random

    from diag.runtime.merge import MergeStore

    rng = random.Random(19)
    for _ in range(200):
        m = MergeStore()
        held: list[tuple[int, int, ev.Event]] = []
        arrival = 0
        base = 1_000
        for _ in range(rng.randint(1, 30)):
            step = rng.random()
            if step < 0.7:
                batch = []
                ordered = rng.random() < 0.5
                for _ in range(rng.randint(1, 40)):
                    base += rng.choice([0, 0, 1, 3]) if ordered else rng.choice([0, 1, 5, -3, -20])
                    batch.append(ev.ClockTicked(ts_ns=max(base, 0), source=f"s{arrival + len(batch)}"))
                if len(batch) == 1 and rng.random() < 0.5:
                    m.push(batch[0])
                else:
                    m.push_all(batch)
                for e in batch:
                    arrival += 1
                    held.append((e.ts_ns, arrival, e))
            else:
                held.sort(key=lambda t: (t[0], t[1]))
                cut = None if rng.random() < 0.1 else base + rng.randint(-30, 5)
                want = [e for ts, _, e in held if cut is None or ts <= cut]
                held = held[len(want):]
                assert [e.source for e in m.take(cut)] == [e.source for e in want]
            assert len(m) == len(held)
            assert m.oldest_ns() == (min(ts for ts, _, _ in held) if held else None)
        held.sort(key=lambda t: (t[0], t[1]))
        assert [e.source for e in m.take(None)] == [e.source for _, _, e in held]
