"""Provides the test doubles for code built on vfiowatch, as structlog ships structlog.testing.

Every test tier of vfiowatch uses these instead of writing its own; they are public API:

- `ListSink`: a Sink that keeps every item and counts snapshots, flushes and closes.
- `Collector`: a thread-safe Emit that keeps what a source emits, filters it by kind and waits
  for a condition.
- `ScriptedSource`: a Source that emits a fixed list of events, then waits to be stopped.
- `FakeClock`: a wall clock the test sets (any `clock=` the runtime takes).
- `ManualFeed`: a SnapshotFeed the test drives (`push(state)`), for the dashboard.
- `wait_for(pred)`: poll until a condition holds or a timeout passes.
- Event builders with the defaults a test does not care about: `process`, `bound`, `unbound`,
  `write`, `tick`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import ClassVar, TypeVar

from diag import events as ev
from diag.core.state import HostState, SnapshotListener
from diag.sources import Availability, Emit

E = TypeVar("E", bound=ev.Event)


def wait_for(pred: Callable[[], bool], timeout: float = 5.0, step: float = 0.02) -> bool:
    """Poll `pred` until it holds (True) or `timeout` seconds pass (its last answer)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


# --------------------------------------------------------------------------------------------
# Sinks and sources
# --------------------------------------------------------------------------------------------


class ListSink:
    """A sink that keeps everything it is given (the Sink protocol's double)."""

    name: ClassVar[str] = "list"

    def __init__(self) -> None:
        self.items: list[ev.Event] = []
        self.snapshots = 0
        self.flushed = 0
        self.closed = False
        self.reopened = 0

    def write(self, item: ev.Event, /) -> None:
        self.items.append(item)

    def snapshot(self, state: HostState, /) -> None:
        self.snapshots += 1

    def flush(self) -> None:
        self.flushed += 1

    def close(self) -> None:
        self.closed = True

    def reopen(self) -> None:
        self.reopened += 1

    def findings(self) -> list[ev.Finding]:
        return [i for i in self.items if isinstance(i, ev.Finding)]


class Collector:
    """A thread-safe Emit: what a source emitted, in arrival order."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []
        self._lock = threading.Lock()

    def __call__(self, e: ev.Event, /) -> None:
        with self._lock:
            self.events.append(e)

    def snapshot(self) -> list[ev.Event]:
        """A copy of what has been emitted so far."""
        with self._lock:
            return list(self.events)

    def of(self, kind: type[E]) -> list[E]:
        """The events of one class, in arrival order."""
        return [e for e in self.snapshot() if isinstance(e, kind)]

    def writes(self, pid: int | None = None) -> list[ev.SysfsWriteObserved]:
        """The sysfs writes seen, all or those of one process."""
        return [e for e in self.of(ev.SysfsWriteObserved) if pid is None or e.actor.pid == pid]

    def wait(self, pred: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Wait until `pred` holds (the source runs on its own thread)."""
        return wait_for(pred, timeout, 0.05)


class ScriptedSource:
    """A source that emits `events` (after `delay_s`), then waits for stop."""

    def __init__(self, name: str, events: Iterable[ev.Event], delay_s: float = 0.0) -> None:
        self.name = name
        self.events = list(events)
        self.delay_s = delay_s
        self.resyncs: list[str] = []

    def probe(self) -> Availability:
        return Availability(True, mode="scripted")

    def run(self, emit: Emit, stop: threading.Event) -> None:
        time.sleep(self.delay_s)
        for e in self.events:
            emit(e)
        stop.wait()

    def request_resync(self, reason: str) -> None:
        self.resyncs.append(reason)


class FakeClock:
    """A wall clock in nanoseconds that only moves when the test sets `ns`."""

    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


# --------------------------------------------------------------------------------------------
# The dashboard's feed
# --------------------------------------------------------------------------------------------


class ManualFeed:
    """A SnapshotFeed the test drives: `push(state)` publishes from a thread of the caller's."""

    def __init__(self, first: HostState | None = None) -> None:
        self.listeners: list[SnapshotListener] = []
        self.first = first
        self.started = threading.Event()
        self.stopped = threading.Event()

    def subscribe(self, listener: SnapshotListener) -> None:
        self.listeners.append(listener)

    def start(self) -> None:
        self.started.set()
        if self.first is not None:
            self.push(self.first)

    def stop(self) -> None:
        self.stopped.set()

    def push(self, state: HostState) -> None:
        for listener in self.listeners:
            listener(state)


# --------------------------------------------------------------------------------------------
# Event builders
# --------------------------------------------------------------------------------------------


def process(pid: int = 4242, comm: str = "containerd-shim", **kw: object) -> ev.Process:
    """A process identity (the Kata shim's comm by default)."""
    return ev.Process(pid=pid, comm=comm, **kw)  # type: ignore[arg-type]


def bound(bdf: str, driver: str, ts_ns: int = 1, *, source: str = "uevent",
          **kw: object) -> ev.DeviceBound:
    """A driver bound to a device."""
    return ev.DeviceBound(ts_ns=ts_ns, source=source, bdf=bdf, driver=driver, **kw)  # type: ignore[arg-type]


def unbound(bdf: str, ts_ns: int = 1, *, source: str = "uevent", **kw: object) -> ev.DeviceUnbound:
    """A device left its driver."""
    return ev.DeviceUnbound(ts_ns=ts_ns, source=source, bdf=bdf, **kw)  # type: ignore[arg-type]


def write(path: str, value: str, ts_ns: int = 1, *, actor: ev.Process | None = None,
          control: str | None = None, **kw: object) -> ev.SysfsWriteObserved:
    """A process wrote `value` to a sysfs control file (control from the path by default)."""
    return ev.SysfsWriteObserved(
        ts_ns=ts_ns, source="ebpf", actor=actor or process(), path=path, value=value,
        control=control or path.rsplit("/", 1)[-1], **kw)  # type: ignore[arg-type]


def tick(ts_ns: int) -> ev.ClockTicked:
    """Time passed with nothing else happening."""
    return ev.ClockTicked(ts_ns=ts_ns, source="runtime")
