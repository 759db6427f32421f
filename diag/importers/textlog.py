"""Provides the shared step of the text-log importers: decoded records -> events, in input order, untimed ones kept.

Every importer of log-like text (journalctl output, klog, kubectl events, pasted fragments)
decodes its lines into `LogRecord`s and hands them here with the time it could give each one
(None when the line has none). The record becomes what it is evidence of
(`diag.sources.kata.loglines.to_events`: the sysfs write a Kata line announces, else the matched
line), exactly as the live Kata source does. A known line without a time is never dropped: it
borrows its neighbour's stamp to keep its place in the input's order and is flagged in
`Parsed.untimed`, so the report can say its time is unknown. An input where no line had a time
ends with clock `none` (ordinal stamps, placed by matching like plain `ip monitor`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import replace

from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line
from diag.sources.kata import loglines

SOURCE = "kata"
MAX_BYTES = 64 * 1024 * 1024
"""The most of one text log read (decompressed): a hostile or runaway file stops there."""


def bounded_lines(lines: Iterable[bytes], st: FileStats, limit: int = MAX_BYTES) -> Iterator[str]:
    """Decoded lines up to `limit` bytes in all; past it the file is marked partly read."""
    total = 0
    for b in lines:
        total += len(b)
        if total > limit:
            st.truncated = True
            st.note(f"only the first {limit // (1024 * 1024)} MiB were read (the limit for a "
                    "text input)")
            return
        yield decode_line(b)


class Emitter:
    """Events of one input, with their untimed flags (see the module docstring)."""

    def __init__(self, stats: FileStats, parsed: Parsed, *, source: str = SOURCE) -> None:
        self.st = stats
        self.parsed = parsed
        self.source = source
        self.last_ts: int | None = None
        self.pending: list[ev.Event] = []
        """Known untimed lines met before any timed one: they take its stamp."""
        self.unmatched = 0
        self.untimed = 0
        self.timed = 0

    def _out(self, e: ev.Event, untimed: bool) -> ev.Event:
        self.parsed.untimed.append(untimed)
        self.st.events += 1
        return e

    def emit(self, rec: loglines.LogRecord | None, ts_ns: int | None) -> Iterator[ev.Event]:
        """The events of one record; `ts_ns` is the line's time, None when it has none."""
        if rec is None:
            return
        events = loglines.to_events(rec, ts_ns=ts_ns or 0, source=self.source)
        if not events:
            self.unmatched += 1
            return
        for e in events:
            if ts_ns is None and not rec.line_ts:
                self.untimed += 1
                if self.last_ts is None:
                    self.pending.append(e)
                    continue
                yield self._out(replace(e, ts_ns=self.last_ts), True)
                continue
            t = e.ts_ns
            self.timed += 1
            for p in self.pending:
                yield self._out(replace(p, ts_ns=t), True)
            self.pending = []
            self.last_ts = t
            yield self._out(e, False)

    def finish(self, what: str = "line") -> Iterator[ev.Event]:
        """Flush what waits; with no timed line at all the input has no time (clock `none`)."""
        if self.pending:
            if self.timed == 0:
                self.parsed.clock = "none"
                for n, p in enumerate(self.pending):
                    yield self._out(replace(p, ts_ns=n), False)
            else:  # cannot happen (a timed line flushes them); kept for safety
                for p in self.pending:
                    yield self._out(p, True)
            self.pending = []
        if self.untimed and self.timed:
            self.st.note(f"{self.untimed} known {what}(s) carry no time: kept in their place in "
                         "the input, time unknown")
        if self.unmatched:
            self.st.note(f"{self.unmatched} {what}(s) matched no known Kata/QEMU/kernel signature")
