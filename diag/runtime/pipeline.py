"""Provides Pipeline: sources on threads -> bounded queue -> watermark merge -> Correlator -> sinks.

The shape (DESIGN.md), as threads:

```
 source thread(s)  --emit-->  bounded queue  --drain-->  core thread  --write-->  sinks
 (one supervisor                (drops and                watermark merge     +--> LiveFeed
  per source)                    counts)                  Correlator.feed        (publisher
                                                          advance at deadlines    thread)
```

* **Bounded queue.** `emit()` never blocks a source: when `queue_size` events are waiting the
  event is dropped and counted; the core thread turns the count into an in-band
  `EventsLost(lost_source="queue")` and asks every source that can (`request_resync()`) to
  re-read the kernel's state, so a loss is never silent.
* **Watermark merge** (diag/runtime/merge.py). Uevents, rtnetlink and eBPF records arrive on
  different sockets in varying order (sriov-lab.md: RTM_DELLINK before or after `remove net`;
  the eBPF record of a write after the uevent it caused). Each source keeps a `Watermark`
  (diag/sources/watermark.py): every event it emits from now on is stamped at or after it; a
  source waiting for input is complete up to the clock at once. An event leaves for the core
  when every running source's watermark has passed it, in `(ts_ns, arrival)` order: a few
  milliseconds, not a fixed window. A source without a watermark is assumed complete up to
  `merge_window_ns` ago; a watermark that stalls holds nothing longer than `max_lateness_ns`
  (those releases are counted per source in `stats.stalled`). An event older than one already
  released is released at once and counted in `stats.late`. A drained batch already in order
  is held as one segment and taken by bisection; only overtaking events go through a heap.
* **Robust core.** An exception raised by the Correlator (a rule bug) is logged and counted in
  `stats.core_errors`; the event still reaches the sinks and the next one is processed.
* **Core thread.** The only thread that touches the Correlator and the sinks. Time in the core
  comes from events; while a rule has a deadline (`Correlator.next_due_ns()`), the core thread
  calls `Correlator.advance(watermark)` when the watermark passes it, and at least every
  `tick_interval_s` (a clock that jumps), so grace periods expire while nothing happens.
  When a timer tick produces findings, a `ClockTicked` is written to the sinks before them, so a
  journal replay reproduces them. Sinks are flushed `flush_interval_s` after something was
  written to them (or at once on `request_flush()`), not on a timer. Idle, with no deadline and
  nothing written, the core thread sleeps until an event comes: it costs nothing.
* **Source health.** Each source runs under a supervisor: `SourceStateChanged(up=True)` when it
  starts (a source with `reports_up = True`, whose start can still fail after its probe, is
  reported `up=False, reason="starting: ..."` and says `up=True` itself once it works: the eBPF
  source after its programs are loaded and attached); an exception is logged, reported as `SourceStateChanged(up=False, reason, hint)` and
  the source is restarted with exponential backoff (`retry_initial_s` .. `retry_max_s`). A source
  whose `probe()` says it cannot run is reported once (up=False, reason + hint) and not started.
* **Ordered start-up / teardown** (Falco `app.cpp`): start = unavailable sources reported, core
  thread, then sources in the given order (each begins with its own inventory/dump). stop = signal sources,
  join them, drain the queue, release everything the merge holds, final advance, publish the
  last snapshot, flush and close sinks; bounded by `stop_timeout_s` (2 s) in total.
* **Batched sinks.** The events and findings of one batch of the core thread go to each sink as
  one list (`write_batch(items)`, for sinks that have it; `write(item)` each for the others),
  not one call per sink and event; then the core thread calls `end_batch()` on the sinks that
  have one (the journal writes the batch's lines in one system call there).

Typical use (service mode, `vfiowatch run`):

```python
from diag.runtime import Pipeline, PipelineOptions, build_sources
sources, unavailable = build_sources(SourceContext(paths=HostPaths.at(root)))
pipe = Pipeline(sources, sinks=[journal, logs, metrics], unavailable=unavailable)
pipe.start()
stop_event.wait()          # SIGTERM
pipe.stop()                # drains + flushes, <= 2 s
```

and for the dashboard: `feed = pipe.live_feed()` (a `SnapshotFeed`), `feed.subscribe(cb)`,
`feed.start()` ... `feed.stop()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from diag import events as ev
from diag.common.errors import DiagError
from diag.common.faults import NO_FAULTS, Faults, InjectedFault
from diag.core.correlator import Correlator
from diag.core.state import HostState, SnapshotListener
from diag.core.thresholds import CoreConfig
from diag.runtime.merge import WatermarkMerge
from diag.sinks import Sink
from diag.sources import SOURCES, Availability, Source, SourceContext
from diag.sources.watermark import Watermark

log = logging.getLogger("vfiowatch.runtime")

STARTING = "starting:"
"""How the reason of a source that is not up yet, but on its way, begins."""
SINK_BATCH = 4096
"""Events the core thread feeds before the sinks take them (as one list) and end a batch."""
RUNTIME_SOURCE = "runtime"
"""`source` of the events the pipeline itself produces (queue loss, unavailable sources, ticks)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PipelineOptions:
    """Tunables of the runtime; the defaults suit a production host."""

    queue_size: int = 131_072
    """Events waiting between sources and the core; beyond this, events are dropped, counted
    and resynced. A 50,000-uevent burst peaks near 10,000 here; full, it is about 30 MB."""
    merge_window_ns: int = 75_000_000
    """How long the events of a source that reports no watermark may take to arrive: such a
    source is assumed complete up to this long ago (the built-in sources report theirs)."""
    max_lateness_ns: int = 500_000_000
    """The longest an event waits for a source whose watermark stalls (a source busy that long);
    it is then released, and counted against that source in `stats.stalled`."""
    tick_interval_s: float = 0.5
    """While a rule's deadline is pending, the core advances time with no event at least this
    often (besides at the deadline itself); with none pending it does not wake for time."""
    snapshot_interval_s: float = 0.15
    """At most this often a new HostState is taken and published (LiveFeed, Sink.snapshot)."""
    flush_interval_s: float = 1.0
    """Sinks are flushed this long after the first write since their last flush (and again
    this long after a flush while a sink's `wants_flush()` says so: a journal retrying)."""
    retry_initial_s: float = 1.0
    """First delay before restarting a crashed source; doubles up to retry_max_s."""
    retry_max_s: float = 30.0
    stop_timeout_s: float = 2.0
    """Budget for the whole of stop(): join sources, drain, flush, close."""
    faults: Faults = NO_FAULTS
    """`crash_source`: that source's thread raises once, `crash_after_s` into its first run
    (tests; diag.common.faults)."""


@dataclass(slots=True)
class SourceStats:
    """Counters of one supervised source."""

    name: str
    restarts: int = 0
    up: bool = False
    last_error: str = ""


@dataclass(slots=True)
class PipelineStats:
    """Runtime counters (read them from any thread; they are plain ints)."""

    received: int = 0
    """Events accepted into the queue."""
    dropped: int = 0
    """Events dropped because the queue was full (reported in-band as EventsLost)."""
    released: int = 0
    """Events fed to the core."""
    late: int = 0
    """Events older than one already released (fed out of order, at once)."""
    stalled: int = 0
    """Events released after `max_lateness_ns` although a source's watermark had not passed
    them (per source: `merge_stats.stalled`)."""
    findings: int = 0
    snapshots: int = 0
    sink_errors: int = 0
    core_errors: int = 0
    """Events the Correlator raised on (logged, the first ten with a traceback; then skipped)."""
    max_queue_depth: int = 0
    max_merge_depth: int = 0
    sources: dict[str, SourceStats] = field(default_factory=dict)


def _wants(fn: Callable[[], bool]) -> bool:
    """A sink's `wants_flush()`; one that raises is flushed again rather than stopping the core."""
    try:
        return bool(fn())
    except Exception:
        log.exception("sink's wants_flush failed")
        return True


def build_sources(
    ctx: SourceContext, names: Iterable[str] | None = None
) -> tuple[list[Source], list[tuple[str, Availability]]]:
    """Instantiate the registered sources (all, or `names` in that order) and probe each.

    Returns (runnable sources, [(name, Availability) for each that cannot run here]). The
    second list goes to `Pipeline(unavailable=...)`, which reports each once, in-band; with
    every source asked for, a source module that failed to import is in it (named by module).

    Options: when `ctx.options` is a table of tables keyed by source names (the
    `[sources.<name>]` tables of the configuration file), each source gets its own table (or
    none); otherwise `ctx.options` is handed to every source as it is. Raises KeyError for a name that is not registered,
    and lets a source's ConfigError (an unknown or bad option) through: that is the user's to
    fix, not a source to skip. With `names` all registered already, the other source modules
    are not imported.
    """
    # Named sources already registered (their modules imported by the caller): the other
    # source modules are not imported (the dashboard starts one source before the others).
    registry = SOURCES if names is not None and all(n in SOURCES for n in names) else SOURCES.load()
    wanted = list(names) if names is not None else list(registry)
    runnable: list[Source] = []
    unavailable: list[tuple[str, Availability]] = []
    if names is None:  # every source: those whose module cannot be imported are reported too
        unavailable.extend(unloadable_sources())
    opts = ctx.options
    per_source = bool(opts) and any(k in registry for k in opts) and all(
        isinstance(v, Mapping) for v in opts.values())
    for name in wanted:
        if name not in registry:
            raise KeyError(f"unknown source {name!r}; known: {', '.join(registry)}")
        sctx = replace(ctx, options=opts.get(name, {})) if per_source else ctx
        sctx = replace(sctx, paths=ctx.paths.fresh())  # each source reports its own refusals
        try:
            src = registry[name](sctx)
            avail = src.probe()
        except DiagError:
            raise
        except Exception as exc:  # a broken source must not stop the others
            log.exception("source %s failed to initialise", name)
            unavailable.append((name, Availability(False, reason=f"failed to initialise: {exc}")))
            continue
        if avail.ok:
            runnable.append(src)
        else:
            unavailable.append((name, avail))
    return runnable, unavailable


def unloadable_sources() -> list[tuple[str, Availability]]:
    """(module, Availability) for each source module that could not be imported (after
    `SOURCES.load()`), for `Pipeline(unavailable=...)`."""
    return [(f.module, Availability(False, reason=f.text(),
                                    hint="reinstall vfiowatch; `vfiowatch check` lists it"))
            for f in SOURCES.failures]


class _Queue:
    """The bounded multi-producer single-consumer queue between sources and the core.

    A deque append is atomic under the GIL, so `put` takes no lock. The bound is checked
    without a lock, so it may be exceeded by at most one event per producer thread. `put` is a
    closure over locals: it runs once per event on every source thread.
    """

    __slots__ = ("_dq", "_wake", "dropped", "kicks", "put", "size")

    def __init__(self, size: int) -> None:
        self._dq: deque[ev.Event] = deque()
        self._wake = threading.Event()
        self.size = size
        self.dropped = 0
        self.kicks = 0
        """Wake-ups that are not events (a source's watermark moved, stop): counted, so the
        core thread never sleeps through one that came while it was busy."""
        self.put: Callable[[ev.Event], None] = self._make_put()

    def _make_put(self) -> Callable[[ev.Event], None]:
        dq, wake = self._dq, self._wake
        append, is_set, set_ = dq.append, wake.is_set, wake.set
        size = self.size

        def put(event: ev.Event) -> None:
            if len(dq) >= size:
                self.dropped += 1  # only the producers of one full queue race here
                return
            append(event)
            if not is_set():
                set_()

        return put

    def drain(self, limit: int = 8192) -> list[ev.Event]:
        pop = self._dq.popleft
        return [pop() for _ in range(min(limit, len(self._dq)))]

    def depth(self) -> int:
        return len(self._dq)

    def wait(self, timeout: float | None, kicks: int = -1) -> None:
        """Sleep until an event or a kick comes, or `timeout` (None: no timeout); `kicks`: the
        count the caller saw before it last looked (a kick since then returns at once)."""
        if self._dq or self.kicks != kicks >= 0:
            return
        self._wake.clear()
        if self._dq or self.kicks != kicks >= 0:  # slipped in between the check and the clear
            return
        self._wake.wait(timeout)

    def kick(self) -> None:
        self.kicks += 1
        self._wake.set()


class LiveFeed:
    """A `SnapshotFeed` over a running Pipeline: the newest HostState, at most every ~150 ms.

    Listeners run on the feed's own publisher thread, never on the core thread, so a slow
    listener delays only the next snapshot it sees: a newer snapshot replaces a stale one that
    has not been delivered yet (it is never queued). `start()`/`stop()` start and stop the
    pipeline (a dashboard owns its pipeline); use `pipeline.live_feed()` to get one.
    """

    def __init__(self, pipeline: Pipeline, *, owns_pipeline: bool = True) -> None:
        self._pipeline = pipeline
        self._owns = owns_pipeline
        self._listeners: list[SnapshotListener] = []
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._pending: HostState | None = None
        self._latest: HostState | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.delivered = 0
        self.replaced = 0
        """Snapshots that a newer one replaced before delivery (slow listeners)."""

    def subscribe(self, listener: SnapshotListener) -> None:
        """Call `listener(state)` with each new snapshot, on the publisher thread."""
        with self._lock:
            self._listeners.append(listener)
            latest = self._latest
        if latest is not None and self._thread is not None:
            self.publish(latest)

    @property
    def latest(self) -> HostState | None:
        """The newest snapshot published so far (None before the first)."""
        return self._latest

    def publish(self, state: HostState) -> None:
        """Hand over a new snapshot (called by the core thread); never blocks on listeners."""
        with self._cond:
            if self._pending is not None:
                self.replaced += 1
            self._pending = state
            self._latest = state
            self._cond.notify()

    def start(self) -> None:
        """Start the publisher thread and (when it owns it) the pipeline."""
        if self._thread is None:
            self._stopping = False
            self._thread = threading.Thread(target=self._loop, name="vfiowatch-feed", daemon=True)
            self._thread.start()
        self._pipeline._attach_feed(self)
        if self._owns:
            self._pipeline.start()

    def stop(self) -> None:
        """Stop the pipeline (when it owns it), deliver the final snapshot, stop the thread."""
        if self._owns:
            self._pipeline.stop()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=1.0)
            self._thread = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stopping:
                    self._cond.wait()
                state, self._pending = self._pending, None
                listeners = list(self._listeners)
                stopping = self._stopping
            if state is not None:
                for fn in listeners:
                    try:
                        fn(state)
                    except Exception:
                        log.exception("snapshot listener %r failed", fn)
                self.delivered += 1
            if stopping and state is None:
                return


class Pipeline:
    """Runs sources, merges their events in time order, feeds the core, fans out to sinks.

    Thread-safety: `start`, `stop`, `emit`, `stats`, `state()` may be called from any thread;
    sinks are only ever called from the core thread. The pipeline can be started once.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        *,
        sinks: Sequence[Sink] = (),
        correlator: Correlator | None = None,
        config: CoreConfig | None = None,
        options: PipelineOptions | None = None,
        unavailable: Sequence[tuple[str, Availability]] = (),
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        """`sources`: started in this order. `sinks`: receive every event and finding in time
        order, plus snapshots. `correlator` (or one built from `config`): the pure core.
        `unavailable`: sources `build_sources` could not run, reported in-band at start.
        `clock_ns`: the wall clock (tests may inject one)."""
        self.sources = list(sources)
        self.sinks = list(sinks)
        self.correlator = correlator or Correlator(config)
        self.options = options or PipelineOptions()
        self.unavailable = list(unavailable)
        self._clock = clock_ns
        self._queue = _Queue(self.options.queue_size)
        self._stop_sources = threading.Event()
        self._stop_core = threading.Event()
        self._source_threads: list[threading.Thread] = []
        self._core_thread: threading.Thread | None = None
        self._feeds: list[LiveFeed] = []
        self._listeners: list[Callable[[ev.Event], None]] = []
        self._merge = WatermarkMerge(unmarked_lateness_ns=self.options.merge_window_ns,
                                     max_lateness_ns=self.options.max_lateness_ns)
        self.merge_stats = self._merge.stats
        for src in self.sources:
            self._merge_source(src)
        self._batch_ends: list[Any] = []
        self._reported_dropped = 0
        self._dirty = True
        self._written = False
        """Items went to the sinks since their last flush."""
        self._flush_asked = False
        """`request_flush()`: flush at the next round."""
        self._progress_at = 0.0
        """Monotonic time the core thread last started a round or ended a batch; 0.0 while it
        sleeps waiting for work (`core_stalled_s`)."""
        self._shown_devices = False
        """The newest snapshot published holds devices (until then one with them goes out at once)."""
        self._started = False
        self._stopped = False
        self._lifecycle = threading.Lock()
        """Orders `add_sources` against `start` and `stop`."""
        self._drain_deadline = float("inf")
        self._state_lock = threading.Lock()
        self._latest_state: HostState | None = None
        self.stats = PipelineStats()
        for src in self.sources:
            self.stats.sources[src.name] = SourceStats(src.name)

    # ---- public API ---------------------------------------------------------------------------

    def emit(self, event: ev.Event) -> None:
        """Put an event into the bounded queue (what sources call; also usable by importers or
        tests to inject events). Never blocks; drops and counts when the queue is full."""
        self._queue.put(event)

    def add_sink(self, sink: Sink) -> None:
        """Add a sink before `start()`."""
        if self._started:
            raise RuntimeError("add sinks before start()")
        self.sinks.append(sink)

    def on_item(self, listener: Callable[[ev.Event], None]) -> None:
        """Call `listener(item)` on the core thread for every event and finding released, in
        order (after the sinks). Register before `start()`; keep it cheap and non-blocking."""
        self._listeners.append(listener)

    def live_feed(self, *, owns_pipeline: bool = True) -> LiveFeed:
        """A SnapshotFeed for the dashboard. With owns_pipeline, feed.start()/stop() start and
        stop this pipeline; otherwise the caller runs the pipeline itself."""
        feed = LiveFeed(self, owns_pipeline=owns_pipeline)
        self._attach_feed(feed)
        return feed

    def state(self) -> HostState | None:
        """The newest published snapshot (None before the first)."""
        with self._state_lock:
            return self._latest_state

    def start(self) -> None:
        """Ordered start-up: core thread, then sources in order. Idempotent."""
        with self._lifecycle:
            if self._started:
                return
            self._started = True
            self._report_unavailable(self.unavailable)
            self._core_thread = threading.Thread(target=self._core_loop, name="vfiowatch-core",
                                                 daemon=True)
            self._core_thread.start()
            for src in self.sources:
                self._start_source(src)

    def add_sources(self, sources: Sequence[Source],
                    unavailable: Sequence[tuple[str, Availability]] = ()) -> None:
        """Add sources (and report those that cannot run) before or after `start()`; on a
        running pipeline they start at once. The dashboard starts the sources its first frame
        does not need (and bcc's import and compile) after that frame. Nothing once stopped."""
        with self._lifecycle:
            if self._stopped:
                return
            taken = {s.name for s in self.sources}
            for src in sources:
                if src.name in taken:
                    raise ValueError(f"source {src.name!r} added twice")
                taken.add(src.name)
            # Replaced, not extended: the core thread iterates them (`_pull`).
            self.sources = [*self.sources, *sources]
            self.unavailable = [*self.unavailable, *unavailable]
            for src in sources:
                self.stats.sources = {**self.stats.sources, src.name: SourceStats(src.name)}
                self._merge_source(src)
            if self._started:
                self._report_unavailable(unavailable)
                for src in sources:
                    self._start_source(src)

    def _merge_source(self, src: Source) -> None:
        wm = getattr(src, "watermark", None)
        if isinstance(wm, Watermark):
            wm.kick = self._kick_if_holding
            self._merge.add_source(src.name, wm)
        else:
            self._merge.add_source(src.name, None)

    def _report_unavailable(self, unavailable: Sequence[tuple[str, Availability]]) -> None:
        now = self._clock()
        for name, avail in unavailable:
            self.emit(
                ev.SourceStateChanged(
                    ts_ns=now, source=RUNTIME_SOURCE, name=name, up=False, mode=avail.mode,
                    reason=avail.reason or "unavailable", hint=avail.hint,
                )
            )

    def _start_source(self, src: Source) -> None:
        t = threading.Thread(
            target=self._supervise, args=(src,), name=f"vfiowatch-src-{src.name}", daemon=True
        )
        self._source_threads.append(t)
        t.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ordered teardown within `timeout` (default options.stop_timeout_s): stop and join
        sources, drain the queue, release the merge window, flush and close sinks. Idempotent."""
        with self._lifecycle:
            if not self._started or self._stopped:
                return
            self._stopped = True
        budget = self.options.stop_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + budget
        self._stop_sources.set()
        for t in self._source_threads:
            # Sources get 60% of the budget; the drain and flush need the rest.
            t.join(max(0.0, deadline - time.monotonic() - 0.4 * budget))
            if t.is_alive():
                log.warning("source thread %s did not stop in time", t.name)
        self._drain_deadline = deadline - 0.1
        self._stop_core.set()
        self._queue.kick()
        if self._core_thread is not None:
            self._core_thread.join(max(0.05, deadline - time.monotonic()))
            if self._core_thread.is_alive():
                log.warning("core thread did not finish draining in time")

    def request_flush(self) -> None:
        """Flush the sinks at once, on the core thread (a journal's reopen after SIGHUP): an
        idle core thread flushes nothing by itself."""
        self._flush_asked = True
        self._queue.kick()

    def core_stalled_s(self) -> float | None:
        """How long the core thread has been working without finishing a round or a batch of
        the sinks (0.0 while it sleeps waiting for events); None when it is not running. What
        /healthz and the watchdog judge: an idle core thread does not wake to prove it lives."""
        t = self._core_thread
        if t is None or not t.is_alive():
            return None
        at = self._progress_at
        return max(0.0, time.monotonic() - at) if at else 0.0

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Block until the queue and merge window are empty (tests, benchmarks). True if idle."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._queue.depth() == 0 and not self._merge:
                return True
            time.sleep(0.01)
        return False

    @property
    def running(self) -> bool:
        return self._started and not self._stopped

    # ---- internals ----------------------------------------------------------------------------

    def _attach_feed(self, feed: LiveFeed) -> None:
        if feed not in self._feeds:
            self._feeds.append(feed)
            self._dirty = True

    def _supervise(self, src: Source) -> None:
        st = self.stats.sources[src.name]
        delay = self.options.retry_initial_s
        try:
            avail = src.probe()
        except Exception as exc:
            avail = Availability(True, reason=f"probe failed: {exc}")
        mode = avail.mode

        emit = self._queue.put  # per-source event counts are the core's (HostState.sources)
        wm = getattr(src, "watermark", None)
        if not isinstance(wm, Watermark):
            wm = None
        merge = self._merge

        # A source whose start-up can fail after the probe (the eBPF source compiles and
        # attaches) reports itself up once it works: until then it is "starting", not up.
        self_reported = bool(getattr(src, "reports_up", False))
        while not self._stop_sources.is_set():
            st.up = True
            # Running from here: the source's next stamps (this thread's first) come later.
            if wm is not None:
                wm.working()
            merge.set_running(src.name, True)
            # Up (or starting), with the probe's note when it has one (a degraded mode, its fix).
            self.emit(ev.SourceStateChanged(
                ts_ns=self._clock(), source=RUNTIME_SOURCE, name=src.name,
                up=not self_reported, mode=mode,
                reason=avail.reason if not self_reported or avail.reason.startswith(STARTING)
                else f"{STARTING} {avail.reason}".rstrip(),
                hint=avail.hint))
            started = time.monotonic()
            try:
                if self.options.faults.crash_source == src.name and not st.restarts:
                    self._run_then_crash(src, emit)  # raises, unless stopped first
                else:
                    src.run(emit, self._stop_sources)
                if self._stop_sources.is_set():
                    break
                reason, hint = "the source returned unexpectedly", "it is restarted with backoff"
            except Exception as exc:
                log.exception("source %s crashed", src.name)
                reason = f"crashed: {type(exc).__name__}: {exc}"
                hint = "see the agent's log for the traceback; the source is restarted with backoff"
                st.last_error = reason
            st.up = False
            st.restarts += 1
            if time.monotonic() - started > 60:
                delay = self.options.retry_initial_s  # it ran a good while: start backoff afresh
            self.emit(ev.SourceStateChanged(
                ts_ns=self._clock(), source=RUNTIME_SOURCE, name=src.name, up=False, mode=mode,
                reason=reason, hint=f"{hint} (next try in {delay:g} s)",
            ))
            # Down: a source that is not running holds nothing back (it emits nothing).
            merge.set_running(src.name, False)
            self._queue.kick()
            if self._stop_sources.wait(delay):
                break
            delay = min(delay * 2, self.options.retry_max_s)
        st.up = False
        self.emit(ev.SourceStateChanged(ts_ns=self._clock(), source=RUNTIME_SOURCE,
                                        name=src.name, up=False, mode=mode, reason="stopped"))
        merge.set_running(src.name, False)
        self._queue.kick()

    def _kick_if_holding(self) -> None:
        """A source's watermark moved (it waits for input): wake the core thread only if the
        merge holds events the move may release. Idle, sources wake often (the Kata log poll,
        eBPF records of other files) and the core thread sleeps on. No race: the core thread
        puts what it takes in the merge, then reads the watermarks again before it sleeps; a
        source sets its watermark, then looks here: one of the two sees the other."""
        if self._merge.store:
            self._queue.kick()

    def _run_then_crash(self, src: Source, emit: Callable[[ev.Event], None]) -> None:
        """`[faults] crash_source`: run the source with a stop of its own, set `crash_after_s`
        in (or at the real stop), then raise as a crashing source would."""
        after = self.options.faults.crash_after_s
        stop = threading.Event()

        def trip() -> None:
            self._stop_sources.wait(after)
            stop.set()

        threading.Thread(target=trip, name="vfiowatch-fault", daemon=True).start()
        src.run(emit, stop)
        if not self._stop_sources.is_set():
            raise InjectedFault(f"injected crash {after:g} s in ([faults] crash_source)")

    def _core_loop(self) -> None:
        opts = self.options
        merge = self._merge
        self._batch_ends = [fn for sink in self.sinks
                            if callable(fn := getattr(sink, "end_batch", None))]
        next_tick = next_snap = time.monotonic()
        flush_at: float | None = None
        next_due = self.correlator.next_due_ns
        wanting = [fn for sink in self.sinks if callable(fn := getattr(sink, "wants_flush", None))]
        try:
            while True:
                self._progress_at = time.monotonic()
                stopping = self._stop_core.is_set()
                kicks = self._queue.kicks
                # The clock, then the watermarks, then the queue: a watermark read after the
                # drain could promise what the drained batch does not hold.
                now_ns = self._clock()
                low = merge.watermark(now_ns)
                self._pull()
                self._release(now_ns, None if stopping else low)
                mono = time.monotonic()
                if stopping:
                    # A source that ignored stop may still be emitting: drain only until the
                    # budget runs out, so sinks are always flushed and closed in time.
                    if self._queue.depth() == 0 or mono > self._drain_deadline:
                        break
                    continue
                # Time alone moves the core only while a rule has a deadline: at the deadline
                # (once the watermark passed it) and at least every tick interval.
                due = next_due()
                if due is not None:
                    complete = self._complete_ns(now_ns)
                    if mono >= next_tick or (due and complete >= due):
                        self._advance(complete)
                        next_tick = mono + opts.tick_interval_s
                        due = next_due()
                if self._dirty and (mono >= next_snap or (not self._shown_devices
                                                           and self.correlator.model.devices)):
                    # At most one snapshot per interval, but the first with the inventory at
                    # once: a dashboard opens on its devices, not on the sources' start alone.
                    self._publish()
                    next_snap = mono + opts.snapshot_interval_s
                # Flush a flush interval after the first write since the last flush, or at once
                # when asked; a sink that still has business (a journal retrying) asks again.
                if self._flush_asked:
                    flush_at = mono
                elif self._written and flush_at is None:
                    flush_at = mono + opts.flush_interval_s
                if flush_at is not None and mono >= flush_at:
                    self._written = self._flush_asked = False
                    self._flush()
                    flush_at = None
                    if any(_wants(fn) for fn in wanting):
                        flush_at = mono + opts.flush_interval_s
                # Sleep until an event or a watermark moves, time alone lets the oldest held
                # event go, or the next timer: with none, until an event comes.
                wait = float("inf")
                if due is not None:
                    wait = next_tick - mono
                    ahead = (due - self._complete_ns(now_ns)) / 1e9 if due else 0.0
                    if ahead > 0:  # a deadline the advance left behind waits for the interval
                        wait = min(wait, max(0.001, ahead))
                if flush_at is not None:
                    wait = min(wait, flush_at - mono)
                if self._dirty:
                    wait = min(wait, next_snap - mono)
                now_ns = self._clock()
                oldest = merge.store.oldest_ns()
                if oldest is not None and oldest <= merge.watermark(now_ns)[0]:
                    # A watermark moved while this batch was taken in: a source that started
                    # waiting before it saw anything held did not kick (_kick_if_holding).
                    continue
                held = merge.due_in_ns(now_ns)
                if held is not None:
                    wait = min(wait, held / 1e9)
                self._progress_at = 0.0
                self._queue.wait(None if wait == float("inf") else max(0.0002, wait), kicks)
            self._advance(self._complete_ns(self._clock()))
            self._publish()
        except Exception:
            log.exception("core thread crashed")
        finally:
            self._flush()
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    log.exception("sink %s failed to close", getattr(sink, "name", sink))

    def _pull(self) -> None:
        while True:
            batch = self._queue.drain()
            if not batch:
                break
            self.stats.received += len(batch)
            depth = self._queue.depth() + len(batch)
            if depth > self.stats.max_queue_depth:
                self.stats.max_queue_depth = depth
            self._merge.push_all(batch)
            held = len(self._merge)
            if held > self.stats.max_merge_depth:
                self.stats.max_merge_depth = held
        dropped = self._queue.dropped
        if dropped > self._reported_dropped:
            n = dropped - self._reported_dropped
            self._reported_dropped = dropped
            self.stats.dropped = dropped
            now = self._clock()
            self._merge.push(ev.EventsLost(
                ts_ns=now, source=RUNTIME_SOURCE, lost_source="queue", count=n,
                reason=f"the runtime queue was full ({self.options.queue_size} events)",
            ))
            for src in self.sources:
                req = getattr(src, "request_resync", None)
                if callable(req):
                    req("queue overflow")

    def _complete_ns(self, now_ns: int) -> int:
        """Up to when the stream is complete: the watermark (or the lateness bound)."""
        return min(now_ns, max(self._merge.low_ns, now_ns - self.options.max_lateness_ns))

    def _release(self, now_ns: int, low: tuple[int, str | None] | None) -> None:
        """Feed the core what the watermark `low` passed (all that is held when None); the sinks
        get the events and findings, in order, a list of at most SINK_BATCH events at a time."""
        # The per-event hot path of the core thread: locals only, nothing per event beyond the
        # feed (the sinks' list is the released list itself, with findings put in after).
        stats = self.stats
        feed = self.correlator.feed
        merge = self._merge
        released = merge.take(now_ns, low) if low is not None else merge.take_all()
        for at in range(0, len(released), SINK_BATCH):
            # Bounded batches: a journal part that rotates after one opens with the core's
            # state at most SINK_BATCH events ahead of its first records.
            chunk = released[at:at + SINK_BATCH] if len(released) > SINK_BATCH else released
            found: list[tuple[int, list[ev.Finding]]] = []
            for i, e in enumerate(chunk):
                try:
                    findings = feed(e)
                except Exception:
                    # A bug in one rule must not stop the agent: the event still reaches the sinks.
                    stats.core_errors += 1
                    if stats.core_errors <= 10:
                        log.exception("the core failed on %s", e.kind)
                    continue
                if findings:
                    found.append((i, findings))
            items: list[ev.Event] = chunk
            nf = 0
            if found:
                items = []
                prev = 0
                for i, findings in found:
                    items += chunk[prev:i + 1]
                    items += findings
                    nf += len(findings)
                    prev = i + 1
                items += chunk[prev:]
            self._end_batch(items, len(chunk), nf)

    def _end_batch(self, items: list[ev.Event], n: int, nf: int) -> None:
        """The sinks take one batch (`n` events and their `nf` findings): the items, then
        `end_batch()`."""
        stats = self.stats
        stats.findings += nf
        stats.released += n
        stats.late = self._merge.stats.late
        stats.stalled = self._merge.stats.stalled_total
        self._dirty = True
        self._progress_at = time.monotonic()
        self._out_all(items)
        for end_batch in self._batch_ends:
            try:
                end_batch()
            except Exception:
                stats.sink_errors += 1
                log.exception("sink %r failed to end a batch", end_batch)

    def _advance(self, now_ns: int) -> None:
        findings = self.correlator.advance(now_ns)
        if findings:
            self._dirty = True
            self.stats.findings += len(findings)
            self._out_all([ev.ClockTicked(ts_ns=now_ns, source=RUNTIME_SOURCE), *findings])

    def _out_all(self, items: list[ev.Event]) -> None:
        """Hand `items` (in order) to every sink: the whole list to a sink with `write_batch`
        (one call a batch, not one a sink and event), item by item to the others; then to the
        item listeners. A sink that fails is logged and counted, the others still get them."""
        self._written = True
        for sink in self.sinks:
            batch = getattr(sink, "write_batch", None)
            if batch is not None:
                try:
                    batch(items)
                except Exception:
                    self.stats.sink_errors += 1
                    log.exception("sink %s failed on a batch of %d", getattr(sink, "name", sink),
                                  len(items))
                continue
            for item in items:
                try:
                    sink.write(item)
                except Exception:
                    self.stats.sink_errors += 1
                    log.exception("sink %s failed on %s", getattr(sink, "name", sink), item.kind)
        for fn in self._listeners:
            for item in items:
                try:
                    fn(item)
                except Exception:
                    log.exception("item listener %r failed", fn)

    def _publish(self) -> None:
        state = self.correlator.snapshot()
        self._dirty = False
        self._shown_devices = bool(state.devices)
        self.stats.snapshots += 1
        with self._state_lock:
            self._latest_state = state
        for sink in self.sinks:
            fn: Any = getattr(sink, "snapshot", None)
            if fn is None:
                continue
            try:
                fn(state)
            except Exception:
                self.stats.sink_errors += 1
                log.exception("sink %s failed on snapshot", getattr(sink, "name", sink))
        for feed in self._feeds:
            feed.publish(state)

    def _flush(self) -> None:
        for sink in self.sinks:
            try:
                sink.flush()
            except Exception:
                self.stats.sink_errors += 1
                log.exception("sink %s failed to flush", getattr(sink, "name", sink))
