"""Provides Watermark: how far one source's event stream is complete, for the runtime's merge.

A source's watermark is a promise: every event it emits from now on is stamped at or after
`value(now_ns)`. The runtime releases an event to the core once every live source's watermark
has passed it, so events from different sockets reach the core in time order without a fixed
wait (stream processors call this a low watermark).

The source's threads keep it; the core thread reads it. No lock: each field is one store
under the GIL, and the order of the stores is what makes a read safe:

* `working()` (the thread woke up, or starts) stores the mark, then clears `waiting`;
  `waiting()` (it is about to block for input, everything it read is emitted) sets `waiting`;
  `busy()` clears it without moving the mark (a thread that wakes to emit what another thread
  read and stamped earlier: the uevent decoder).
  A source that stamps events with the clock when it reads them (uevents, rtnetlink, Kata's
  scans) takes its stamps after `working()`, so while `waiting` is seen set, anything it
  emits later is stamped after the reader's clock: its watermark is the clock.
* While working, the watermark is the mark: the clock when it woke, raised by `emitted(ts)`
  as it emits (a source in a storm never waits, and must not hold the others back).
* `lag_ns`: for records stamped elsewhere before the thread sees them (eBPF records are
  stamped in the kernel and wait in the ring buffer until the poll wakes): the longest such
  delay, subtracted from the clock and from the mark.
* `hold(ts)`: an event read but kept back on purpose (the eBPF source reads back the value of
  an opened file 100 ms later) pins the watermark at its stamp until it is emitted.
* A source that is not running (not started, crashed, stopped) is not live: the runtime
  leaves it out (`live`).

A watermark that stalls (a source stuck working) is bounded by the runtime's maximum
lateness, and every event released that way is counted.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def _nothing() -> None:
    return None


class Watermark:
    """One source's watermark (see the module docstring for the protocol)."""

    __slots__ = ("_clock", "_hold", "_mark", "_waiting", "kick", "lag_ns", "live")

    def __init__(self, lag_ns: int = 0, clock_ns: Callable[[], int] = time.time_ns) -> None:
        self.lag_ns = lag_ns
        """How much older than the clock a record may be when the thread first sees it."""
        self._clock = clock_ns
        self._mark = clock_ns()
        self._waiting = False
        self._hold: int | None = None
        self.live = False
        """Set by the runtime while the source runs; a source that is not live holds nothing."""
        self.kick: Callable[[], None] = _nothing
        """Set by the runtime: wakes the core thread (called when the source starts waiting)."""

    # ---- the source's side ------------------------------------------------------------------

    def working(self, mark_ns: int | None = None) -> None:
        """The thread woke (or starts): events it emits from now are stamped at or after the
        clock now (or `mark_ns`, when it knows better). Call before taking any stamp."""
        self._mark = self._clock() if mark_ns is None else mark_ns
        self._waiting = False

    def busy(self) -> None:
        """The thread woke with events read earlier still to emit (they carry older stamps):
        the mark stays where `emitted` left it."""
        self._waiting = False

    def waiting(self) -> None:
        """The thread is about to block for input; everything it read has been emitted (or is
        held with `hold`)."""
        self._waiting = True
        self.kick()

    def emitted(self, ts_ns: int) -> None:
        """An event stamped `ts_ns` was emitted; nothing the source emits later is older (for
        sources that stamp on read, in order)."""
        if ts_ns > self._mark:
            self._mark = ts_ns

    def hold(self, ts_ns: int | None) -> None:
        """The oldest stamp of the events read but not emitted yet (None: none is held). Set it
        before `waiting()`, and clear it only after the held event was emitted."""
        self._hold = ts_ns

    @property
    def is_waiting(self) -> bool:
        return self._waiting

    # ---- the core's side --------------------------------------------------------------------

    def value(self, now_ns: int) -> int:
        """Every event the source emits after this call is stamped at or after the result.
        `now_ns` is the caller's clock, read before this call."""
        # `_waiting` first: seen set, the source's next stamp comes after this read.
        w = now_ns if self._waiting else self._mark
        w -= self.lag_ns
        hold = self._hold
        return w if hold is None or hold > w else hold
