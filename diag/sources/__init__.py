"""Provides the Source protocol and the source registry: one module plus one line per source.

Every source splits into pure `decode_*()` functions (tested on recorded kernel bytes) and a thin
`run(emit, stop)` loop that only reads. `probe()` asks the machine whether the source can run and
says why not, with a fix, without side effects.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from diag import events as ev
from diag.paths import HostPaths


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


class Source(Protocol):
    """A producer of events from one kernel or host interface."""

    name: ClassVar[str]

    def probe(self) -> Availability:
        """Cheap, side-effect-free check that the source can run here."""
        ...

    def run(self, emit: Emit, stop: threading.Event) -> None:
        """Blocking loop on its own thread; returns soon after `stop` is set."""
        ...


SourceFactory = Callable[[SourceContext], Source]
SOURCES: dict[str, SourceFactory] = {}
"""Source name -> factory, in registration order."""


def register(name: str) -> Callable[[SourceFactory], SourceFactory]:
    """Decorator registering a source factory (usually the class) under `name`."""

    def deco(factory: SourceFactory) -> SourceFactory:
        SOURCES[name] = factory
        return factory

    return deco


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
            from diag.errors import ConfigError

            raise ConfigError(
                f"unknown option {key!r} for source {source}",
                hint=f"[sources.{source}] takes: {', '.join(known)}",
            )


def load_builtin() -> dict[str, SourceFactory]:
    """Import the built-in source modules (registering them) and return the registry."""
    import importlib

    for mod in BUILTIN:
        try:
            importlib.import_module(f"diag.sources.{mod}")
        except ImportError:  # a source whose module cannot even import is reported by probe
            continue
    return SOURCES


BUILTIN: list[str] = [
    "uevent",
    "links",
    "kata.source",
    "ebpf",
]
"""Built-in source modules, one line each (appended by each source's author)."""
