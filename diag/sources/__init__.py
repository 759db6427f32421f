"""Provides the Source protocol and the source registry: one module plus one line per source.

A source module decorates its class with `@register` (its `name` is the registry name) and
adds one line to `SOURCES`'s module list; a module that fails to import is reported by the
registry (`SOURCES.failures`), never skipped.

Every source splits into pure `decode_*()` functions (tested on recorded kernel bytes) and a thin
`run(emit, stop)` loop that only reads. `probe()` asks the machine whether the source can run and
says why not, with a fix, without side effects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar

from diag import events as ev
from diag.common.faults import NO_FAULTS, Faults
from diag.common.paths import HostPaths
from diag.common.registry import Registry


class Emit(Protocol):
    """Where a source puts its events (the runtime's bounded queue)."""

    def __call__(self, event: ev.Event, /) -> None: ...


@dataclass(frozen=True, slots=True)
class Availability:
    """Whether a source can run here."""

    ok: bool
    reason: str = ""
    """Why not (or, when ok, a note such as the chosen mode's reason)."""
    hint: str = ""
    """The one-line fix."""
    mode: str = ""


@dataclass(frozen=True, slots=True)
class SourceContext:
    """What every source is built from."""

    paths: HostPaths = field(default_factory=HostPaths)
    options: Mapping[str, Any] = field(default_factory=dict)
    """Source-specific options from the CLI/config (`rcvbuf`, `mode`, ...)."""
    faults: Faults = NO_FAULTS
    """What to break on purpose (`[faults]`, tests only; diag.common.faults)."""


@dataclass(slots=True)
class SocketCounters:
    """What every source reading a kernel socket counts (read from any thread; plain ints)."""

    malformed: int = 0
    """Messages its decoder refused (reported in-band as DecodeFailed)."""
    enobufs: int = 0
    """Times the kernel said the socket's buffer overflowed (each an EventsLost, then a resync)."""
    resyncs: int = 0
    """Re-reads of the kernel's state after a loss."""


class Source(Protocol):
    """A producer of events from one kernel or host interface."""

    name: ClassVar[str]
    # Optional: `reports_up: ClassVar[bool] = True` on a source whose start can fail after its
    # probe (compiling, attaching). The runtime then reports it "starting: <probe reason>"
    # (up=False) and the source emits SourceStateChanged(up=True) itself once it works.

    def probe(self) -> Availability:
        """Cheap, side-effect-free check that the source can run here."""
        ...

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Blocking loop on its own thread; returns soon after `stop` is set."""
        ...


SourceFactory = Callable[[SourceContext], Source]
SOURCES: Registry[SourceFactory] = Registry("source", [
    "diag.sources.uevent.source",
    "diag.sources.links",
    "diag.sources.kata.source",
    "diag.sources.ebpf.source",
])
"""Source name -> factory, in registration order; one line per built-in source module."""

_S = TypeVar("_S", bound=Source)


def register(cls: type[_S]) -> type[_S]:
    """Class decorator registering a source under its `name` (written once, on the class)."""
    SOURCES.add(cls.name, cls)
    return cls


def refusal_events(paths: HostPaths, source: str, ts_ns: int) -> list[ev.Event]:
    """The paths `paths` refused since the last call (they lead outside --root), one in-band
    DecodeFailed each, so a source never drops a refusal silently."""
    return [ev.DecodeFailed(ts_ns=ts_ns, source=source, failed_source=source,
                            reason=f"refused to read outside --root: {text}")
            for text in paths.refusals.take()]


def check_options(source: str, options: Mapping[str, Any], known: Sequence[str]) -> None:
    """Raise ConfigError naming the first option `source` does not take, with the known ones."""
    for key in options:
        if key not in known:
            from diag.common.errors import ConfigError

            raise ConfigError(
                f"unknown option {key!r} for source {source}",
                hint=f"[sources.{source}] takes: {', '.join(known)}",
            )
