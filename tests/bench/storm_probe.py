"""Benchmark helper, run in a fresh interpreter: the whole agent under a storm of events.

`python storm_probe.py MODE N [RATE]` prints one JSON object.

The events are the `typical` mix of pm_replay_probe (per 240: one Kata-style VF round trip of
12 events, 228 veth link changes in 40 pod namespaces), built in memory before the clock starts,
1 ms apart. They enter the agent the way a source's do: a source thread calls `emit` (the
runtime's bounded queue), so the runtime's threads, merge, core and the default sinks of
`vfiowatch run` (journal and metrics on, raw-event logging off; logs of findings to /dev/null)
do everything they do live. The runtime's clock is the stream's (`VirtualClock`: the stamp of
the last event emitted), so its own events, merge and timer ticks fall where they would have
live, and the core sees the same stream, with the same findings, as in `core` mode. MODE:

* `core`: the Correlator alone on the same events (the floor the agent is compared with).
* `agent`: as fast as the agent takes them: the source emits while fewer than `BACKLOG` of
  its events wait in the runtime (a source faster than the agent, without loss), until all N
  are written to the journal. Figures: events/s by wall clock, and per CPU second of the
  process minus the source thread's own CPU time (the agent's share), counted once the
  journal's rotated parts are compressed (that thread's work is the agent's too); `threads`:
  CPU seconds of each thread.
* `paced`: offered at RATE events/s (1 ms ticks): whether anything is dropped at the default
  queue size, and the rate reached. A RATE beyond what the agent takes fills the queue: then
  `dropped` (the runtime's count) and `reported_lost` (what the core was told in-band, as
  EventsLost of the queue) say how many were lost.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, ClassVar

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pm_replay_probe

BACKLOG = 20_000


def build(n: int) -> list[Any]:
    return [pm_replay_probe.inventory(), *pm_replay_probe.events(n, "typical")]


class VirtualClock:
    """The stream's time: the stamp of the newest event emitted (the runtime reads it as its
    wall clock); once the storm is over (`end`), it runs on in real time."""

    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns
        self.ended: int | None = None

    def end(self) -> None:
        self.now_ns += 10**9  # the next event after the storm would come a second later
        self.ended = time.monotonic_ns()

    def __call__(self) -> int:
        if self.ended is not None:
            return self.now_ns + time.monotonic_ns() - self.ended
        return self.now_ns


class StormSource:
    """A source that emits prebuilt events (what a source's decode produced) as fast as the
    queue takes them (`rate` None) or at `rate` events/s."""

    name: ClassVar[str] = "storm"

    def __init__(self, events: list[Any], rate: float | None, clock: VirtualClock) -> None:
        self.events = events
        self.clock = clock
        self.released: Any = lambda: 0
        """Events the core has taken so far (set once the pipeline exists)."""
        self.rate = rate
        self.cpu = 0.0
        self.started = 0.0
        self.done = threading.Event()
        self.watermark: Any = None
        try:  # the runtime's watermark protocol, when this checkout has it
            from diag.sources.watermark import Watermark

            self.watermark = Watermark(clock_ns=clock)
        except ImportError:
            pass

    def probe(self) -> Any:
        from diag.sources import Availability

        return Availability(True)

    def run(self, emit: Any, stop: threading.Event) -> None:
        c0 = time.thread_time()
        self.started = time.perf_counter()
        wm = self.watermark
        clock = self.clock
        events = self.events
        n = len(events)
        i = 0
        chunk = 1000
        if self.rate is None:
            while i < n and not stop.is_set():
                if i - self.released() > BACKLOG:
                    time.sleep(0.0005)
                    continue
                for e in events[i:i + chunk]:
                    emit(e)
                i += chunk
                last = events[min(i, n) - 1].ts_ns
                clock.now_ns = last + 1
                if wm is not None:
                    wm.emitted(last)
        else:
            per_tick = self.rate / 1000
            start = time.perf_counter()
            sent = 0.0
            while i < n and not stop.is_set():
                due = int((time.perf_counter() - start) * 1000 * per_tick) - int(sent)
                if due <= 0:
                    time.sleep(0.0005)
                    continue
                for e in events[i:i + due]:
                    emit(e)
                i += due
                sent += due
                last = events[min(i, n) - 1].ts_ns
                clock.now_ns = last + 1
                if wm is not None:
                    wm.emitted(last)
        self.cpu = time.thread_time() - c0
        clock.end()
        self.done.set()
        if wm is not None:
            wm.waiting()
        stop.wait()


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (/proc/self/task)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as fh:
                f = fh.read().rpartition(")")[2].split()
        except (OSError, TypeError):
            continue
        name = t.name.removeprefix("vfiowatch-")
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tick
    return out


def run_core(events: list[Any]) -> dict[str, Any]:
    from diag.core.correlator import Correlator

    c = Correlator()
    gc.freeze()
    t, w = time.process_time(), time.perf_counter()
    findings = 0
    for e in events:
        findings += len(c.feed(e))
    return {"events": len(events), "cpu_s": time.process_time() - t,
            "wall_s": time.perf_counter() - w, "findings": findings}


def run_agent(events: list[Any], rate: float | None) -> dict[str, Any]:
    from diag.core.correlator import Correlator
    from diag.runtime import Pipeline, PipelineOptions
    from diag.sinks.journal import JournalSink
    from diag.sinks.logs import LogSink
    from diag.sinks.metrics import MetricsSink

    tmp = tempfile.mkdtemp(prefix="vfiowatch-storm-")
    core = Correlator()
    # What `vfiowatch run` composes (diag's run command): journal with its defaults, the log
    # sink without raw-event logging, metrics fed by the journal's stats.
    journal = JournalSink(os.path.join(tmp, "journal.jsonl"), state=core.snapshot, batch=True)
    devnull = open(os.devnull, "w")  # noqa: SIM115 - closed below
    logs = LogSink(stream=devnull, log_events=False)
    metrics = MetricsSink(journal=journal.stats)
    clock = VirtualClock(events[0].ts_ns)
    src = StormSource(events, rate, clock)
    pipe = Pipeline([src], sinks=[journal, logs, metrics], correlator=core,
                    options=PipelineOptions(), clock_ns=clock)
    src.released = lambda: pipe.stats.released
    gc.freeze()
    r0 = os.times()
    pipe.start()
    src.done.wait()
    want = len(events)
    pipe.wait_idle(600)  # queue and merge empty ...
    while pipe.stats.released < pipe.stats.received:  # ... and the last batch fed and written
        time.sleep(0.001)
    wall = time.perf_counter() - src.started
    # The rotated parts are gzipped on the journal's own thread: their CPU is the agent's too,
    # so it is counted once every part written so far is compressed.
    end = time.monotonic() + 120
    while time.monotonic() < end and any(re.fullmatch(r"journal\.jsonl\.\d{6}", p.name)
                                         for p in Path(tmp).iterdir()):
        time.sleep(0.005)
    r1 = os.times()
    cpu = (r1.user - r0.user) + (r1.system - r0.system)
    out = {"events": want, "wall_s": wall, "cpu_s": cpu, "source_cpu_s": src.cpu,
           "dropped": pipe.stats.dropped, "released": pipe.stats.released,
           "findings": pipe.stats.findings, "max_queue_depth": pipe.stats.max_queue_depth,
           "rss_mb": _rss_mb(), "rate": rate}
    late = getattr(pipe.stats, "late", 0)
    out["late"] = late
    out["threads"] = _thread_cpu()
    pipe.stop(10)
    # What the core was told in-band (EventsLost of the queue; the metrics and the log say the
    # same): a drop is never silent.
    out["reported_lost"] = sum(s.lost for s in core.snapshot().sources if s.name == "queue")
    devnull.close()
    out["journal_mb"] = sum(p.stat().st_size for p in Path(tmp).iterdir()) / 2**20
    for p in Path(tmp).iterdir():
        p.unlink()
    os.rmdir(tmp)
    return out


if __name__ == "__main__":
    mode, n = sys.argv[1], int(sys.argv[2])
    evs = build(n)
    if mode == "core":
        res = run_core(evs)
    elif mode == "agent":
        res = run_agent(evs, None)
    elif mode == "paced":
        res = run_agent(evs, float(sys.argv[3]))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps(res))
