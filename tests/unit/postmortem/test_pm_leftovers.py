"""A crash while the journal compressed a part leaves a copy beside it (`P.gz.tmp`, or `P.gz`
before `P` was deleted): postmortem reads the part once and says it skipped the copy."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import pytest

from diag import postmortem as pm
from diag.core.correlator import Correlator
from diag.sinks.journal import JournalSink
from diag.testing import bound


def _journal(d: Path) -> Path:
    """A journal rotated into compressed parts (the way the agent writes it), then closed."""
    core = Correlator(rules=[])
    sink = JournalSink(d / "journal.jsonl", max_bytes=8192, state=core.snapshot)
    now = time.time_ns()
    for i in range(400):
        e = bound(f"0000:01:{i % 8:02x}.0", "vfio-pci" if i % 2 else "igbvf", now + i * 1000)
        core.feed(e)
        sink.write(e)
    sink.close()
    deadline = time.monotonic() + 10
    while list(d.glob("journal.jsonl.??????")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the gzip thread finishes the last parts
    parts = sorted(d.glob("journal.jsonl.*.gz"))
    assert len(parts) >= 3
    return parts[1]


@pytest.mark.parametrize("left", ["gz.tmp", "gz"])
def test_a_compression_leftover_is_skipped_and_named(tmp_path: Path, left: str) -> None:
    """Part P restored beside its leftover (a cut P.gz.tmp, or the finished P.gz): the report
    has as many events as the clean journal, and names the copy it skipped."""
    clean = tmp_path / "clean"
    clean.mkdir()
    gz = _journal(clean)
    crashed = tmp_path / "crashed"
    shutil.copytree(clean, crashed)
    part = crashed / gz.name[: -len(".gz")]
    part.write_bytes(gzip.decompress(gz.read_bytes()))  # the plain part, not deleted yet
    if left == "gz.tmp":
        (crashed / gz.name).unlink()
        blob = crashed / (gz.name + ".tmp")
        blob.write_bytes(gz.read_bytes()[: len(gz.read_bytes()) * 2 // 3])  # cut mid-write
        copy = blob
    else:
        copy = crashed / gz.name
    want = pm.run([str(clean)], pm.Options())
    got = pm.run([str(crashed)], pm.Options())
    assert got.events_total == want.events_total
    (skipped,) = [i for i in got.inputs if i.path == str(copy)]
    assert skipped.format == "duplicate" and skipped.stats.notes == [
        f"an unfinished compressed copy of {part} (the agent stopped while it compressed that "
        f"part): {part} is read instead"]
    assert not got.unreadable and not got.not_fully_read


def test_a_lone_leftover_is_read(tmp_path: Path) -> None:
    """A P.gz.tmp whose part is gone (copied alone) is the only copy: it is read, marked cut."""
    d = tmp_path / "j"
    d.mkdir()
    gz = _journal(d)
    tmp = d / (gz.name + ".tmp")
    gz.rename(tmp)
    tmp.write_bytes(tmp.read_bytes()[:-40])
    rep = pm.run([str(tmp)], pm.Options())
    (inp,) = rep.inputs
    assert inp.format == "journal" and inp.stats.truncated and rep.events_total > 0
