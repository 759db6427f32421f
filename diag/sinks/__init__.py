"""Provides the Sink protocol: where events and findings go (logs, journal, metrics)."""

from __future__ import annotations

from typing import ClassVar, Protocol

from diag import events as ev
from diag.core.state import HostState


class Sink(Protocol):
    """A consumer of the core's output. Called from the core thread only.

    Optional: `write_batch(items)` takes a batch of the core's output (events and findings, in
    order) as one list, instead of one `write` each; `end_batch()` is called after each batch.
    `flush()` comes about a second after items were written (never on an idle timer);
    `wants_flush()`, when a sink has it, asks for more flushes with nothing written (a journal
    retrying failed writes).
    """

    name: ClassVar[str]

    def write(self, item: ev.Event, /) -> None:
        """Take one event or finding (findings are events)."""
        ...

    def snapshot(self, state: HostState, /) -> None:
        """Take the newest snapshot (metrics read it); default no-op."""
        ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def reopen(self) -> None:
        """SIGHUP / logrotate."""
        ...
