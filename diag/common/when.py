"""Provides parse_when: a moment an operator types (`10:41:07`, ISO 8601, `+90`, epoch) as Unix ns.

The one time parser of every command: `vfiowatch tui --replay --at`, the dashboard's go-to-time
prompt (`g`), and `vfiowatch postmortem --since/--until/--offset @TIME`. Forms:

- ISO 8601 with a date: `2026-11-27T10:41:07.118Z`, `2026-11-27 10:41:07+01:00`, `+0100`,
  ` UTC`, a bare date (midnight); no zone means UTC. Exact to the nanosecond.
- Epoch seconds: `1795791172.5` (exact to the nanosecond, no float rounding).
- Only where there is a start (`base_ns`, a journal's first record):
  - `HH:MM[:SS[.fff]]`: UTC, on the day of `base_ns`; the day after when that time of day is
    earlier than the start (a journal that crosses midnight).
  - `+SECONDS` (or `+1m30s`, `+2h`): that long after `base_ns`.
  Without a start a leading `+` is the sign of epoch seconds and a bare time of day is refused.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

NS = 1_000_000_000
_CLOCK = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?$")
_OFFSET = re.compile(r"^\+(?:(\d+(?:\.\d+)?)|(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s)?)$")
_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?)?\s*(Z|UTC|[+-]\d{2}:?\d{2})?$"
)
FORMS = "HH:MM[:SS[.fff]] (UTC, the journal's day), 2026-11-27T10:41:07Z, or +SECONDS (+1m30s)"
"""The forms where a start is known (a journal's first record)."""
ABSOLUTE_FORMS = "2026-11-27T14:52:48Z or epoch seconds"
"""The forms where no start is known."""


def parse_when(text: str, base_ns: int | None = None) -> int:
    """`text` as Unix time in ns. `base_ns` is the start relative forms refer to (a journal's
    first record); None where there is none. Raises ValueError naming the accepted forms."""
    t = text.strip()
    forms = FORMS if base_ns is not None else ABSOLUTE_FORMS
    if base_ns is not None:
        relative = _relative(t, text, base_ns)
        if relative is not None:
            return relative
    ns = seconds_ns(t)
    if ns is not None:
        return ns
    absolute = _iso(t)
    if absolute is not None:
        return absolute
    raise ValueError(f"cannot read {text!r} as a time; use {forms}")


def seconds_ns(text: str) -> int | None:
    """Decimal seconds to integer nanoseconds, exactly; None when `text` is not a number."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return None
    if not d.is_finite():
        return None
    return int(d * NS)


def _relative(t: str, text: str, base_ns: int) -> int | None:
    """A time of day on the start's day, or `+SECONDS` after the start; None for other forms."""
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
    return None


def _iso(t: str) -> int | None:
    """ISO 8601 with a date (no zone: UTC), exact to the nanosecond; None when it is not one."""
    m = _ISO.match(t)
    if m:
        y, mo, d, h, mi, sec, frac, tz = m.groups()
        try:
            dt = datetime(int(y), int(mo), int(d), int(h or 0), int(mi or 0), int(sec or 0),
                          tzinfo=UTC)
        except ValueError:
            return None
        secs = int(dt.timestamp())
        if tz and tz not in ("Z", "UTC"):
            sign = -1 if tz[0] == "+" else 1
            z = tz[1:].replace(":", "")
            secs += sign * (int(z[:2]) * 3600 + int(z[2:]) * 60)
        return secs * NS + int((frac or "0").ljust(9, "0")[:9])
    # Other ISO 8601 spellings (basic format, week dates) through the standard library.
    try:
        dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    whole = dt.replace(microsecond=0)
    return int(whole.timestamp()) * NS + dt.microsecond * 1000 + _sub_us(t)


def _sub_us(t: str) -> int:
    """Nanoseconds beyond the microsecond that datetime keeps (`.118000123` -> 123)."""
    m = re.search(r"\.(\d{7,9})", t)
    return int(m[1].ljust(9, "0")[6:]) if m else 0
