"""parse_when: the times an operator types to jump in a journal."""

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
