"""`vfiowatch tui --replay`, `vfiowatch demo` and `vfiowatch tui`: the CLI hands the app the right feed."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from diag import cli
from diag.commands import demo
from diag.commands import tui as tui_command
from diag.runtime.playback import ReplayFeed
from diag.tui.app import VfioWatchApp

JOURNAL = Path(__file__).resolve().parents[1] / "fixtures" / "journals" / "demo-lab.jsonl"


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[VfioWatchApp]:
    """Capture the app the CLI would run instead of taking over the terminal (pytest's stdin
    is not one: the no-terminal refusal is tested on the real binary in test_terminal.py)."""
    apps: list[VfioWatchApp] = []
    monkeypatch.setattr(VfioWatchApp, "run", lambda self, *a, **k: apps.append(self))
    monkeypatch.setattr(tui_command, "require_terminal", lambda: None)
    return apps


def test_replay_of_a_gzip_journal(launched: list[VfioWatchApp], tmp_path: Path) -> None:
    """--replay reads a .gz journal; the header's host and kernel reach the app; --speed is used."""
    gz = tmp_path / "j.jsonl.gz"
    gz.write_bytes(gzip.compress(JOURNAL.read_bytes()))
    assert cli.main(["tui", "--replay", str(gz), "--speed", "4", "--paused"]) == 0
    app = launched[0]
    assert isinstance(app.feed, ReplayFeed) and app.feed.speed == 4 and not app.feed.autoplay
    assert (app.hostname, app.kernel, app.mode) == ("sriov-lab", "6.12.95+deb12-amd64", "REPLAY")


def test_demo_plays_the_bundled_journal(launched: list[VfioWatchApp]) -> None:
    """`vfiowatch demo` plays diag/data/demo.jsonl, shipped inside the package."""
    assert demo.demo_journal_path().is_file()
    assert cli.main(["demo", "--at-end"]) == 0
    app = launched[0]
    assert app.mode == "DEMO" and isinstance(app.feed, ReplayFeed)
    assert app.feed.start_at == len(app.feed.events)


def test_missing_journal_is_a_titled_error(launched: list[VfioWatchApp], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A journal that cannot be read exits non-zero with a message and a hint, no traceback."""
    assert cli.main(["tui", "--replay", str(tmp_path / "nope.jsonl")]) != 0
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err
    assert not launched


def test_live_hands_the_app_a_feed_that_builds_the_runtime_later(launched: list[VfioWatchApp]) -> None:
    """`vfiowatch tui` gives the app a SnapshotFeed at once; the sources start behind it."""
    assert cli.main(["tui"]) == 0
    app = launched[0]
    assert app.mode == "LIVE" and app.feed.__class__.__name__ == "_BackgroundLiveFeed"


@pytest.mark.parametrize("speed", ["0", "-1", "fast"])
def test_bad_speed_is_refused(speed: str) -> None:
    """--speed must be a positive number."""
    with pytest.raises(SystemExit):
        cli.main(["tui", "--replay", str(JOURNAL), "--speed", speed])


def test_at_opens_paused_at_that_recorded_time(launched: list[VfioWatchApp]) -> None:
    """--at +SECONDS (or a time of day) opens paused with every record up to that time applied."""
    from diag.runtime.playback import load_journal
    events, _, _ = load_journal(JOURNAL)
    t = events[10].ts_ns
    offset = (t - events[0].ts_ns) / 1e9
    assert cli.main(["tui", "--replay", str(JOURNAL), "--at", f"+{offset:.9f}"]) == 0
    feed = launched[0].feed
    assert isinstance(feed, ReplayFeed) and not feed.autoplay
    assert feed.start_at == feed.position_at(t) and feed.start_at >= 11


def test_bad_at_is_a_titled_error(launched: list[VfioWatchApp],
                                  capsys: pytest.CaptureFixture[str]) -> None:
    """An unreadable --at exits non-zero naming the accepted forms, no traceback."""
    assert cli.main(["tui", "--replay", str(JOURNAL), "--at", "teatime"]) != 0
    err = capsys.readouterr().err
    assert "teatime" in err and "HH:MM" in err and "Traceback" not in err
    assert not launched
