"""parse_when: the one parser of the times an operator types (journal jumps, postmortem bounds)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from diag.common.when import NS, parse_when

BASE = int(datetime(2026, 11, 27, 10, 40, 0, tzinfo=UTC).timestamp()) * NS + 5  # first record


def at(h: int, m: int, s: int, *, day: int = 27) -> int:
    return int(datetime(2026, 11, day, h, m, s, tzinfo=UTC).timestamp()) * NS


@pytest.mark.parametrize(("text", "want"), [
    ("10:41:07", at(10, 41, 7)),
    ("10:41", at(10, 41, 0)),
    ("10:41:07.118", at(10, 41, 7) + 118_000_000),
    ("10:41:07.118000123", at(10, 41, 7) + 118_000_123),
    ("2026-11-27T10:41:07Z", at(10, 41, 7)),
    ("2026-11-27T10:41:07.118000123Z", at(10, 41, 7) + 118_000_123),
    ("2026-11-27 11:41:07+01:00", at(10, 41, 7)),
    ("2026-11-27T10:41:07", at(10, 41, 7)),
    ("+90", BASE + 90 * NS),
    ("+1.5", BASE + 1_500_000_000),
    ("+1m30s", BASE + 90 * NS),
    ("+2h", BASE + 7200 * NS),
])
def test_accepted_forms(text: str, want: int) -> None:
    """Time of day (the journal's day, UTC), ISO 8601 with or without zone, and offsets."""
    assert parse_when(text, BASE) == want


def test_time_of_day_before_the_start_is_the_next_day() -> None:
    """A journal started at 23:50 that crosses midnight: 00:05 is the day after."""
    base = at(23, 50, 0)
    assert parse_when("00:05", base) == at(0, 5, 0, day=28)


@pytest.mark.parametrize("text", ["", "+", "25:00", "10:61", "yesterday", "10:41:07pm", "+1x"])
def test_bad_input_names_the_forms(text: str) -> None:
    """Anything else is a ValueError that says which forms are accepted."""
    with pytest.raises(ValueError, match="HH:MM"):
        parse_when(text, BASE)


@pytest.mark.parametrize("base", [None, BASE])
def test_absolute_forms_mean_the_same_with_or_without_a_start(base: int | None) -> None:
    """Epoch seconds and ISO 8601 (offsets, ` UTC`, a bare date) read the same for postmortem
    (no start) and the dashboard (a journal's start): one parser for every command."""
    assert parse_when("1795791172.5", base) == 1_795_791_172_500_000_000
    assert parse_when("2026-11-27T11:41:07+0100", base) == at(10, 41, 7)
    assert parse_when("2026-11-27 10:41:07 UTC", base) == at(10, 41, 7)
    assert parse_when("2026-11-27", base) == at(0, 0, 0)


def test_relative_forms_need_a_start() -> None:
    """Without a start a time of day is refused (naming the absolute forms) and a leading '+' is
    the sign of epoch seconds, as postmortem has always read it."""
    with pytest.raises(ValueError, match="epoch seconds"):
        parse_when("16:07:58")
    assert parse_when("+90") == 90 * NS
