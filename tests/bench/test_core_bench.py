"""Core benchmarks: throughput on the recorded lab stream replayed in-process, and the time from
an event entering the core to its finding. Prints a table; never asserts a time.

Streams (all from the lab's real recordings, see tests/unit/core/corelab.py):
- `lab session`: the golden session (tests/golden/core/lab-session.events.jsonl): both Kata
  sequences, #10162 lines, an unexpected actor, a loss; one finding transition for every three
  events (the finding-dense worst case: every event is part of a driver move that is a
  problem). Target 200,000 events per CPU second.
- `healthy host`: pods come and go: the recorded Kata 3.8 bind and restore, by the Kata shim,
  with cold_plug_vfio=root-port (what the remedy asks for): no finding at all. Target 500,000.
- `flapping`: all four recorded moves (3.8 and 3.0-3.7 pairs) by the Kata shim with root-port:
  one driver-flapping finding per replay (the lab moves the VF 4 times in 3 s).
Each is replayed 200 times, 200 s apart (new episodes each time). Side by side: the same core
with every rule offered every event (no type dispatch, no wake-up), the design it replaced.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from pathlib import Path

import pytest

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.events import replace
from tests.bench.benchprofile import profile
from tests.bench.benchtable import table
from tests.unit.core import corelab

HERE = Path(__file__).resolve().parent

PROFILED = """
import sys
from tests.bench import test_core_bench as b
from diag.core.correlator import Correlator
stream = {"lab session": b.lab_stream, "healthy host": b.healthy_stream,
          "flapping": b.flapping_stream}[sys.argv[1]]()
for _ in range(50):
    c = Correlator()
    for e in stream:
        c.feed(e)
"""
"""A stream replayed 50 times in a fresh interpreter (what py-spy profiles on a miss)."""

REPEAT = 200
TARGETS = {"lab session": 200_000, "healthy host": 500_000, "flapping": 200_000}
"""Events per CPU second (issue 19): the finding-dense stream, and a host with no finding."""
SETUP = (ev.InventoryObserved, ev.KataConfigLoaded, ev.SourceStateChanged)


def _repeat(session: list[ev.Event]) -> list[ev.Event]:
    head = [e for e in session if isinstance(e, SETUP)]
    body = [e for e in session if not isinstance(e, (*SETUP, ev.ClockTicked, ev.DeviceRemoved))]
    span = body[-1].ts_ns - body[0].ts_ns + 200 * 1_000_000_000
    out = list(head)
    for i in range(REPEAT):
        out += [replace(e, ts_ns=e.ts_ns + i * span) for e in body]
    return out


def lab_stream() -> list[ev.Event]:
    journal = (HERE.parent / "golden" / "core" / "lab-session.events.jsonl").read_bytes()
    recs = codec.iter_records(journal.splitlines(keepends=True))
    return _repeat([r for r in recs if isinstance(r, ev.Event)])


def _moves(phases: tuple[str, ...]) -> list[ev.Event]:
    t0 = corelab.start_ns()
    inv = corelab.inventory(t0)
    tr = corelab.tracker_for(inv)
    out: list[ev.Event] = [inv, corelab.kata_config(t0, cold_plug="root-port")]
    for p in phases:
        out += corelab.phase_events(p, tr, actor=corelab.KATA_SHIM)
    return _repeat(out)


def healthy_stream() -> list[ev.Event]:
    return _moves(("kata38-bind-vfio", "kata38-restore"))


def flapping_stream() -> list[ev.Event]:
    return _moves(("kata38-bind-vfio", "kata38-restore", "clear-override", "kata30-bind-vfio",
                   "kata30-restore"))


class EveryRuleSeesEverything(Correlator):
    """The baseline: no dispatch by event type, every rule ticked on every event."""

    def _rules_for(self, cls: type[ev.Event]) -> list:  # type: ignore[override]
        return self.rules

    def feed(self, event: ev.Event) -> list[ev.Finding]:
        self._wake.at = 0  # always due: every timed rule is called
        return super().feed(event)


def _throughput(make: type[Correlator], stream: list[ev.Event],
                rounds: int = 5) -> tuple[float, float]:
    """(events per CPU second, events per wall second), best of `rounds`. CPU time is the
    stable figure on this shared 2-CPU machine; wall time includes other engineers' load."""
    cpu = wall = float("inf")
    for _ in range(rounds):
        c = make()
        t0, w0 = time.process_time(), time.perf_counter()
        for e in stream:
            c.feed(e)
        cpu = min(cpu, time.process_time() - t0)
        wall = min(wall, time.perf_counter() - w0)
    return len(stream) / cpu, len(stream) / wall


def _latency(stream: list[ev.Event]) -> tuple[list[int], list[int], list[int]]:
    """Per-event feed time (ns, thread CPU time) for every event and for events that opened a
    finding, plus the wall time of the latter (which includes being preempted)."""
    c = Correlator()
    every: list[int] = []
    opening: list[int] = []
    opening_wall: list[int] = []
    cpu, wall = time.thread_time_ns, time.perf_counter_ns
    for e in stream:
        t, w = cpu(), wall()
        out = c.feed(e)
        dt, dw = cpu() - t, wall() - w
        every.append(dt)
        if any(f.status == "open" for f in out):
            opening.append(dt)
            opening_wall.append(dw)
    return every, opening, opening_wall


def _pct(xs: list[int], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] / 1000


@pytest.mark.bench
def test_core_throughput_and_latency() -> None:
    """Prints events/s per stream (with the every-rule baseline) and event-to-finding latency."""
    rows = []
    streams = (("lab session", lab_stream()), ("healthy host", healthy_stream()),
               ("flapping", flapping_stream()))
    gc.freeze()  # the replayed streams are input, not the core's heap (see module docstring)
    for name, stream in streams:
        ours = _throughput(Correlator, stream)
        base = _throughput(EveryRuleSeesEverything, stream)
        every, opening, opening_wall = _latency(stream)
        c = Correlator()
        n_find = sum(len(c.feed(e)) for e in stream)
        rows.append((name, len(stream), n_find, ours, base, every, opening, opening_wall))

    print()
    print("core throughput, events per CPU second (best of 5 in-process replays; wall clock in "
          "brackets)")
    print(f"{'stream':<14}{'events':>8}{'findings':>9}{'vfiowatch core':>26}"
          f"{'every rule/event':>26}{'ratio':>7}{'target':>9}{'vs target':>10}")
    for name, n, nf, ours, base, *_ in rows:
        print(f"{name:<14}{n:>8,}{nf:>9,}{ours[0]:>11,.0f} ev/s ({ours[1]:>8,.0f}){base[0]:>11,.0f}"
              f" ev/s ({base[1]:>8,.0f}){ours[0] / base[0]:>6.1f}x{TARGETS[name]:>9,}"
              f"{ours[0] / TARGETS[name]:>9.2f}x")
    print()
    print("time from an event entering the core to its finding (one feed() call, µs of CPU; "
          "wall p99 in the last column)")
    print(f"{'stream':<14}{'all events p50':>15}{'p99':>9}{'opening a finding p50':>23}{'p99':>9}"
          f"{'n':>7}{'wall p99':>10}")
    for name, _, _, _, _, every, opening, opening_wall in rows:
        print(f"{name:<14}{_pct(every, .5):>15.1f}{_pct(every, .99):>9.1f}"
              f"{_pct(opening, .5) if opening else 0:>23.1f}"
              f"{_pct(opening, .99) if opening else 0:>9.1f}{len(opening):>7}"
              f"{_pct(opening_wall, .99) if opening else 0:>10.1f}")
    print("median over the lab session: {:.1f} µs (python {}.{}; load average {:.1f} on {} CPUs)"
          .format(statistics.median(rows[0][5]) / 1000, *sys.version_info[:2],
                  os.getloadavg()[0], os.cpu_count()))
    for name, _, _, ours, *_ in rows:
        if ours[0] < TARGETS[name]:  # a miss is explained by where the time goes
            print(table(f"{name} missed its target: py-spy profile of 50 replays (share of "
                        "samples)", ("function", "own %", "under it %"),
                        profile([sys.executable, "-c", PROFILED, name], under="Correlator.feed")))
