"""The core on the whole recorded lab session: findings JSON byte-identical to the committed file.

Input: tests/golden/core/lab-session.events.jsonl, a journal of the lab's real uevent/rtnetlink
datagrams decoded by the sources' decoders, plus the writes (attributed), Kata lines, a loss
and clock ticks (built by tests/unit/core/corelab.py `lab_session`). Output: every finding
transition as journal lines. Regenerate both with `pytest tests/golden --update-goldens` and
review the diff.
"""

from __future__ import annotations

from pathlib import Path

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from tests.unit.core import corelab

HERE = Path(__file__).resolve().parent

EVENTS = HERE / "core" / "lab-session.events.jsonl"
FINDINGS = HERE / "core" / "lab-session.findings.jsonl"


def _journal(events: list[ev.Event]) -> bytes:
    header = codec.Header(agent_version="golden", hostname="sriov-lab", kernel="6.12.95+deb12-amd64",
                          started_ns=events[0].ts_ns)
    return codec.dumps(header) + b"".join(codec.dumps(e) for e in events)


def _replay(journal: bytes) -> bytes:
    c = Correlator()
    out = []
    for rec in codec.iter_records(journal.splitlines(keepends=True)):
        if isinstance(rec, ev.Event):
            out.extend(codec.dumps(f) for f in c.feed(rec))
    return b"".join(out)


def test_recorded_stream_is_the_lab_session(update_goldens: bool) -> None:
    """The committed input journal is what the lab recordings decode to today."""
    now = _journal(corelab.lab_session())
    if update_goldens:
        EVENTS.write_bytes(now)
    assert EVENTS.read_bytes() == now


def test_findings_match_the_golden_file(update_goldens: bool) -> None:
    """Replaying the journal gives byte-identical findings to the committed golden file."""
    got = _replay(EVENTS.read_bytes())
    if update_goldens:
        FINDINGS.write_bytes(got)
    assert got, "the session must raise findings"
    assert FINDINGS.read_bytes() == got


def test_golden_findings_cover_the_story() -> None:
    """The golden session raises the headline rules, and every finding ends resolved."""
    last: dict[str, ev.Finding] = {}
    for rec in codec.iter_records(FINDINGS.read_bytes().splitlines(keepends=True)):
        assert isinstance(rec, ev.Finding)
        last[rec.finding_id] = rec
    rules = {f.rule for f in last.values()}
    assert {"vfio-bind-coldplug-disabled", "kata-known-error", "vfio-bind-unexpected-actor",
            "driver-flapping", "kata-config-invalid", "event-loss"} <= rules
    assert all(f.status == "resolved" for f in last.values() if f.rule != "kata-config-invalid")
