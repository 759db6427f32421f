"""Hostile strings never reach a terminal as control sequences."""

from __future__ import annotations

from diag.common.text import safe


def test_escape_sequences_and_controls_are_made_visible() -> None:
    """ESC, CR, BEL, DEL, C1 and backslash are escaped; plain text and UTF-8 letters are kept."""
    assert safe("eth0\x1b[2J\r\x07\x7f\x9b") == "eth0\\x1b[2J\\x0d\\x07\\x7f\\x9b"
    assert safe("a\\b") == "a\\\\b"
    assert safe("vf-é-ü") == "vf-é-ü"


def test_bidi_overrides_are_escaped() -> None:
    """Right-to-left overrides that could disguise a name are shown as code points."""
    assert safe("x\u202ey") == "x\\u202ey"
    assert safe("x\u2066y") == "x\\u2066y"


def test_limit_truncates_with_an_ellipsis() -> None:
    """A long log line is cut to the limit with a visible ellipsis."""
    assert safe("abcdef", limit=4) == "abc…"
