"""Provides ReplayFeed: a SnapshotFeed that plays a recorded journal through a fresh Correlator.

The journal (plain or gzip, read with `diag.codec.iter_records`; damaged lines are counted, not
raised) is loaded into memory; its events are fed to a new Correlator on the recorded timeline,
scaled by `speed`, and snapshots are published as they would be live (dolphie's live = replay):
the dashboard cannot tell the two apart. Recorded findings are not re-applied: the core
recomputes its own from the events.

Playback controls (`diag.core.state.Playback`, what the dashboard drives): play, pause, step (forward or
back), seek to a record or to a recorded time, jump to the next or previous record at which a
finding opened, change speed. Seeking backwards rebuilds the core from the first record
(the core is deterministic, so the state is the same as when it was first reached). Idle gaps
longer than `max_gap_s` of wall time are shortened to it, so a journal that was quiet for an hour
does not make the viewer wait an hour; the header's clock still shows recorded time.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from diag import codec
from diag import events as ev
from diag.common.errors import JournalFormatError
from diag.core.correlator import Correlator
from diag.core.state import HostState, PlaybackStatus, SnapshotListener

NS = 1_000_000_000


def load_journal(path: str | Path) -> tuple[list[ev.Event], codec.Header | None, codec.ReadStats]:
    """Load a journal file (plain or gzip) into (events without recorded findings, header, stats).

    Raises JournalFormatError when the file cannot be opened or holds no records.
    """
    p = Path(path)
    stats = codec.ReadStats()
    try:
        with p.open("rb") as fh:
            gz = fh.read(2) == b"\x1f\x8b"
        opener = gzip.open if gz else open
        with opener(p, "rb") as fh:
            records = list(codec.iter_records(fh, stats))
    except OSError as exc:
        raise JournalFormatError(
            f"cannot read journal {p}: {exc.strerror or exc}",
            hint="pass a journal written by `vfiowatch run --journal` (plain or .gz)",
        ) from None
    header = next((r for r in records if isinstance(r, codec.Header)), None)
    events = [r for r in records if isinstance(r, ev.Event) and not isinstance(r, ev.Finding)]
    if not events:
        raise JournalFormatError(
            f"journal {p} holds no events ({stats.lines} lines, {stats.bad_lines} bad)",
            hint="check that it is a vfiowatch journal (JSON Lines with a header line)",
        )
    return events, header, stats


class ReplayFeed:
    """Plays recorded events through a fresh Correlator; publishes snapshots as they happen."""

    def __init__(
        self,
        events: Sequence[ev.Event],
        *,
        header: codec.Header | None = None,
        stats: codec.ReadStats | None = None,
        speed: float = 1.0,
        autoplay: bool = True,
        start_at: int = 0,
        max_gap_s: float = 2.0,
        publish_interval_s: float = 0.1,
        correlator_factory: Callable[[], Correlator] = Correlator,
        stops: Iterable[int] = (),
    ) -> None:
        """`start_at`: records applied before the first snapshot (tests use len(events) to
        show the end state at once). `autoplay`: start playing on `start()`. `stops`: positions
        at which playing pauses by itself (a guided demo's chapters; play goes on from there)."""
        self.events = list(events)
        self.header = header
        self.stats = stats or codec.ReadStats()
        self.speed = speed
        self.autoplay = autoplay
        self.start_at = max(0, min(start_at, len(self.events)))
        self.max_gap_ns = int(max_gap_s * NS)
        self.publish_interval_s = publish_interval_s
        self._factory = correlator_factory
        self._core = correlator_factory()
        self._pos = 0
        self._playing = False
        self._lock = threading.Condition()
        self._listeners: list[SnapshotListener] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._vt_anchor = 0
        """Recorded time (ns) that corresponds to `_wall_anchor`."""
        self._wall_anchor = 0.0
        self._dirty = False
        self.published = 0
        self.stops = frozenset(stops)
        self._openings: set[int] = set()
        """Positions (records applied) right after which a finding opened, as far as applied."""

    @classmethod
    def open(cls, path: str | Path, **kw: object) -> ReplayFeed:
        """A feed over the journal at `path` (plain or .gz)."""
        events, header, stats = load_journal(path)
        return cls(events, header=header, stats=stats, **kw)  # type: ignore[arg-type]

    # ---- SnapshotFeed ---------------------------------------------------------------------------

    def subscribe(self, listener: SnapshotListener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def start(self) -> None:
        """Apply the first `start_at` records, publish, and start playing (when autoplay)."""
        if self._thread is not None:
            return
        with self._lock:
            self._apply_to(self.start_at)
            state = self._core.snapshot()
            if self.autoplay and self._pos < len(self.events):
                self._play_locked()
        self._publish(state)
        self._thread = threading.Thread(target=self._loop, name="vfiowatch-replay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(2.0)

    # ---- Playback -------------------------------------------------------------------------------

    def status(self) -> PlaybackStatus:
        pos, total = self._pos, len(self.events)
        return PlaybackStatus(
            position=pos, total=total, ts_ns=self.events[pos - 1].ts_ns if pos else 0,
            playing=self._playing, speed=self.speed, done=pos >= total,
        )

    def play(self) -> None:
        with self._lock:
            if self._pos >= len(self.events):
                self._seek_locked(0)  # play at the end starts over, like a media player
            self._play_locked()
            self._lock.notify_all()

    def pause(self) -> None:
        with self._lock:
            self._playing = False
            self._dirty = True
            self._lock.notify_all()

    def step(self, n: int = 1) -> None:
        with self._lock:
            self._playing = False
            self._seek_locked(self._pos + n)
            self._lock.notify_all()

    def seek(self, position: int) -> None:
        with self._lock:
            self._seek_locked(position)
            if self._playing:
                self._anchor()
            self._lock.notify_all()

    def first_ts_ns(self) -> int:
        """Recorded time of the first record."""
        return self.events[0].ts_ns if self.events else 0

    def position_at(self, ts_ns: int) -> int:
        """The position whose last applied record is the last one recorded at or before
        `ts_ns` (0 when the journal starts later, the end when it ended earlier)."""
        pos = 0
        for i, e in enumerate(self.events):  # journal order: sorted but for late records
            if e.ts_ns <= ts_ns:
                pos = i + 1
            elif e.ts_ns > ts_ns + NS:
                break  # a second past it: a late record is never that far behind its place
        return pos

    def seek_time(self, ts_ns: int) -> None:
        """Jump to recorded time `ts_ns`, keeping the play state."""
        self.seek(self.position_at(ts_ns))

    def next_finding(self, direction: int = 1) -> bool:
        """Pause just after the next (direction > 0) or previous record at which a finding
        opened; False (and no move) when there is none that way."""
        with self._lock:
            self._playing = False
            self._dirty = True
            if direction > 0:
                start = self._pos
                while self._pos < len(self.events):
                    if self._apply_next():
                        self._lock.notify_all()
                        return True
                self._seek_locked(start)  # none ahead: stay where we were
                self._lock.notify_all()
                return False
            before = [p for p in self._openings if p < self._pos]
            if not before:
                return False
            self._seek_locked(max(before))
            self._lock.notify_all()
            return True

    def set_speed(self, speed: float) -> None:
        with self._lock:
            self._anchor()
            self.speed = speed
            self._dirty = True
            self._lock.notify_all()

    # ---- internals ------------------------------------------------------------------------------

    def _play_locked(self) -> None:
        self._playing = True
        self._anchor()
        self._dirty = True

    def _anchor(self) -> None:
        """Make the current recorded time correspond to now on the wall clock."""
        if self._pos < len(self.events):
            nxt = self.events[self._pos].ts_ns
            cur = self.events[self._pos - 1].ts_ns if self._pos else nxt
            self._vt_anchor = min(cur, nxt)
        else:
            self._vt_anchor = self.events[-1].ts_ns if self.events else 0
        self._wall_anchor = time.monotonic()

    def _seek_locked(self, position: int) -> None:
        position = max(0, min(position, len(self.events)))
        if position < self._pos:
            self._core = self._factory()
            self._pos = 0
        self._apply_to(position)
        self._dirty = True

    def _apply_to(self, position: int) -> None:
        while self._pos < position:
            self._apply_next()

    def _apply_next(self) -> bool:
        """Apply the next record; True (and the position noted) when a finding opened."""
        out = self._core.feed(self.events[self._pos])
        self._pos += 1
        if out and any(f.status == "open" for f in out):
            self._openings.add(self._pos)
            return True
        return False

    def _virtual_now(self) -> int:
        return self._vt_anchor + int((time.monotonic() - self._wall_anchor) * self.speed * NS)

    def _publish(self, state: HostState) -> None:
        self.published += 1
        for listener in list(self._listeners):
            listener(state)

    def _loop(self) -> None:
        last_publish = 0.0
        while True:
            state: HostState | None = None
            with self._lock:
                if self._stopping:
                    return
                timeout = self.publish_interval_s
                if self._playing:
                    if self._pos >= len(self.events):
                        self._playing = False
                        self._dirty = True
                    else:
                        vt = self._virtual_now()
                        nxt = self.events[self._pos].ts_ns
                        gap_ns = int(self.max_gap_ns * self.speed)  # max_gap_s is wall time
                        if nxt - vt > gap_ns:
                            # A long quiet stretch: jump to max_gap_s (wall) before the next record.
                            self._vt_anchor = nxt - gap_ns
                            self._wall_anchor = time.monotonic()
                            vt = self._vt_anchor
                        n = 0
                        # Bounded batch so that controls stay responsive at high speed.
                        while self._pos < len(self.events) and self.events[self._pos].ts_ns <= vt and n < 20_000:
                            self._core.feed(self.events[self._pos])
                            self._pos += 1
                            n += 1
                            if self._pos in self.stops:
                                self._playing = False  # a chapter: hold here
                                self._dirty = True
                                break
                        if n:
                            self._dirty = True
                        if self._playing and self._core.advance(vt):
                            self._dirty = True
                        if self._playing and self._pos < len(self.events):
                            due = (self.events[self._pos].ts_ns - vt) / NS / max(self.speed, 1e-6)
                            timeout = max(0.0, min(timeout, due))
                now = time.monotonic()
                if self._dirty and now - last_publish >= self.publish_interval_s * 0.5:
                    self._dirty = False
                    last_publish = now
                    state = self._core.snapshot()
                elif state is None and timeout > 0:
                    self._lock.wait(timeout if self._playing or self._dirty else None)
                    continue
            if state is not None:
                self._publish(state)


def events_from(records: Iterable[ev.Event | codec.Header]) -> list[ev.Event]:
    """The events of decoded journal records, recorded findings and headers left out."""
    return [r for r in records if isinstance(r, ev.Event) and not isinstance(r, ev.Finding)]
