"""Provides the runtime's merge: events held in time order until every live source's watermark
has passed them (WatermarkMerge), and the store that keeps them (MergeStore).

Uevents, rtnetlink and eBPF records reach the runtime on different threads and sockets, in
varying order (sriov-lab.md: RTM_DELLINK before or after `remove net`; an eBPF record of the
write that caused a uevent is read after it). Each source keeps a `Watermark`
(diag/sources/watermark.py): every event it emits from now on is stamped at or after it. An
event leaves the merge when it is no newer than the lowest watermark of the live sources, in
(ts_ns, arrival) order; a source that waits for input advances its watermark to the clock at
once, so an event waits only while another source may still deliver an older one.

* A source with no watermark (a third-party source, a test double) is assumed complete up to
  `unmarked_lateness_ns` ago (the former fixed merge window).
* A watermark that stalls (a source busy for long: a slow read, a stuck thread) holds nothing
  longer than `max_lateness_ns`: events older than that are released anyway, and counted per
  source that held them (`stalled`).
* An event older than one already released (it came after its time) is released at once and
  counted (`late`), as before.

Pure apart from the clock reading handed in: `release(now_ns)` does the policy, the caller
(the core thread) reads the clock, then the watermarks, then drains the queue, in that order
(a watermark read after the drain could promise what the drained batch does not hold).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from diag import events as ev
from diag.sources.watermark import Watermark


class MergeStore:
    """Events in (ts_ns, arrival) order.

    Most events arrive already in order (each socket's are stamped at receipt), and a drained
    batch of them is kept as it came: one segment of the FIFO (its stamps, its events, the
    arrival number of its first, how far it is taken), for the cost of reading its stamps; a
    batch that is not in order keeps its in-order events as a segment and puts those that
    overtake the newest one held through a heap. Taking walks the segments by bisection and
    gives lists, so an event costs no tuple and no generator step; only heap events are taken
    one at a time, interleaved by (ts_ns, arrival): the same order as one heap.
    """

    __slots__ = ("_n", "fifo", "heap", "seq")

    def __init__(self) -> None:
        self.fifo: deque[list[Any]] = deque()
        """Segments `[stamps, events, arrival, next]`: `arrival` is the arrival number of the
        first (an int, the rest follow one by one) or a list of each one's; `next` the index of
        the first not yet taken. Never empty; stamps non-decreasing, within and across them."""
        self.heap: list[tuple[int, int, ev.Event]] = []
        self.seq = 0
        self._n = 0
        """Events held in the FIFO."""

    def __len__(self) -> int:
        return self._n + len(self.heap)

    def push(self, e: ev.Event) -> None:
        self.push_all([e])

    def push_all(self, events: list[ev.Event]) -> None:
        """Hold `events` (in their arrival order)."""
        if not events:
            return
        stamps = [e.ts_ns for e in events]
        fifo = self.fifo
        tail = fifo[-1][0][-1] if fifo else None
        if (tail is None or stamps[0] >= tail) and (len(stamps) == 1 or stamps == sorted(stamps)):
            fifo.append([stamps, list(events), self.seq + 1, 0])
            self.seq += len(stamps)
            self._n += len(stamps)
            return
        heap, heappush = self.heap, heapq.heappush
        seq = self.seq
        run_ts: list[int] = []
        run_ev: list[ev.Event] = []
        run_seq: list[int] = []
        for e, ts in zip(events, stamps, strict=True):
            seq += 1
            if tail is None or ts >= tail:
                run_ts.append(ts)
                run_ev.append(e)
                run_seq.append(seq)
                tail = ts
            else:
                heappush(heap, (ts, seq, e))
        self.seq = seq
        if run_ts:
            fifo.append([run_ts, run_ev, run_seq, 0])
            self._n += len(run_ts)

    def oldest_ns(self) -> int | None:
        fifo, heap = self.fifo, self.heap
        f = fifo[0][0][fifo[0][3]] if fifo else None
        if heap and (f is None or heap[0][0] < f):
            return heap[0][0]
        return f

    def take(self, until_ns: int | None) -> list[ev.Event]:
        """Take, in order, the events at or before `until_ns` (all when None)."""
        out: list[ev.Event] = []
        fifo, heap = self.fifo, self.heap
        heappop = heapq.heappop
        while fifo:
            seg = fifo[0]
            stamps, events, arrival, pos = seg
            stop = len(stamps)
            if heap:
                h = heap[0]
                first = arrival + pos if type(arrival) is int else arrival[pos]
                if (h[0], h[1]) < (stamps[pos], first):  # the heap's head goes first
                    if until_ns is not None and h[0] > until_ns:
                        return out
                    out.append(heappop(heap)[2])
                    continue
                # This segment's events up to the heap's head; a tie on the stamp goes one by
                # one (arrival decides).
                stop = bisect_left(stamps, h[0], pos)
                if stop == pos:
                    stop = pos + 1
            if until_ns is not None and stamps[stop - 1] > until_ns:
                stop = bisect_right(stamps, until_ns, pos, stop)
                if stop == pos:
                    return out
            out += events[pos:stop] if pos or stop < len(stamps) else events
            self._n -= stop - pos
            if stop == len(stamps):
                fifo.popleft()
            else:
                seg[3] = stop
        while heap and (until_ns is None or heap[0][0] <= until_ns):
            out.append(heappop(heap)[2])
        return out

    def pop_until(self, until_ns: int | None) -> Iterator[tuple[int, ev.Event]]:
        """Yield (ts_ns, event) in order while the oldest is at or before `until_ns` (all when
        None)."""
        for e in self.take(until_ns):
            yield e.ts_ns, e


@dataclass(slots=True)
class MergeStats:
    """What the merge did (plain ints: read them from any thread)."""

    late: int = 0
    """Events older than one already released (arrived after their time), released at once."""
    stalled: dict[str, int] = field(default_factory=dict)
    """Source name -> events released after `max_lateness_ns` although its watermark had not
    passed them (the source was busy that long)."""

    @property
    def stalled_total(self) -> int:
        return sum(self.stalled.values())


class WatermarkMerge:
    """The merge policy: hold, then release what every live source's watermark has passed."""

    def __init__(self, *, unmarked_lateness_ns: int = 75_000_000,
                 max_lateness_ns: int = 500_000_000) -> None:
        self.store = MergeStore()
        self.unmarked_lateness_ns = unmarked_lateness_ns
        self.max_lateness_ns = max_lateness_ns
        self.sources: dict[str, Watermark | None] = {}
        """Source name -> its watermark (None: the source reports none)."""
        self.running: frozenset[str] = frozenset()
        """Sources without a watermark that are running (the others say so with `live`);
        replaced, never changed in place: source threads set it while the core reads it."""
        self.stats = MergeStats()
        self.last_released_ns = 0
        self.low_ns = 0
        """The watermark of the last `release` (the stream is complete up to here)."""

    def add_source(self, name: str, watermark: Watermark | None) -> None:
        # Replaced, not changed in place: a source added to a running pipeline is added from
        # another thread while the core thread iterates the sources (`watermark`).
        self.sources = {**self.sources, name: watermark}

    def set_running(self, name: str, running: bool) -> None:
        """A source started or stopped (its watermark's `live` says the same)."""
        wm = self.sources.get(name)
        if wm is not None:
            wm.live = running
        elif running:
            self.running = self.running | {name}
        else:
            self.running = self.running - {name}

    def __len__(self) -> int:
        return len(self.store)

    def push(self, e: ev.Event) -> None:
        self.store.push(e)

    def push_all(self, events: list[ev.Event]) -> None:
        self.store.push_all(events)

    def watermark(self, now_ns: int) -> tuple[int, str | None]:
        """The lowest watermark of the live sources at `now_ns` (the clock, read before), and
        the name of the source that sets it (None: none holds anything back)."""
        low, who = now_ns, None
        running = self.running
        if running:
            low, who = now_ns - self.unmarked_lateness_ns, min(running)
        for name, wm in self.sources.items():
            if wm is None or not wm.live:
                continue
            w = wm.value(now_ns)
            if w < low:
                low, who = w, name
        return low, who

    def take(self, now_ns: int, low: tuple[int, str | None] | None = None) -> list[ev.Event]:
        """Take, in order, every event the watermark has passed, and those held past
        `max_lateness_ns` (counted against the source that held them). `low`: the watermark
        read before the caller drained its queue (default: read now)."""
        wm, who = self.watermark(now_ns) if low is None else low
        self.low_ns = wm
        store = self.store
        out = store.take(wm)
        bound = now_ns - self.max_lateness_ns
        if bound > wm and who is not None and len(store):
            stalled = store.take(bound)
            if stalled:
                self.stats.stalled[who] = self.stats.stalled.get(who, 0) + len(stalled)
                out += stalled
        self._count_late(out)
        return out

    def take_all(self) -> list[ev.Event]:
        """Everything held, in order (at stop)."""
        out = self.store.take(None)
        self._count_late(out)
        return out

    def _count_late(self, out: list[ev.Event]) -> None:
        """`out` (in order) leaves: those older than one released before are late."""
        if not out:
            return
        last = self.last_released_ns
        late = 0
        for e in out:  # in order: only a head of them can be older than `last`
            if e.ts_ns >= last:
                break
            late += 1
        self.stats.late += late
        self.last_released_ns = max(last, out[-1].ts_ns)

    def due_in_ns(self, now_ns: int) -> int | None:
        """How long until the oldest held event may be released with nothing else happening
        (a source that starts waiting wakes the caller sooner); None when nothing is held."""
        oldest = self.store.oldest_ns()
        if oldest is None:
            return None
        # Time alone moves the watermark of waiting lagged sources and unmarked ones; working
        # sources move it when they emit or wait (both wake the core thread).
        lag = self.unmarked_lateness_ns if self.running else 0
        for wm in self.sources.values():
            if wm is not None and wm.live and wm.lag_ns > lag:
                lag = wm.lag_ns
        due = oldest + min(lag, self.max_lateness_ns) - now_ns
        if due <= 0:
            due = oldest + self.max_lateness_ns - now_ns
        return max(due, 0)
