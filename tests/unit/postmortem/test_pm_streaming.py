"""The replay's fast paths give what the simple ones gave: blocks of lines, batch decoding, the segment merge, the lazy timeline keeper."""

from __future__ import annotations

import heapq
import random
from collections import deque
from pathlib import Path

import pytest

from diag import codec
from diag import events as ev
from diag.importers import MAX_LINE, FileStats, iter_blocks, iter_lines
from diag.importers.journal import parse_batches, parse_journal
from diag.postmortem.replay import CONTEXT, Segment, _Keeper, _merge


def _bound(ts: int, bdf: str = "0000:01:10.0") -> ev.Event:
    return ev.DeviceBound(ts_ns=ts, source="uevent", bdf=bdf, driver="vfio-pci")


def _hostile_journal() -> bytes:
    """Good events, a blank line, bad lines (malformed, wrong type, unknown kind), two headers
    (the second opens a restatement of 2 records), an overlong line, and a cut tail."""
    good = [codec.dumps(_bound(10 + i)) for i in range(3000)]
    lines = [codec.dumps(codec.Header(boot_id="b", started_ns=1)), *good[:1000], b"\n",
             b'{"kind":"device_bound","ts_ns":"oops"}\n', *good[1000:1500],
             b'{"kind":"no_such_kind","ts_ns":1}\n', b"{not json\n",
             codec.dumps(codec.Header(boot_id="b", started_ns=1, part=1, snapshot_records=2)),
             *good[1500:2500], b'{"kind":"device_bound","x":"' + b"y" * (2 * MAX_LINE) + b'"}\n',
             *good[2500:]]
    return b"".join(lines) + b'{"kind":"device_unbound","ts_ns":99,"sour'


@pytest.mark.parametrize("skip", [False, True])
def test_blocks_decoded_in_batches_give_the_events_and_counts_of_the_line_reader(
        tmp_path: Path, skip: bool) -> None:
    """Every good event, bad line, header, skipped restatement and the cut tail as line by line."""
    p = tmp_path / "j.jsonl"
    p.write_bytes(_hostile_journal())
    st_a, hd_a, fs_a = codec.ReadStats(), [], FileStats(str(p))
    by_line = list(parse_journal(iter_lines(str(p), fs_a, None), st_a, hd_a, skip_restatement=skip))
    st_b, hd_b, fs_b = codec.ReadStats(), [], FileStats(str(p))
    batches = list(parse_batches(iter_blocks(str(p), fs_b, None), st_b, hd_b,
                                 skip_restatement=skip))
    assert len(batches) > 1  # the file is read in several blocks
    assert [e for b in batches for e in b] == by_line
    assert len(by_line) == (2998 if skip else 3000)
    assert (st_b.lines, st_b.records, st_b.bad_lines, st_b.first_bad, st_b.truncated_tail) == \
        (st_a.lines, st_a.records, st_a.bad_lines, st_a.first_bad, st_a.truncated_tail)
    assert st_b.bad_lines == 4 and st_b.truncated_tail  # 3 bad + the cut-down overlong line
    assert hd_b == hd_a and len(hd_b) == 2
    assert fs_b.notes == fs_a.notes and any("longer than" in n for n in fs_b.notes)


def test_a_newer_header_in_a_block_stops_the_batches_after_what_came_before_it() -> None:
    """Records before a newer schema's header in the same block are given, then the error."""
    block = codec.dumps(_bound(1)) + b'{"kind":"header","schema":99}\n' + codec.dumps(_bound(2))
    got: list[object] = []
    with pytest.raises(Exception, match="schema 99"):
        for batch in codec.iter_batches([block]):
            got.extend(batch)
    assert got == [_bound(1)]


def _segments(stream: list[ev.Event], idx: int, size: int) -> list[Segment]:
    return [(idx, k, stream[k:k + size]) for k in range(0, len(stream), size)]


@pytest.mark.parametrize("seed", range(40))
def test_the_segment_merge_gives_the_order_of_a_heap_merge_of_items(seed: int) -> None:
    """Sorted, overlapping, disjoint (rotated parts), tied and out-of-order inputs: the same
    events, inputs and sequence numbers in the same order as heapq.merge of their items."""
    rnd = random.Random(seed)
    inputs = []
    for idx in range(rnd.randint(2, 5)):
        start = rnd.choice([0, 1000 * idx, rnd.randint(0, 500)])
        stamps = sorted(start + rnd.randint(0, 300) for _ in range(rnd.randint(0, 60)))
        if rnd.random() < 0.3 and len(stamps) > 3:  # an input placed a little out of order
            stamps[1], stamps[-2] = stamps[-2], stamps[1]
        inputs.append([_bound(t, f"0000:01:{idx:02x}.0") for t in stamps])
    items = heapq.merge(*[[(e.ts_ns, idx, n, e) for n, e in enumerate(s)]
                          for idx, s in enumerate(inputs)])
    expect = [(idx, n, e) for _, idx, n, e in items]
    streams = [iter(_segments(s, idx, rnd.randint(1, 20))) for idx, s in enumerate(inputs)]
    got = [(idx, k, e) for idx, n0, seg in _merge(streams) for k, e in enumerate(seg, n0)]
    assert got == expect


class _SimpleKeeper:
    """The keeper before the lazy ring (main at f760d76), as the reference: every entry kept
    while they fit, then the head, each finding with its context, and the tail."""

    def __init__(self, limit: int) -> None:
        self.limit, self.seq, self.items, self.fits = limit, 0, [], True
        quarter = max(1, limit // 4)
        self.head_n = quarter
        self.tail: deque[tuple[int, object]] = deque(maxlen=quarter)
        self.context = min(CONTEXT, max(1, limit // 16))
        self.pre: deque[tuple[int, object]] = deque(maxlen=self.context)
        self.kept: list[tuple[int, object]] = []
        self.kept_cap = max(0, limit - 2 * quarter)
        self.after = 0

    def add(self, item: tuple[int, int, int, object]) -> None:
        self.seq += 1
        rec = (self.seq, item)
        if self.fits:
            self.items.append(rec)
            if len(self.items) > self.limit:
                self.fits = False
                rest = self.items[self.head_n:]
                self.items = self.items[: self.head_n]
                for r in rest:
                    self._stream(r)
            return
        self._stream(rec)

    def _stream(self, rec: tuple[int, tuple[int, int, int, object]]) -> None:
        self.tail.append(rec)
        room = self.kept_cap - len(self.kept)
        if rec[1][1] < 0 and room > 0:
            before = list(self.pre)[-(room - 1):] if room > 1 else []
            self.kept.extend(before)
            self.pre.clear()
            self.kept.append(rec)
            self.after = self.context
        elif self.after and room > 0:
            self.kept.append(rec)
            self.after -= 1
        else:
            self.pre.append(rec)

    def result(self) -> list[tuple[int, object]]:
        if self.fits:
            return self.items
        merged = dict(self.items)
        merged.update(self.kept)
        merged.update(self.tail)
        return sorted(merged.items())


@pytest.mark.parametrize("limit", [1, 2, 3, 5, 8, 16, 17, 40, 100, 300])
def test_the_lazy_keeper_keeps_what_the_simple_keeper_kept(limit: int) -> None:
    """Random timelines (findings none, sparse, dense, in bursts) of lengths around the limit
    and far past it: the same entries, in the same order, as the keeper that decided per entry."""
    rnd = random.Random(limit)
    for n in (limit - 1, limit, limit + 1, 3 * limit, 50 * limit + 7):
        for density in (0.0, 0.005, 0.05, 0.3, 0.9, -1.0):
            for _ in range(4):
                simple, lazy = _SimpleKeeper(limit), _Keeper(limit)
                for k in range(max(0, n)):
                    burst = density < 0 and k % 97 < rnd.randint(0, 30)  # clusters of findings
                    finding = burst or rnd.random() < density
                    item = (k, -1 if finding else 0, k, f"e{k}")
                    simple.add(item)
                    if finding:
                        lazy.add(item)  # type: ignore[arg-type]
                    else:  # what the loop of _Feed.run does per event
                        lazy.seq += 1
                        lazy.ring.append((lazy.seq, *item))  # type: ignore[arg-type]
                        if lazy.seq == lazy.trigger:
                            lazy.fire()
                expect = [(seq, *item) for seq, item in simple.result()]  # type: ignore[misc]
                assert lazy.result() == expect, (n, density)
