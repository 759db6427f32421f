"""Provides the importer of `journalctl` text output: short, short-precise, short-iso(-precise), short-monotonic, short-unix.

What Kata's issues hold is mostly this, pasted from a terminal: `Jun 13 17:28:07 host
kata[17793]: time="..." level=error msg="..."`, with `containerd[PID]:`, `kubelet[PID]:`
(klog inside) and `kernel:` lines between. Each entry's message is decoded by the Kata
source's own decoders (logfmt with its fields, klog, plain kernel text), so a line gives the
same event as live. Time: a message's own `time=` (RFC3339, with zone and year) wins; the
prefix is the capturing host's LOCAL time without a year (short, short-precise) or with a zone
(short-iso), or seconds since boot (short-monotonic) or since the epoch (short-unix). The
offset between prefix and `time=` of the lines that have both gives the others their time
(the host's zone, the year, or the boot time, which makes them anchors for monotonic captures
such as udevadm's); without any, a short prefix has no year and its lines keep their order
with their time unknown. Also read: `-- Logs begin at ...`/`-- Boot ...` markers (skipped),
localised month names (`1月 19`), a missing host name, entries pasted on one line (split),
and lines a terminal wrapped (joined back).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from diag import events as ev
from diag.importers import Anchor, FileStats, Parsed, register
from diag.importers import klog as klogmod
from diag.importers.textlog import Emitter, bounded_lines
from diag.sources.kata import loglines
from diag.sources.kata.loglines import MAX_LINE

_MONTHS = {m: i for i, m in enumerate(calendar.month_abbr) if m}
_IDENT = r"(?P<ident>[\w.@/-]{1,64})(?:\[(?P<pid>\d{1,10})\])?:[ \t]"
_HOST = r"(?:(?P<host>[^\s\[\]]{1,128}) {1,2})?"
_SHORT = re.compile(
    r"^(?P<mon>[A-Z][a-z]{2}|[^\s\d]{1,4}|\d{1,2}月) {1,2}(?P<day>\d{1,2}) "
    r"(?P<hms>\d{2}:\d{2}:\d{2})(?:\.(?P<us>\d{1,6}))? {1,2}" + _HOST + _IDENT)
_ISO = re.compile(
    r"^(?P<iso>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(?P<us>\d{1,6}))?"
    r"(?P<tz>Z|[+-]\d{2}:?\d{2}) {1,2}" + _HOST + _IDENT)
_MONO = re.compile(r"^\[\s*(?P<sec>\d{1,10})\.(?P<us>\d{1,9})\] {1,2}" + _HOST + _IDENT)
_UNIX = re.compile(r"^(?P<sec>\d{9,11})\.(?P<us>\d{6}) {1,2}" + _HOST + _IDENT)
_FORMS = (("short", _SHORT), ("short-iso", _ISO), ("short-monotonic", _MONO),
          ("short-unix", _UNIX))
_MARKER = re.compile(r"^-- (?:Logs begin at|Journal begins at|Boot [0-9a-f]+|Reboot|No entries"
                     r"|Logs end at)|^-- .* --\s*$")
_JOINED = re.compile(
    r"(?<=\S) (?=(?:[A-Z][a-z]{2} {1,2}\d{1,2} \d{2}:\d{2}:\d{2}(?:\.\d{1,6})?|"
    r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\S*) {1,2}(?:[^\s\[\]]{1,128} {1,2})?"
    r"[\w.@/-]{1,64}\[\d{1,10}\]: )")
"""A second entry pasted on the same line (newlines lost): split before its prefix."""
WRAP_MIN = 100
"""A line shorter than this is not taken as wrapped by the terminal."""


@dataclass(slots=True)
class Entry:
    lineno: int
    form: str
    prefix: re.Match[str]
    text: str


def _split_joined(line: str) -> list[str]:
    if len(line) < 60:
        return [line]
    return _JOINED.split(line)


def entries(lines: Iterable[str], st: FileStats) -> Iterator[Entry | tuple[int, str]]:
    """Entries (prefix parsed) and other non-blank lines (lineno, text), in file order; a line
    with no prefix right after a long entry line is a terminal wrap and joins it."""
    prev: Entry | None = None
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if not line.strip() or _MARKER.match(line):
            continue
        for part in _split_joined(line):
            for form, rx in _FORMS:
                m = rx.match(part)
                if m is not None:
                    if prev is not None:
                        yield prev
                    prev = Entry(lineno, form, m, part[m.end():])
                    break
            else:
                if prev is not None and len(prev.text) + len(prev.prefix.group(0)) >= WRAP_MIN \
                        and not part.startswith((" ", "\t")):
                    prev.text += part  # a terminal wrap: the line goes on
                    continue
                if prev is not None:
                    yield prev
                    prev = None
                yield (lineno, part)
    if prev is not None:
        yield prev


def _prefix_ns(e: Entry, year: int) -> int | None:
    """The prefix's time as UTC-naive nanoseconds (short: in `year`), None when unreadable."""
    m = e.prefix
    us = int((m.group("us") or "0").ljust(6, "0")[:6]) if e.form != "short-monotonic" else 0
    try:
        if e.form == "short":
            mon = _MONTHS.get(m.group("mon"))
            if mon is None and m.group("mon").endswith("月"):
                mon = int(m.group("mon")[:-1])
            if mon is None:
                return None
            hh, mm, ss = (int(x) for x in m.group("hms").split(":"))
            secs = calendar.timegm((year, mon, int(m.group("day")), hh, mm, ss, 0, 0, 0))
            return secs * 1_000_000_000 + us * 1000
        if e.form == "short-iso":
            y, mo, d = (int(x) for x in m.group("iso")[:10].split("-"))
            hh, mm, ss = (int(x) for x in m.group("iso")[11:].split(":"))
            secs = calendar.timegm((y, mo, d, hh, mm, ss, 0, 0, 0))
            tz = m.group("tz")
            if tz != "Z":
                z = tz[1:].replace(":", "")
                secs -= (1 if tz[0] == "+" else -1) * (int(z[:2]) * 3600 + int(z[2:]) * 60)
            return secs * 1_000_000_000 + us * 1000
        if e.form == "short-monotonic":
            return int(m.group("sec")) * 1_000_000_000 + int(m.group("us").ljust(9, "0")[:9])
        return int(m.group("sec")) * 1_000_000_000 + us * 1000
    except (ValueError, OverflowError):
        return None


def _record(e: Entry, origin_prefix: str = "journalctl") -> loglines.LogRecord | None:
    ident = e.prefix.group("ident")
    pid = e.prefix.group("pid")
    origin = f"{origin_prefix}:{ident}"
    text = e.text
    if ident == "kernel":
        return loglines.LogRecord(message=text, origin=origin)
    k = klogmod.decode(text)
    if k is not None:
        return loglines.LogRecord(message=k.message, level=k.level, origin=origin,
                              pid=int(pid) if pid else None)
    rec = loglines.decode_text_line(text, origin)
    if rec is not None and rec.pid is None and pid:
        rec = loglines.LogRecord(message=rec.message, level=rec.level, fields=rec.fields,
                             ts_ns=rec.ts_ns, origin=origin, pid=int(pid), line_ts=rec.line_ts)
    return rec


def _offset(pairs: list[tuple[int, int]], step: int) -> int | None:
    """Median of (inner - prefix), rounded to `step` (15 min for a zone, 1 us for a boot)."""
    if not pairs:
        return None
    diffs = sorted(inner - pre for pre, inner in pairs)
    mid = diffs[len(diffs) // 2]
    return round(mid / step) * step


Rec = tuple[Entry | None, int, loglines.LogRecord | None]
"""(the journalctl entry, or None for a bare line; its line number; its decoded record)."""


def parse_journalctl(
    lines: Iterable[str], stats: FileStats | None = None, parsed: Parsed | None = None,
) -> Iterator[ev.Event]:
    """Decode journalctl text output (see the module docstring)."""
    st = stats if stats is not None else FileStats("<journalctl>")
    out = parsed if parsed is not None else Parsed(events=(), clock="realtime", ordered=False)
    recs, form = _records(lines, st)
    # The inner `time=` of Kata/containerd lines fixes the prefix: year and zone (short), zone
    # check (iso), boot time (monotonic).
    years = [r.ts_ns for _, _, r in recs if r is not None and r.line_ts and r.ts_ns]
    year = _year(years[0]) if years else None
    shift = _shift(form, recs, year, st, out)
    emit = Emitter(st, out)
    for e, _, r in recs:
        if r is not None:
            yield from emit.emit(r, _stamp(e, r, form, year, shift, out))
    yield from emit.finish("line")


def _records(lines: Iterable[str], st: FileStats) -> tuple[list[Rec], str]:
    """Every entry (or bare line) with its decoded record, and the output mode most entries
    are in."""
    recs: list[Rec] = []
    forms: dict[str, int] = {}
    for it in entries(lines, st):
        if isinstance(it, Entry):
            forms[it.form] = forms.get(it.form, 0) + 1
            recs.append((it, it.lineno, _record(it)))
        else:
            recs.append((None, it[0], loglines.decode_text_line(it[1], "journalctl")))
    return recs, (max(forms, key=lambda f: forms[f]) if forms else "short")


def _shift(form: str, recs: list[Rec], year: int | None, st: FileStats, out: Parsed) -> int:
    """What to add to the prefixes: the boot time (short-monotonic) or the capturing host's
    zone (short), from the lines carrying their own time=; said in the notes."""
    pairs: list[tuple[int, int]] = []
    for e, _, r in recs:
        if e is None or r is None or not r.line_ts or not r.ts_ns:
            continue
        pre = _prefix_ns(e, _year(r.ts_ns))
        if pre is not None:
            pairs.append((pre, r.ts_ns))
    if form == "short-monotonic":
        boot = _offset(pairs, 1000)
        if boot is not None:
            st.note(f"short-monotonic prefixes put on the wall clock by {len(pairs)} line(s) "
                    "carrying their own time= (boot time "
                    f"{boot // 1_000_000_000} s after the epoch)")
        else:
            out.clock = "monotonic"
        return boot or 0
    if form != "short":
        return 0
    zone = _offset(pairs, 900 * 1_000_000_000)
    if zone is not None:
        if zone:
            st.note(f"journalctl prints the capturing host's local time: UTC{_fmt_zone(-zone)}"
                    f", from {len(pairs)} line(s) carrying their own time=")
    elif year is None:
        st.note("the short format carries no year and no line has a time= of its own: the "
                "lines keep their order, their time is unknown")
    else:
        st.note("journalctl's prefixes read as UTC (no line tells the capturing host's zone)")
    return zone or 0


def _stamp(e: Entry | None, r: loglines.LogRecord, form: str, year: int | None, shift: int,
           out: Parsed) -> int | None:
    """One record's time: its own time= (a short-monotonic prefix beside it is an anchor),
    else its prefix put on the wall clock, else None (time unknown)."""
    if r.line_ts and r.ts_ns:
        if form == "short-monotonic" and e is not None and e.form == form:
            pre = _prefix_ns(e, 0)
            if pre is not None and len(out.anchors) < 256:
                out.anchors.append(Anchor("", r.ts_ns, pre))
        return r.ts_ns
    if e is None or (e.form == "short" and year is None):
        return None
    pre = _prefix_ns(e, year or 1970)
    if pre is not None and (e.form != "short-monotonic" or out.clock == "monotonic" or shift):
        return pre + (shift if e.form in ("short", "short-monotonic") else 0)
    return None


def _year(ns: int) -> int:
    import time as _t

    return _t.gmtime(ns // 1_000_000_000).tm_year


def _fmt_zone(ns: int) -> str:
    mins = ns // 60_000_000_000
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    return f"{sign}{mins // 60:02d}:{mins % 60:02d}"


def looks_journalctl(line: str) -> bool:
    return any(rx.match(line) for _, rx in _FORMS)


class _JournalctlImporter:
    name = "journalctl"
    description = "journalctl text output (short, -precise, -iso, -monotonic, -unix)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:60] if x.strip() and not _MARKER.match(x)]
        if not lines:
            return False
        hits = sum(looks_journalctl(x) for x in lines)
        return hits >= 1 and hits * 3 >= len(lines)  # prose and wrapped lines around a paste

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_journalctl(bounded_lines(lines, stats), stats, parsed)
        return parsed



register(_JournalctlImporter())
