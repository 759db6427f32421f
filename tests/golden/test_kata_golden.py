"""Whole-output golden files: the kata source's first round on each fixture host, as journal records.

Regenerate after an intended change with `.venv/bin/pytest tests/golden/test_kata_golden.py
--update-goldens` and review the diff: tests/golden/kata/<case>.jsonl is what the journal would
hold for that host (timestamps fixed at 0).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from diag import codec
from diag.common.paths import HostPaths
from diag.sources.kata.source import KataWatcher

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "kata"
GOLDEN = Path(__file__).resolve().parent / "kata"
CASES = sorted(p.name for p in FIX.iterdir() if p.is_dir())


@pytest.mark.parametrize("case", CASES)
def test_first_round(case: str, update_goldens: bool) -> None:
    """The events of one full round on the fixture host equal the committed golden file, byte for byte."""
    w = KataWatcher(HostPaths.at(FIX / case), {"journal": False, "kmsg": False})
    events = w.step(0, 0.0, force=True)
    got = b"".join(codec.dumps(e) for e in events)
    for e in events:  # every record reads back to the same event
        assert codec.loads(codec.dumps(e)) == e
    path = GOLDEN / f"{case}.jsonl"
    if update_goldens or not path.exists():
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(got)
    assert got == path.read_bytes()
