"""The [faults] switch: parsed and checked by file and line, and each fault fires exactly as set
(the journal's writes fail then recover in-band; a source crashes once and comes back)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.errors import ConfigError
from diag.common.faults import Countdown, Faults, Share
from diag.core.correlator import Correlator
from diag.runtime import Pipeline, PipelineOptions
from diag.runtime.settings import parse_text
from diag.sinks.journal import JournalSink, journal_records
from diag.sources import Availability, Emit
from diag.testing import ListSink, bound


def test_the_table_is_read_into_faults() -> None:
    """Every key of [faults] reaches Faults; no table breaks nothing."""
    cfg = parse_text('[faults]\nuevent_drop_percent = 25\njournal_fail_writes = 2\n'
                     'journal_fail_after = 3\ncrash_source = "uevent"\ncrash_after_s = 0.5\n', "f")
    assert cfg.faults == Faults(25.0, 2, 3, "uevent", 0.5) and cfg.faults.active
    assert cfg.faults.describe()["crash_source"] == "uevent"
    assert not parse_text("[core]\n", "f").faults.active


@pytest.mark.parametrize(("text", "says"), [
    ("[faults]\n\ndrop_everything = 1\n", "c.toml:3: unknown key faults.drop_everything"),
    ("[faults]\nuevent_drop_percent = 101\n", "c.toml:2: faults.uevent_drop_percent = 101"),
    ("[faults]\njournal_fail_writes = -1\n", "c.toml:2: faults.journal_fail_writes = -1"),
    ("[faults]\njournal_fail_writes = true\n", "c.toml:2: faults.journal_fail_writes = True"),
    ("[faults]\ncrash_source = 3\n", "c.toml:2: faults.crash_source = 3"),
    ("faults = 3\n", "c.toml:1: faults must be a table"),
])
def test_a_bad_fault_names_the_file_line_and_key(text: str, says: str) -> None:
    """Wrong keys, types and ranges are refused with file:line and the allowed keys."""
    with pytest.raises(ConfigError) as err:
        parse_text(text, "c.toml")
    assert err.value.message.startswith(says), err.value.message
    assert "[faults] is for tests" in err.value.hint


def test_a_share_drops_exactly_that_many_of_every_hundred() -> None:
    """25 % of 1,000 calls is 250 hits, every fourth; 0 % none, 100 % all."""
    s = Share(25)
    hits = [s() for _ in range(1000)]
    assert sum(hits) == 250 == s.hits and hits[:8] == [False, False, False, True] * 2
    assert not any(Share(0)() for _ in range(100))
    assert all(Share(100)() for _ in range(100))


def test_a_countdown_fails_after_then_recovers() -> None:
    """after=2, times=3: no, no, yes, yes, yes, then no for good."""
    c = Countdown(2, 3)
    assert [c() for _ in range(8)] == [False, False, True, True, True, False, False, False]


def test_failing_journal_writes_are_dropped_counted_and_told_in_band(tmp_path: Path) -> None:
    """journal_fail_writes = 2 after 3: the agent's writes fail with EIO twice, the records of
    those attempts (and any while waiting to retry) are dropped and counted; the next write
    carries EventsLost(journal, count, EIO) and the state restated; nothing else is lost."""
    reports: list[tuple[str, str]] = []
    core = Correlator(rules=[])
    sink = JournalSink(tmp_path / "j.jsonl", state=core.snapshot, retry_interval_s=0.0,
                       report=lambda lvl, e, **f: reports.append((lvl, e)),
                       faults=Faults(journal_fail_writes=2, journal_fail_after=3))
    now = time.time_ns()
    events = [bound("0000:01:00.0", "igbvf" if i % 2 else "vfio-pci", now + i) for i in range(6)]
    for e in events:
        core.feed(e)
        sink.write(e)
    sink.close()
    recs, st = journal_records(tmp_path / "j.jsonl")
    assert st.bad_lines == 0 and not st.truncated_tail and sink.stats.write_errors == {"EIO": 2}
    (lost,) = [r for r in recs if isinstance(r, ev.EventsLost)]
    assert lost.lost_source == "journal" and lost.count == 2 and "EIO" in lost.reason
    written = [r for r in recs if isinstance(r, ev.DeviceBound) and r.source != "journal"]
    # attempts: header (1), events 0 and 1 (2, 3): written; events 2 and 3 fail; 4, 5 written
    assert [r.ts_ns for r in written if r.ts_ns >= now] == [now, now + 1, now + 4, now + 5]
    assert ("error", "journal_write_failed") in reports and ("info", "journal_write_resumed") in reports


class _Counting:
    """A source that counts its runs and emits one event per run, then waits for stop."""

    name = "counted"

    def __init__(self) -> None:
        self.runs = 0

    def probe(self) -> Availability:
        return Availability(True)

    def run(self, emit: Emit, stop: threading.Event) -> None:
        self.runs += 1
        emit(bound("0000:01:00.0", f"run{self.runs}", time.time_ns(), source=self.name))
        stop.wait()


def test_an_injected_crash_is_reported_and_the_source_restarts_once() -> None:
    """crash_source: the source's first run is stopped 0.1 s in and raises InjectedFault; the
    runtime reports it down with the reason, restarts it, and it runs on until the stop."""
    src = _Counting()
    sink = ListSink()
    p = Pipeline([src], sinks=[sink], correlator=Correlator(rules=[]),
                 options=PipelineOptions(retry_initial_s=0.05, merge_window_ns=1_000_000,
                                         faults=Faults(crash_source="counted", crash_after_s=0.1)))
    p.start()
    time.sleep(0.6)
    p.stop()
    states = [(s.up, s.reason) for s in sink.items if isinstance(s, ev.SourceStateChanged)]
    assert src.runs == 2 and p.stats.sources["counted"].restarts == 1
    assert states[0][0] and not states[1][0] and states[2][0] and states[-1] == (False, "stopped")
    assert states[1][1] == "crashed: InjectedFault: injected crash 0.1 s in ([faults] crash_source)"
    assert [e.driver for e in sink.items if isinstance(e, ev.DeviceBound)] == ["run1", "run2"]
