"""Provides the importer of plain containerd/Kata log files: logfmt lines (Go shim, containerd) and JSON lines.

Kata's Go shim logs with logrus' TextFormatter (`time="<RFC3339Nano>" level=<l> msg="<text>"
key=value ...`, kata-facts §4.1), and containerd copies those lines into its own log; a file may
also carry a syslog prefix (`Nov 27 14:52:53 host kata[123]: time=...`). runtime-rs before 3.17
and containerd with `--log-format json` write JSON objects with `msg`/`time`. Only lines whose
message (or `error` field) matches a signature of the Kata catalogue become events
(`LogLineMatched`); the rest are counted as unmatched, not as damage.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator, Mapping

from diag import codec
from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register
from diag.sources.kata import signatures

SOURCE = "kata"
_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$"
)
_PAIR = re.compile(r'([^\s=]+)=(?:"((?:[^"\\]|\\.)*)"|(\S*))')
_UNESCAPE = re.compile(r'\\(["\\nt])')
_ESC = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_MATCH_FIELDS = ("msg", "error", "err")


def parse_time(text: str) -> int | None:
    """RFC 3339 (logrus' RFC3339Nano, journald-like) to epoch nanoseconds; None when not one."""
    m = _RFC3339.match(text.strip())
    if not m:
        return None
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        secs = calendar.timegm((int(y), int(mo), int(d), int(h), int(mi), int(s), 0, 0, 0))
    except (ValueError, OverflowError):
        return None
    if tz and tz != "Z":
        sign = -1 if tz[0] == "+" else 1
        tz = tz[1:].replace(":", "")
        secs += sign * (int(tz[:2]) * 3600 + int(tz[2:]) * 60)
    return secs * 1_000_000_000 + int((frac or "0").ljust(9, "0")[:9])


def parse_logfmt(text: str) -> dict[str, str]:
    """`key=value key="quoted \\"value\\""` pairs; later duplicates win. Never raises."""
    out: dict[str, str] = {}
    for m in _PAIR.finditer(text):
        key, quoted, bare = m.groups()
        if quoted is not None:
            out[key] = _UNESCAPE.sub(lambda x: _ESC[x.group(1)], quoted) if "\\" in quoted else quoted
        else:
            out[key] = bare or ""
    return out


def _int(text: object) -> int | None:
    try:
        return int(str(text))
    except (TypeError, ValueError):
        return None


def match_event(
    message: str, fields: Mapping[str, str], ts_ns: int, origin: str, *,
    level: str = "", sandbox_id: str | None = None, pid: int | None = None,
) -> ev.LogLineMatched | None:
    """The LogLineMatched for one log message (or its error field), or None when unknown."""
    flat = {k: v for k, v in fields.items() if isinstance(v, str)}
    text = message
    m = signatures.match(message, flat) if message else None
    if m is None:
        for key in _MATCH_FIELDS[1:]:
            val = flat.get(key)
            if val:
                m = signatures.match(val, flat)
                if m is not None:
                    text = f"{message}: {val}" if message else val
                    break
    if m is None:
        return None
    return ev.LogLineMatched(
        ts_ns=ts_ns, source=SOURCE, signature=m.signature.id, text=text, origin=origin,
        level=level, sandbox_id=sandbox_id or None, bdf=m.bdf, pid=pid,
        qemu_pid=_int(flat.get("qemuPid")), iommu_group=m.iommu_group,
    )


def _line_event(line: str, origin: str, lineno: int, st: FileStats) -> ev.LogLineMatched | None:
    s = line.strip()
    if not s:
        return None
    if s.startswith("{"):
        try:
            rec = codec._loads(s)
        except ValueError:
            st.bad(lineno, "not valid JSON", line)
            return None
        if not isinstance(rec, dict):
            st.bad(lineno, "JSON line is not an object", line)
            return None
        fields = {str(k): v if isinstance(v, str) else str(v) for k, v in rec.items()}
        msg = fields.get("msg") or fields.get("message") or ""
        ts = parse_time(fields.get("time") or fields.get("ts") or "")
    else:
        k = s.find("time=")
        if k < 0:
            k = s.find("level=")
        if k < 0:
            return None
        fields = parse_logfmt(s[k:])
        msg = fields.get("msg", "")
        ts = parse_time(fields.get("time", ""))
    if ts is None:
        st.bad(lineno, "no RFC 3339 time field", line)
        return None
    sandbox = fields.get("sandbox") or fields.get("sandbox_id") or fields.get("sid")
    if fields.get("name") == "kata-runtime" and not sandbox:
        sandbox = fields.get("source")  # runtime-rs: `source` is the sandbox id
    return match_event(msg, fields, ts, origin, level=fields.get("level", ""),
                       sandbox_id=sandbox, pid=_int(fields.get("pid")))


def parse_logfmt_lines(
    lines: Iterable[str], stats: FileStats | None = None, origin: str = "file"
) -> Iterator[ev.Event]:
    """Decode a logfmt/JSON log file into LogLineMatched events (realtime stamps)."""
    st = stats if stats is not None else FileStats("<log>")
    unmatched = 0
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        line = raw.rstrip("\r\n")
        bad = st.bad_lines
        e = _line_event(line, origin, lineno, st)
        if e is None:
            if line.strip() and st.bad_lines == bad:
                unmatched += 1
            continue
        st.events += 1
        yield e
    if unmatched:
        st.note(f"{unmatched} line(s) matched no known Kata/QEMU signature")


def looks_logfmt(line: str) -> bool:
    return ("level=" in line and ("msg=" in line or "time=" in line)) or (
        line.lstrip().startswith("{") and '"msg"' in line and ('"time"' in line or '"ts"' in line)
    )


class _LogfmtImporter:
    name = "logfmt"
    description = "containerd/Kata log file (logfmt or JSON lines)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:50] if x.strip()]
        return bool(lines) and sum(looks_logfmt(x) for x in lines) * 2 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(
            events=parse_logfmt_lines((decode_line(b) for b in lines), stats, f"file:{origin}"),
            clock="realtime", ordered=False,
        )


register(_LogfmtImporter())
