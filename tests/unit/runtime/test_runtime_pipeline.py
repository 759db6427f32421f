"""The runtime pipeline with stand-in sources: time order, loss accounting, health, feed, teardown."""

from __future__ import annotations

import threading
import time

import pytest

from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.runtime import Pipeline, PipelineOptions
from diag.sources import Availability, Emit
from diag.testing import ListSink, ScriptedSource, bound, wait_for


class Crashing:
    name = "crashy"

    def __init__(self) -> None:
        self.runs = 0

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        self.runs += 1
        raise RuntimeError("kaput")


def _pipeline(*args: object, **kw: object) -> Pipeline:
    """A pipeline over the core's model alone (rules are tested by the core's own tests)."""
    kw.setdefault("correlator", Correlator(rules=[]))
    return Pipeline(*args, **kw)  # type: ignore[arg-type]


def _payload(items: list[ev.Event]) -> list[ev.Event]:
    return [i for i in items if i.source != "runtime"]


def test_events_from_two_sources_reach_the_sinks_in_time_order() -> None:
    """A late-arriving event with an earlier stamp overtakes within the merge window."""
    now = time.time_ns()
    a = ScriptedSource("a", [bound("0000:00:01.0", "x", now + i * 10, source="a") for i in range(0, 100, 2)])
    b = ScriptedSource("b", [bound("0000:00:01.0", "x", now + i * 10, source="b") for i in range(1, 100, 2)], delay_s=0.02)
    sink = ListSink()
    p = _pipeline([a, b], sinks=[sink], options=PipelineOptions(merge_window_ns=200_000_000))
    p.start()
    assert p.wait_idle(5)
    p.stop()
    got = _payload(sink.items)
    assert len(got) == 100
    assert [e.ts_ns for e in got] == sorted(e.ts_ns for e in got)
    assert p.stats.late == 0


def test_a_full_queue_drops_counts_reports_in_band_and_asks_for_resync() -> None:
    """Queue overflow: the excess is dropped, EventsLost(queue) carries the count, sources that
    can resync are asked to."""
    now = time.time_ns()
    src = ScriptedSource("s", [bound("0000:00:01.0", "x", now + i, source="s") for i in range(500)])
    sink = ListSink()
    p = _pipeline([src], sinks=[sink], options=PipelineOptions(queue_size=100, merge_window_ns=0))
    # Fill the queue before the core runs: start sources only by emitting directly.
    for i in range(300):
        p.emit(bound("0000:00:01.0", "x", now + i, source="direct"))
    p.start()
    assert p.wait_idle(5)
    p.stop()
    lost = [e for e in sink.items if isinstance(e, ev.EventsLost)]
    assert lost and lost[0].lost_source == "queue"
    assert sum(e.count or 0 for e in lost) == p.stats.dropped > 0
    assert p.stats.received + p.stats.dropped >= 300
    assert src.resyncs and p.correlator.snapshot().lost_total == p.stats.dropped


def test_a_crashing_source_is_reported_down_and_retried_with_backoff() -> None:
    """Each crash is a SourceStateChanged(up=False) with the reason; the source is restarted."""
    crashy = Crashing()
    sink = ListSink()
    p = _pipeline([crashy], sinks=[sink], options=PipelineOptions(retry_initial_s=0.05, retry_max_s=0.1))
    p.start()
    time.sleep(0.5)
    p.stop()
    states = [e for e in sink.items if isinstance(e, ev.SourceStateChanged)]
    downs = [s for s in states if not s.up and "kaput" in s.reason]
    assert crashy.runs >= 3 and len(downs) >= 3
    assert "restarted" in downs[0].hint
    assert states[-1].up is False and states[-1].reason == "stopped"
    health = {h.name: h for h in p.correlator.snapshot().sources}
    assert health["crashy"].up is False


class FailsToLoad:
    """Like the eBPF source: its probe says yes, its start-up (compile, attach) then fails."""

    name = "loader"
    reports_up = True

    def probe(self) -> Availability:
        return Availability(True, reason="compiling and attaching")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        raise RuntimeError("cannot load: Operation not permitted")


def test_a_source_that_reports_itself_up_is_never_up_before_it_says_so() -> None:
    """A `reports_up` source is "starting" (up=False) until it emits up itself: one whose load
    fails is never reported up, only starting, then crashed."""
    sink = ListSink()
    p = _pipeline([FailsToLoad()], sinks=[sink],
                  options=PipelineOptions(retry_initial_s=0.05, retry_max_s=0.1))
    p.start()
    time.sleep(0.3)
    p.stop()
    states = [e for e in sink.items if isinstance(e, ev.SourceStateChanged)]
    assert len(states) >= 4 and not any(s.up for s in states)
    assert states[0].reason == "starting: compiling and attaching"
    assert "Operation not permitted" in states[1].reason


def test_unavailable_sources_are_reported_once_with_reason_and_hint() -> None:
    """A source that cannot run is reported in-band, with the fix."""
    sink = ListSink()
    p = _pipeline([], sinks=[sink], unavailable=[("ebpf", Availability(False, "no bcc", "apt-get install python3-bpfcc"))])
    p.start()
    p.stop()
    (s,) = [e for e in sink.items if isinstance(e, ev.SourceStateChanged)]
    assert (s.name, s.up, s.reason, s.hint) == ("ebpf", False, "no bcc", "apt-get install python3-bpfcc")


def test_stop_drains_the_window_flushes_and_closes_within_two_seconds() -> None:
    """Events still held by a long merge window are released at stop; sinks are closed."""
    now = time.time_ns()
    src = ScriptedSource("s", [bound("0000:00:01.0", "x", now + i, source="s") for i in range(1000)])
    sink = ListSink()
    p = _pipeline([src], sinks=[sink], options=PipelineOptions(merge_window_ns=10 * 10**9))
    p.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    p.stop()
    assert time.monotonic() - t0 < 2.0
    assert len(_payload(sink.items)) == 1000 and sink.closed and sink.flushed >= 1


def test_live_feed_delivers_the_newest_snapshot_and_replaces_stale_ones() -> None:
    """A slow listener sees fewer snapshots, never a queue of stale ones; the last one is final."""
    now = time.time_ns()
    src = ScriptedSource("s", [bound(f"0000:00:{i:02x}.0", "x", now + i, source="s") for i in range(50)])
    p = _pipeline([src], options=PipelineOptions(snapshot_interval_s=0.01, merge_window_ns=0))
    feed = p.live_feed()
    seen: list[int] = []

    def slow(state: HostState) -> None:
        seen.append(state.events_total)
        time.sleep(0.05)

    feed.subscribe(slow)
    feed.start()
    assert p.wait_idle(5)
    time.sleep(0.2)
    feed.stop()
    assert seen and seen == sorted(seen)
    assert feed.latest is not None and len(feed.latest.devices) == 50


def test_the_first_snapshot_with_devices_is_not_held_by_the_snapshot_interval() -> None:
    """Snapshots go out at most once per interval, but the first that holds the inventory goes
    at once (issue 19 item 7: the dashboard waited a whole interval, 150 ms, for its devices
    after the snapshot that said the sources were up)."""
    src = ScriptedSource("s", [bound("0000:00:01.0", "x", time.time_ns() + 1, source="s")], delay_s=0.1)
    p = _pipeline([src], options=PipelineOptions(snapshot_interval_s=5.0, merge_window_ns=0))
    feed = p.live_feed()
    got: list[tuple[float, int]] = []
    feed.subscribe(lambda state: got.append((time.monotonic(), len(state.devices))))
    t0 = time.monotonic()
    feed.start()
    end = t0 + 4
    while not any(n for _, n in got) and time.monotonic() < end:
        time.sleep(0.01)
    feed.stop()
    assert got and got[0][1] == 0  # the sources' start went out first
    first = next((t for t, n in got if n), None)
    assert first is not None and first - t0 < 2.0, got


def test_a_rule_deadline_fires_at_the_deadline_with_no_event_after_it() -> None:
    """vf-stuck-unbound's grace (0.4 s here) ends while nothing more arrives: the core thread
    wakes at the rule's deadline itself (the tick interval is 60 s), and a ClockTicked goes to
    the sinks before the finding, as a replay needs."""
    from diag.core.thresholds import CoreConfig
    from tests.unit.core.test_rule_vf_state import STUCK, _stalled_restore

    head, _ = _stalled_restore()
    shift = time.time_ns() - head[-1].ts_ns
    src = ScriptedSource("lab", [ev.replace(e, ts_ns=e.ts_ns + shift) for e in head])
    sink = ListSink()
    p = Pipeline([src], sinks=[sink], correlator=Correlator(CoreConfig(stuck_grace_ns=400_000_000)),
                 options=PipelineOptions(tick_interval_s=60, merge_window_ns=0))
    p.start()
    try:
        assert wait_for(lambda: any(f.rule == STUCK for f in sink.findings()), timeout=10)
    finally:
        p.stop()
    at = next(i for i, e in enumerate(sink.items) if isinstance(e, ev.Finding) and e.rule == STUCK)
    assert isinstance(sink.items[at - 1], ev.ClockTicked)
    assert sink.items[at - 1].ts_ns >= head[-1].ts_ns + shift + 400_000_000


def test_an_idle_core_thread_neither_ticks_nor_flushes_and_a_write_is_flushed_once() -> None:
    """Nothing due and nothing written: the core thread sleeps (no advance, no flush; it is not
    stalled). One event is flushed one flush interval later, once; request_flush() flushes at
    once even with a 60 s interval."""
    sink = ListSink()
    p = _pipeline([], sinks=[sink], options=PipelineOptions(
        tick_interval_s=0.01, flush_interval_s=0.05, merge_window_ns=0))
    advanced: list[int] = []
    real = p.correlator.advance
    p.correlator.advance = lambda now_ns: advanced.append(now_ns) or real(now_ns)  # type: ignore[method-assign]
    p.start()
    try:
        time.sleep(0.5)
        assert (advanced, sink.flushed) == ([], 0)
        assert p.core_stalled_s() == 0.0
        p.emit(bound("0000:00:01.0", "x", time.time_ns(), source="s"))
        assert wait_for(lambda: sink.flushed == 1, timeout=5)
        time.sleep(0.5)
        assert (advanced, sink.flushed) == ([], 1)
        p.request_flush()
        assert wait_for(lambda: sink.flushed == 2, timeout=5)
    finally:
        p.stop()
    assert p.core_stalled_s() is None


def test_a_sink_that_wants_flushes_gets_them_every_interval_while_it_wants() -> None:
    """wants_flush() (a journal whose writes fail, retried at each flush) keeps the flushes
    coming with nothing written; once it says no more, they stop."""

    class Wanting(ListSink):
        want = True

        def wants_flush(self) -> bool:
            return self.want

    sink = Wanting()
    p = _pipeline([], sinks=[sink], options=PipelineOptions(flush_interval_s=0.05,
                                                            merge_window_ns=0))
    p.start()
    try:
        p.request_flush()
        assert wait_for(lambda: sink.flushed >= 4, timeout=5)
        sink.want = False
        time.sleep(0.2)
        n = sink.flushed
        time.sleep(0.5)
        assert sink.flushed == n
    finally:
        p.stop()


def test_build_sources_hands_each_source_its_own_options_table() -> None:
    """`[sources.<name>]` tables go to their source; an unknown option is a ConfigError."""
    import pytest

    from diag.common.errors import ConfigError
    from diag.runtime import build_sources
    from diag.sources import SourceContext

    opts = {"uevent": {"rcvbuf": 1 << 20, "queue": 10}, "links": {"netns": "host"}}
    sources, _ = build_sources(SourceContext(options=opts), ["uevent", "links"])
    by_name = {s.name: s for s in sources}
    assert by_name["uevent"].rcvbuf == 1 << 20 and by_name["uevent"].queue_size == 10  # type: ignore[attr-defined]
    assert by_name["links"].only_host  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="rcvbuff"):
        build_sources(SourceContext(options={"uevent": {"rcvbuff": 1}}), ["uevent"])


class Deaf:
    """Ignores stop and keeps emitting (a misbehaving source)."""

    name = "deaf"

    def __init__(self) -> None:
        self.kill = threading.Event()
        """The test's own switch, so the thread does not outlive the test."""

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        i = 0
        while not self.kill.is_set():
            emit(bound(f"0000:00:{i % 32:02x}.0", "x", time.time_ns(), source="deaf"))
            i += 1
            if i % 100 == 0:
                time.sleep(0.001)


def test_stop_keeps_its_budget_even_when_a_source_ignores_it() -> None:
    """A source that never returns cannot hold stop() past its budget; sinks still close."""
    sink = ListSink()
    deaf = Deaf()
    p = _pipeline([deaf], sinks=[sink], options=PipelineOptions(merge_window_ns=0))
    p.start()
    try:
        time.sleep(0.2)
        t0 = time.monotonic()
        p.stop()
        assert time.monotonic() - t0 < 2.2
        assert sink.closed
    finally:
        deaf.kill.set()


def test_the_merge_store_releases_in_ts_then_arrival_order() -> None:
    """Whatever the arrival order, events leave sorted by ts_ns, ties in arrival order, and
    pop_until stops at the boundary."""
    import random

    from diag.runtime.merge import MergeStore

    rng = random.Random(7)
    m = MergeStore()
    arrivals = []
    base = 1_000
    for i in range(2000):
        base += rng.choice([0, 1, 5, -3, 20, -50])
        e = ev.ClockTicked(ts_ns=max(base, 0), source=f"s{i}")
        arrivals.append(e)
        m.push(e)
    want = sorted(arrivals, key=lambda e: e.ts_ns)  # sorted() is stable: ties keep arrival order
    cut = want[len(want) // 2].ts_ns
    first = [e for _, e in m.pop_until(cut)]
    assert all(e.ts_ns <= cut for e in first)
    rest = [e for _, e in m.pop_until(None)]
    assert [e.source for e in first + rest] == [e.source for e in want]
    assert len(m) == 0 and m.oldest_ns() is None


def test_a_rule_that_raises_does_not_stop_the_core() -> None:
    """An exception in the Correlator is counted and logged; later events still flow."""

    class Broken:
        id = "broken"
        events = None

        def on_event(self, model: object, event: ev.Event) -> list[ev.Finding]:
            if event.source == "bad":
                raise RuntimeError("rule bug")
            return []

        def on_tick(self, model: object, now_ns: int) -> list[ev.Finding]:
            return []

    now = time.time_ns()
    sink = ListSink()
    p = Pipeline([], sinks=[sink], correlator=Correlator(rules=[Broken()]),  # type: ignore[list-item]
                 options=PipelineOptions(merge_window_ns=0))
    p.start()
    p.emit(bound("0000:00:01.0", "x", now, source="bad"))
    p.emit(bound("0000:00:01.0", "x", now + 1, source="good"))
    assert p.wait_idle(5)
    p.stop()
    assert p.stats.core_errors == 1
    assert [e.source for e in _payload(sink.items)] == ["bad", "good"]


def test_sinks_with_write_batch_get_the_same_items_as_lists_of_at_most_a_batch() -> None:
    """A sink with write_batch gets what a write-only sink gets, in the same order, as lists of
    at most SINK_BATCH events, each followed by end_batch; a batch sink that raises is counted
    and the others still get everything."""
    from diag.runtime.pipeline import SINK_BATCH

    class BatchSink(ListSink):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[int] = []
            self.ends = 0

        def write_batch(self, items: list[ev.Event], /) -> None:
            self.batches.append(len(items))
            self.items.extend(items)

        def end_batch(self) -> None:
            self.ends += 1

    class FailingBatchSink(ListSink):
        def write_batch(self, items: list[ev.Event], /) -> None:
            raise OSError("disk on fire")

    now = time.time_ns()
    n = 3 * SINK_BATCH + 17
    src = ScriptedSource("a", [bound("0000:00:01.0", "x", now + i, source="a") for i in range(n)])
    plain, batched, failing = ListSink(), BatchSink(), FailingBatchSink()
    p = _pipeline([src], sinks=[failing, batched, plain])
    p.start()
    assert p.wait_idle(10)
    p.stop()
    assert batched.items == plain.items and len(_payload(plain.items)) == n
    assert max(batched.batches) <= SINK_BATCH and batched.ends >= len(batched.batches) - 1
    assert p.stats.sink_errors == len(batched.batches) and not failing.items


def test_sources_added_to_a_running_pipeline_start_at_once_and_merge_in_order() -> None:
    """add_sources on a running pipeline (the dashboard's later sources): the added source runs,
    its events merge in time order with the first one's, its unavailable companion is reported
    in-band; added after stop, nothing starts; a name added twice is refused."""
    now = time.time_ns()
    a = ScriptedSource("a", [bound("0000:00:01.0", "x", now + i * 10, source="a") for i in range(0, 100, 2)],
                       delay_s=0.05)
    b = ScriptedSource("b", [bound("0000:00:01.0", "x", now + i * 10, source="b") for i in range(1, 100, 2)])
    sink = ListSink()
    p = _pipeline([a], sinks=[sink], options=PipelineOptions(merge_window_ns=200_000_000))
    p.start()
    p.add_sources([b], [("ebpf", Availability(False, "no bcc", "apt-get install python3-bpfcc"))])
    with pytest.raises(ValueError, match="added twice"):
        p.add_sources([ScriptedSource("b", [])])
    assert wait_for(lambda: len(_payload(sink.items)) == 100)
    assert p.wait_idle(5)
    assert p.stats.sources["b"].up
    p.stop()
    got = _payload(sink.items)
    assert [e.ts_ns for e in got] == sorted(e.ts_ns for e in got) and p.stats.late == 0
    states = {(e.name, e.up, e.reason) for e in sink.items if isinstance(e, ev.SourceStateChanged)}
    assert ("ebpf", False, "no bcc") in states and ("b", True, "") in states
    late = ScriptedSource("late", [bound("0000:00:01.0", "x", now, source="late")])
    p.add_sources([late])
    time.sleep(0.1)
    assert "late" not in p.stats.sources and not any(e.source == "late" for e in sink.items)


def test_a_wedged_sink_shows_as_a_stalled_core_thread_and_an_idle_one_does_not() -> None:
    """core_stalled_s(), what /healthz and the watchdog judge: 0.0 while the core thread sleeps
    with nothing to do, growing while a sink holds it, 0.0 again once it is let go, None once
    the pipeline has stopped."""
    gate = threading.Event()

    class Wedged(ListSink):
        def write(self, item: ev.Event, /) -> None:
            gate.wait(10)
            super().write(item)

    p = _pipeline([], sinks=[Wedged()], options=PipelineOptions(merge_window_ns=0))
    p.start()
    try:
        time.sleep(0.2)
        assert p.core_stalled_s() == 0.0
        p.emit(bound("0000:00:01.0", "x", time.time_ns(), source="s"))
        time.sleep(0.5)
        stalled = p.core_stalled_s()
        assert stalled is not None and stalled >= 0.4
        gate.set()
        assert wait_for(lambda: p.core_stalled_s() == 0.0, timeout=5)
    finally:
        gate.set()
        p.stop()
    assert p.core_stalled_s() is None


def test_a_deadline_a_rule_leaves_behind_is_retried_at_the_tick_interval_not_in_a_loop() -> None:
    """A rule whose passed deadline stays set (a rule bug: its on_tick does not take it) is
    advanced about every tick interval, as before deadlines drove the core thread, not every
    millisecond."""
    from diag.core.rules._base import Timers

    class Sticky:
        id = "sticky"
        events = ()
        ticks = True

        def __init__(self) -> None:
            self.timers = Timers()
            self.timers.set("x", 1)  # long past, never popped
            self.ticked = 0

        def on_event(self, model: object, event: ev.Event) -> list[ev.Finding]:
            return []

        def on_tick(self, model: object, now_ns: int) -> list[ev.Finding]:
            self.ticked += 1
            return []

    rule = Sticky()
    p = _pipeline([], correlator=Correlator(rules=[rule]),  # type: ignore[list-item]
                  options=PipelineOptions(tick_interval_s=0.1, merge_window_ns=0))
    p.start()
    time.sleep(1.0)
    p.stop()
    assert 3 <= rule.ticked <= 20
