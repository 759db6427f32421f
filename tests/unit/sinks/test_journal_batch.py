"""A batching journal: the lines of one batch of the core thread go out together, at end_batch."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.runtime import Pipeline, PipelineOptions
from diag.sinks.journal import JournalSink, journal_records
from diag.testing import ScriptedSource, bound


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines()


def test_lines_wait_for_end_batch_and_go_out_in_one_write(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes are kept until end_batch(), which writes them all with one os.write; flush and
    close write what is kept too."""
    path = tmp_path / "j.jsonl"
    sink = JournalSink(path, batch=True)
    start = _lines(path)
    writes: list[int] = []
    real = os.write

    def counting(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real(fd, data)

    monkeypatch.setattr(os, "write", counting)
    events = [bound(f"0000:00:0{i}.0", "vfio-pci", 1_000 + i, source="uevent") for i in range(3)]
    for e in events:
        sink.write(e)
    assert _lines(path) == start and writes == []
    sink.end_batch()
    assert len(writes) == 1
    assert _lines(path) == start + [codec.dumps(e).rstrip(b"\n") for e in events]
    sink.write(events[0])
    sink.close()
    recs, st = journal_records(path)
    assert st.bad_lines == 0 and [r for r in recs if isinstance(r, ev.DeviceBound)] == [*events, events[0]]


def test_the_runtime_ends_each_batch_so_lines_are_written_before_it_waits(tmp_path: Path) -> None:
    """Through the pipeline: every event is in the file once the runtime is idle, before any
    flush or stop."""
    path = tmp_path / "j.jsonl"
    now = time.time_ns()
    src = ScriptedSource("s", [bound("0000:00:01.0", "x", now + i, source="s") for i in range(50)])
    sink = JournalSink(path, batch=True)
    p = Pipeline([src], sinks=[sink], correlator=Correlator(rules=[]),
                 options=PipelineOptions(merge_window_ns=0, flush_interval_s=3600))
    p.start()
    try:
        assert p.wait_idle(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and path.read_bytes().count(b'"source":"s"') < 50:
            time.sleep(0.01)
        assert path.read_bytes().count(b'"source":"s"') == 50
    finally:
        p.stop()


def test_a_batch_larger_than_a_part_is_cut_where_the_part_rotates(tmp_path: Path) -> None:
    """A batch that crosses `max_bytes` still makes parts of about that size (each a whole,
    self-contained file), not one oversized part."""
    path = tmp_path / "j.jsonl"
    sink = JournalSink(path, batch=True, max_bytes=16 * 1024, keep=100)
    events = [bound("0000:00:01.0", "vfio-pci" if i % 2 else "igbvf", 1_000 + i, source="uevent")
              for i in range(1500)]
    for e in events:
        sink.write(e)
    sink.end_batch()
    sink.close()
    deadline = time.monotonic() + 10  # the parts are gzipped in the background
    while time.monotonic() < deadline and any(
            not p.name.endswith((".gz", ".lock")) for p in tmp_path.glob("j.jsonl.*")):
        time.sleep(0.05)
    parts = sorted(tmp_path.glob("j.jsonl.*.gz"))
    assert len(parts) >= 5
    got = []
    for p in [*parts, path]:
        recs, st = journal_records(p)
        assert st.bad_lines == 0 and isinstance(recs[0], codec.Header)
        got += [r for r in recs if isinstance(r, ev.DeviceBound) and r.source == "uevent"
                and r.ts_ns >= 1_000]
    assert sorted(got, key=lambda r: r.ts_ns) == events
