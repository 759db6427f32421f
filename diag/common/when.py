"""Provides parse_when: a moment an operator types (`10:41:07`, ISO 8601, `+90`) as Unix ns.

Used by `vfiowatch tui --replay --at` and the dashboard's go-to-time prompt (`g`) to jump to a
point of a journal. Forms:

- `HH:MM[:SS[.fff]]`: UTC, on the day of the journal's first record (`base_ns`); the day after
  when that time of day is earlier than the journal's start (a journal that crosses midnight).
- ISO 8601 with a date: `2026-11-27T10:41:07.118Z`, `2026-11-27 10:41:07+01:00` (no zone: UTC).
- `+SECONDS` (or `+1m30s`, `+2h`): that long after the journal's first record.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

NS = 1_000_000_000
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_OFFSET = re.compile(r"^\+(?:(\d+(?:\.\d+)?)|(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?)$")
FORMS = "HH:MM[:SS[.fff]] (UTC, the journal's day), 2026-11-27T10:41:07Z, or +SECONDS (+1m30s)"


def parse_when(text: str, base_ns: int) -> int:
    """`text` as Unix time in ns; `base_ns` is the journal's first record. Raises ValueError
    naming the accepted forms."""
    t = text.strip()
    m = _CLOCK.match(t)
    if m:
        h, mi, sec, frac = int(m[1]), int(m[2]), int(m[3] or 0), m[4] or ""
        if h > 23 or mi > 59 or sec > 59:
            raise ValueError(f"{text!r} is not a time of day; use {FORMS}")
        day = datetime.fromtimestamp(base_ns // NS, UTC).replace(hour=0, minute=0, second=0,
                                                                 microsecond=0)
        ns = int(day.timestamp()) * NS + ((h * 60 + mi) * 60 + sec) * NS + int(frac.ljust(9, "0"))
        if ns < base_ns - 12 * 3600 * NS:
            ns += 24 * 3600 * NS
        return ns
    m = _OFFSET.match(t)
    if m and t != "+":
        if m[1] is not None:
            secs = float(m[1])
        elif any(m[i] for i in (2, 3, 4)):
            secs = int(m[2] or 0) * 3600 + int(m[3] or 0) * 60 + float(m[4] or 0)
        else:
            raise ValueError(f"{text!r}: nothing after '+'; use {FORMS}")
        return base_ns + int(secs * NS)
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"cannot read {text!r} as a time; use {FORMS}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    whole = dt.replace(microsecond=0)
    return int(whole.timestamp()) * NS + dt.microsecond * 1000 + _sub_us(t)


def _sub_us(t: str) -> int:
    """Nanoseconds beyond the microsecond that datetime keeps (`.118000123` -> 123)."""
    m = re.search(r"\.(\d{7,9})", t)
    return int(m[1].ljust(9, "0")[6:]) if m else 0

