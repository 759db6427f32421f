"""ReplayFeed: a journal played through a fresh Correlator, with play/pause/step/seek."""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import pytest

from diag import codec
from diag import events as ev
from diag.common.errors import JournalFormatError
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.runtime.playback import ReplayFeed, load_journal

JOURNAL = Path(__file__).resolve().parents[2] / "fixtures" / "journals" / "demo-lab.jsonl"
MS = 1_000_000


def collect(feed: ReplayFeed) -> tuple[list[HostState], threading.Event]:
    got: list[HostState] = []
    seen = threading.Event()

    def listener(s: HostState) -> None:
        got.append(s)
        seen.set()

    feed.subscribe(listener)
    return got, seen


def wait_for(cond, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return False


class TestReadJournal:
    def test_plain_and_gzip_read_alike(self, tmp_path: Path) -> None:
        """A gzip journal gives the same events and header as the plain one."""
        gz = tmp_path / "j.jsonl.gz"
        gz.write_bytes(gzip.compress(JOURNAL.read_bytes()))
        plain = load_journal(JOURNAL)
        packed = load_journal(gz)
        assert plain[0] == packed[0] and plain[1] == packed[1]
        assert plain[1] is not None and plain[1].hostname == "sriov-lab"

    def test_bad_lines_counted_and_findings_left_out(self, tmp_path: Path) -> None:
        """Damaged lines are counted, not raised; recorded findings are not replayed."""
        f = ev.Finding(ts_ns=5, source="core", finding_id="x", rule="r",
                       severity=ev.Severity.INFO, summary="s")
        p = tmp_path / "j.jsonl"
        p.write_bytes(codec.dumps(codec.Header()) + b"{not json\n"
                      + codec.dumps(ev.ClockTicked(ts_ns=1, source="t")) + codec.dumps(f)
                      + b'{"kind":"clock_ti')
        events, _, stats = load_journal(p)
        assert [e.kind for e in events] == ["clock_ticked"]
        assert stats.bad_lines == 1 and stats.truncated_tail

    def test_missing_or_empty_journal_is_a_titled_error(self, tmp_path: Path) -> None:
        """A missing file or one without events raises JournalFormatError with a hint."""
        with pytest.raises(JournalFormatError):
            load_journal(tmp_path / "nope.jsonl")
        (tmp_path / "empty.jsonl").write_bytes(codec.dumps(codec.Header()))
        with pytest.raises(JournalFormatError):
            load_journal(tmp_path / "empty.jsonl")


class TestControls:
    def test_start_at_publishes_that_state_at_once(self) -> None:
        """start() applies `start_at` records and publishes before returning."""
        feed = ReplayFeed.open(JOURNAL, autoplay=False, start_at=20)
        got, _ = collect(feed)
        feed.start()
        try:
            assert got and got[0].events_total == 20
            st = feed.status()
            assert st.position == 20 and not st.playing and not st.done
        finally:
            feed.stop()

    def test_seek_back_rebuilds_the_same_state(self) -> None:
        """Seeking back then forward gives the state first reached (the core is deterministic)."""
        feed = ReplayFeed.open(JOURNAL, autoplay=False, start_at=25)
        got, _ = collect(feed)
        feed.start()
        try:
            first = got[-1]
            feed.seek(3)
            assert feed.status().position == 3
            feed.seek(25)
            assert wait_for(lambda: got[-1] is not first and got[-1].events_total == 25)
            again = got[-1]
            assert again.devices == first.devices and again.findings == first.findings
        finally:
            feed.stop()

    def test_step_forward_and_back_then_pause(self) -> None:
        """step(n) moves n records and leaves the replay paused."""
        feed = ReplayFeed.open(JOURNAL, autoplay=True, speed=0.001)
        feed.start()
        try:
            assert feed.status().playing
            feed.pause()
            p = feed.status().position
            feed.step(5)
            assert feed.status().position == p + 5 and not feed.status().playing
            feed.step(-2)
            assert feed.status().position == p + 3
        finally:
            feed.stop()

    def test_plays_on_the_recorded_timeline_scaled_by_speed(self) -> None:
        """Records 100 ms apart at speed 10 arrive about 10 ms apart, in order, to the end."""
        events = [ev.ClockTicked(ts_ns=i * 100 * MS, source="t") for i in range(1, 21)]
        feed = ReplayFeed(events, speed=10, publish_interval_s=0.01)
        collect(feed)
        t0 = time.monotonic()
        feed.start()
        try:
            assert wait_for(lambda: feed.status().done, 5)
            took = time.monotonic() - t0
            assert 0.1 < took < 5.0  # 1.9 s of journal at x10 is 0.19 s of wall time (slack: CI load)
            assert wait_for(lambda: not feed.status().playing)
        finally:
            feed.stop()

    def test_long_gaps_are_shortened(self) -> None:
        """An hour of silence plays in about max_gap_s."""
        events = [ev.ClockTicked(ts_ns=1, source="t"), ev.ClockTicked(ts_ns=3600 * 10**9, source="t")]
        feed = ReplayFeed(events, max_gap_s=0.1, publish_interval_s=0.01)
        feed.start()
        try:
            assert wait_for(lambda: feed.status().done, 3)
        finally:
            feed.stop()

    def test_play_at_the_end_starts_over(self) -> None:
        """play() when every record is applied restarts from the first."""
        feed = ReplayFeed.open(JOURNAL, autoplay=False, start_at=10_000, speed=0.001)
        feed.start()
        try:
            assert feed.status().done
            feed.play()
            assert feed.status().position == 0 and feed.status().playing
            feed.set_speed(4)
            assert feed.status().speed == 4
        finally:
            feed.stop()

    def test_correlator_factory_is_used(self) -> None:
        """The feed builds its cores with the given factory (tests pass stand-in rules)."""
        made: list[Correlator] = []

        def factory() -> Correlator:
            made.append(Correlator(rules=[]))
            return made[-1]

        feed = ReplayFeed.open(JOURNAL, autoplay=False, start_at=30, correlator_factory=factory)
        feed.start()
        feed.seek(1)
        feed.stop()
        assert len(made) == 2 and not made[0].snapshot().findings


SESSION = Path(__file__).resolve().parents[2] / "golden" / "core" / "lab-session.events.jsonl"


class TestFindingsAndTime:
    """Postmortem navigation: to a recorded time, and from finding to finding."""

    def _feed(self) -> ReplayFeed:
        events, _, _ = load_journal(SESSION)
        return ReplayFeed(events, autoplay=False)

    @staticmethod
    def _openings(feed: ReplayFeed) -> list[int]:
        """Ground truth from a fresh core: positions just after each record opening a finding."""
        c = Correlator()
        return [i + 1 for i, e in enumerate(feed.events)
                if any(f.status == "open" for f in c.feed(e))]

    def test_next_finding_stops_right_after_each_opening_in_turn(self) -> None:
        """n: pauses just after the record at which a finding opened (the core says so), the
        next call at the next one; past the last it stays put and says False."""
        feed = self._feed()
        truth = self._openings(feed)
        assert len(truth) >= 3
        feed.start()
        try:
            for want in truth:
                assert feed.next_finding(1) and feed.status().position == want
                assert not feed.status().playing
            assert not feed.next_finding(1) and feed.status().position == truth[-1]
            assert feed.next_finding(-1) and feed.status().position == truth[-2]
            assert feed.next_finding(-1) and feed.status().position == truth[-3]
        finally:
            feed.stop()

    def test_previous_finding_after_a_seek_finds_earlier_openings(self) -> None:
        """N after seeking forward (never stepping through) still finds the opening before."""
        feed = self._feed()
        first = self._openings(feed)[0]
        feed.start()
        try:
            feed.seek(first + 5)
            assert feed.next_finding(-1) and feed.status().position <= first + 5
            assert feed.status().position >= first
        finally:
            feed.stop()

    def test_seek_time_lands_after_the_last_record_at_or_before_it(self) -> None:
        """seek_time(t): every record stamped <= t applied, none after; before the journal 0,
        after it the end."""
        feed = self._feed()
        ev_ = feed.events
        feed.start()
        try:
            k = len(ev_) // 2
            t = ev_[k].ts_ns
            feed.seek_time(t)
            pos = feed.status().position
            assert all(e.ts_ns <= t for e in ev_[:pos])
            assert ev_[pos].ts_ns > t
            feed.seek_time(ev_[0].ts_ns - 1)
            assert feed.status().position == 0
            feed.seek_time(max(e.ts_ns for e in ev_) + 1)
            assert feed.status().position == len(ev_)
        finally:
            feed.stop()


def test_playing_holds_at_each_stop_and_play_goes_on() -> None:
    """A guided replay (the demo) pauses by itself right after each stop position, and play()
    goes on from there to the next stop."""
    events, header, _ = load_journal(JOURNAL)
    feed = ReplayFeed(events, header=header, speed=1000, max_gap_s=0.01, stops={5, 12})
    feed.start()
    try:
        assert wait_for(lambda: not feed.status().playing and feed.status().position == 5)
        time.sleep(0.1)
        assert feed.status().position == 5  # it stays there
        feed.play()
        assert wait_for(lambda: not feed.status().playing and feed.status().position == 12)
        feed.play()
        assert wait_for(lambda: feed.status().done)
    finally:
        feed.stop()
