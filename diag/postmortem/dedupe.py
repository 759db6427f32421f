"""Provides Dedupe: the copies of one happening that several inputs saw, merged into one event.

Two udevadm captures of one session, the agent's journal and udevadm, a journald export and
containerd's log: each sees the same kernel or Kata happening. A copy from another input with
the same identity, no conflicting field and a stamp within the pair's window (twice their
alignment uncertainty, at least 50 ms, at most 1 s) is dropped, and when it says more (a
driver name, an ifindex) it replaces the waiting one.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from diag import codec
from diag import events as ev

DEDUPE_MIN_NS = 50_000_000
DEDUPE_MAX_NS = 1_000_000_000
"""Copies of one happening in two inputs are merged within 2x the alignment uncertainty,
at least 50 ms and at most 1 s."""

Item = tuple[int, int, int, ev.Event]
"""(stamp, input index, sequence, event): heap-mergeable without comparing events."""



def _identity(e: ev.Event) -> tuple[object, ...] | None:
    """What two inputs' copies of one happening share (None: never merged)."""
    t = type(e)
    if t is ev.DeviceBound or t is ev.DeviceUnbound or t is ev.DeviceAdded or \
            t is ev.DeviceRemoved or t is ev.DeviceChanged:
        return (t, e.bdf)  # type: ignore[attr-defined]
    if t is ev.NetdevAdded or t is ev.NetdevRemoved:
        return (t, e.bdf, e.ifname)  # type: ignore[attr-defined]
    if t is ev.VfioDeviceAdded or t is ev.VfioDeviceRemoved:
        return (t, e.bdf, e.group)  # type: ignore[attr-defined]
    if t is ev.LinkChanged:
        assert isinstance(e, ev.LinkChanged)
        return (t, e.netns.inode, e.ifindex, e.ifname, e.operstate, e.carrier, e.admin_up, e.mac)
    if t is ev.LinkRemoved:
        assert isinstance(e, ev.LinkRemoved)
        return (t, e.netns.inode, e.ifindex, e.ifname)
    if t is ev.LogLineMatched:
        assert isinstance(e, ev.LogLineMatched)
        return (t, e.signature, e.text, e.sandbox_id)
    if t is ev.DriverRegistered or t is ev.DriverUnregistered:
        return (t, e.driver)  # type: ignore[attr-defined]
    if t is ev.SysfsWriteObserved:
        assert isinstance(e, ev.SysfsWriteObserved)
        if e.mode == ev.KATA_LOG:  # one Kata line read from two places (kata syslog, containerd)
            return (t, e.bdf, e.control, e.value, e.actor.pid)
    return None


_UNCOMPARED = frozenset(("kind", "ts_ns", "source", "previous_driver", "origin", "pid", "level"))


def _compatible(a: dict[str, object], b: dict[str, object]) -> bool:
    """No field both copies know differs (a driver name one of them lacks is fine)."""
    for k in a.keys() & b.keys():
        if k in _UNCOMPARED:
            continue
        va, vb = a[k], b[k]
        if va in ("", None) or vb in ("", None):
            continue
        if va != vb:
            return False
    return True


def _same_line_elsewhere(a: ev.Event, b: ev.Event) -> bool:
    """One log line read from two places of one input (Kata's syslog and containerd's unit)."""
    if isinstance(a, ev.SysfsWriteObserved) and isinstance(b, ev.SysfsWriteObserved):
        return a.mode == ev.KATA_LOG and b.mode == ev.KATA_LOG and a.ts_ns == b.ts_ns
    return isinstance(a, ev.LogLineMatched) and isinstance(b, ev.LogLineMatched) and \
        a.origin != b.origin


def _known(rec: dict[str, object]) -> int:
    return sum(1 for v in rec.values() if v not in ("", None))


class Dedupe:
    """Merges the copies of one happening that several inputs saw (two udevadm captures of one
    session, the agent's journal and udevadm, a journald export and containerd's log).

    Events wait up to `window_ns`; a copy from another input with the same identity, no
    conflicting field and a stamp within the pair's window (twice their alignment uncertainty,
    at least 50 ms, at most 1 s) is dropped, and when it says more (a driver name, an ifindex)
    it replaces the waiting one. Copies within one input are merged only for a log line read
    from two origins (Kata's `kata` syslog lines repeated in containerd's unit).
    """

    def __init__(self, uncertainty: dict[int, int]) -> None:
        self.unc = uncertainty
        self.window = DEDUPE_MAX_NS if not uncertainty else min(
            DEDUPE_MAX_NS, max(DEDUPE_MIN_NS, 4 * max(uncertainty.values())))
        self.pending: deque[list[Any]] = deque()  # [ts, idx, n, event, identity, record]
        self.by_ident: dict[tuple[object, ...], deque[list[Any]]] = {}
        """The waiting events by identity, so a new one is compared with its like only (a
        dense journal beside an imprecisely aligned capture holds thousands in the window)."""
        self.dropped = 0

    def _pair_window(self, a: int, b: int) -> int:
        w = 2 * (self.unc.get(a, 0) + self.unc.get(b, 0))
        return min(DEDUPE_MAX_NS, max(DEDUPE_MIN_NS, w))

    def _release(self, out: list[Item], until: int | None) -> None:
        pend = self.pending
        while pend and (until is None or pend[0][0] < until):
            p = pend.popleft()
            if p[4] is not None:
                same = self.by_ident[p[4]]
                same.popleft()  # the oldest of its identity: they wait in stamp order
                if not same:
                    del self.by_ident[p[4]]
            out.append((p[0], p[1], p[2], p[3]))

    def push(self, item: Item) -> list[Item]:
        ts, idx, n, e = item
        out: list[Item] = []
        self._release(out, ts - self.window)
        ident = _identity(e)
        if ident is not None:
            rec: dict[str, object] | None = None
            for p in self.by_ident.get(ident, ()):
                if ts - p[0] > self._pair_window(p[1], idx):
                    continue
                if p[1] == idx and not _same_line_elsewhere(p[3], e):
                    continue
                if rec is None:
                    rec = codec.to_record(e)
                if p[5] is None:
                    p[5] = codec.to_record(p[3])
                if not _compatible(p[5], rec):
                    continue
                self.dropped += 1
                if _known(rec) > _known(p[5]):
                    p[3], p[5] = replace(e, ts_ns=p[0]), rec
                return out
        entry = [ts, idx, n, e, ident, None]
        self.pending.append(entry)
        if ident is not None:
            self.by_ident.setdefault(ident, deque()).append(entry)
        return out

    def flush(self) -> list[Item]:
        out: list[Item] = []
        self._release(out, None)
        return out


def deduped(items: Iterator[Item], dd: Dedupe) -> Iterator[Item]:
    for item in items:
        yield from dd.push(item)
    yield from dd.flush()

