"""Provides what the dashboard expects of a feed beyond SnapshotFeed: optional playback controls.

The TUI never imports the runtime; a replay feed satisfies `Playback` structurally.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


class PlaybackStatus(Protocol):
    """Where a replay is; read by the header on every frame (attribute reads only)."""

    position: int
    """Records applied so far."""
    total: int
    ts_ns: int
    playing: bool
    speed: float
    done: bool


@runtime_checkable
class Playback(Protocol):
    """Controls of a journal replay (play/pause/step/seek/speed)."""

    def status(self) -> PlaybackStatus: ...

    def play(self) -> None: ...

    def pause(self) -> None: ...

    def step(self, n: int = 1) -> None:
        """Apply `n` more records (negative: go back), then pause."""

    def seek(self, position: int) -> None:
        """Jump to record `position` (0 = before the first), keeping the play state."""

    def set_speed(self, speed: float) -> None: ...

    def first_ts_ns(self) -> int:
        """Recorded time of the first record (what `+SECONDS` and a bare time of day mean)."""

    def seek_time(self, ts_ns: int) -> None:
        """Jump to just after the last record stamped at or before `ts_ns`."""

    def next_finding(self, direction: int = 1) -> bool:
        """Pause just after the next (1) or previous (-1) record at which a finding opened;
        False when there is none that way."""
