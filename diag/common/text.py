"""Provides `safe()`: render strings from the outside world without terminal control effects.

Interface names, process names and log text are attacker-controlled (an ifname can hold ESC,
a comm can hold a carriage return). Every string shown on a terminal goes through `safe`, which
escapes C0/C1 controls, DEL and Unicode bidi/format characters as visible `\\xNN`/`\\uNNNN`.
"""

from __future__ import annotations

import re
import unicodedata

_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff\\]")


def _escape(m: re.Match[str]) -> str:
    ch = m.group(0)
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def safe(text: object, limit: int | None = None) -> str:
    """Return `text` with every control or invisible formatting character escaped."""
    s = text if isinstance(text, str) else str(text)
    if _UNSAFE.search(s):
        s = _UNSAFE.sub(_escape, s)
    if any(unicodedata.category(c) == "Cf" for c in s if ord(c) > 0x7F):
        s = "".join(f"\\u{ord(c):04x}" if ord(c) > 0x7F and unicodedata.category(c) == "Cf" else c for c in s)
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)] + "…"
    return s
