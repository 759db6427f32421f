"""Provides the importer of plain containerd/Kata log files: logfmt lines (Go shim, containerd) and JSON lines.

Kata's Go shim logs with logrus' TextFormatter (`time="<RFC3339Nano>" level=<l> msg="<text>"
key=value ...`, kata-facts §4.1), and containerd copies those lines into its own log; a file may
also carry a syslog prefix (`Nov 27 14:52:53 host kata[123]: time=...`). runtime-rs before 3.17
and containerd with `--log-format json` write JSON objects with `msg`/`time`. Only lines whose
message (or `error` field) matches a signature of the Kata catalogue become events
(`LogLineMatched`); the rest are counted as unmatched, not as damage.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace

from diag import codec
from diag import events as ev
from diag.importers import FileStats, Parsed, decode_line, register, text_lines
from diag.importers.textlog import Emitter
from diag.sources.kata import loglines

SOURCE = "kata"
_WRAPPED = ("error", "err")
"""Fields where containerd and kubelet put the error Kata returned (`failed to create shim task:
<kata error>: unknown`): matched when the message itself is not a known one."""


def match_record(rec: loglines.LogRecord, ts_ns: int) -> ev.LogLineMatched | None:
    """The LogLineMatched for a decoded log record, looking into its error fields too."""
    e = loglines.to_event(rec, ts_ns=ts_ns, source=SOURCE)
    if e is not None:
        return e
    for key in _WRAPPED:
        val = rec.fields.get(key)
        if val:
            inner = loglines.LogRecord(message=val, level=rec.level, fields=rec.fields,
                                   ts_ns=rec.ts_ns, origin=rec.origin, pid=rec.pid)
            e = loglines.to_event(inner, ts_ns=ts_ns, source=SOURCE)
            if e is not None:
                text = f"{rec.message}: {val}" if rec.message else val
                return replace(e, text=text)
    return None


def _json_record(line: str, origin: str) -> loglines.LogRecord | str:
    try:
        obj = codec._loads(line)
    except ValueError:
        return "not valid JSON"
    if not isinstance(obj, dict):
        return "JSON line is not an object"
    fields = {str(k): v if isinstance(v, str) else str(v) for k, v in obj.items()}
    msg = fields.pop("msg", "") or fields.pop("message", "")
    ts = loglines.parse_time_ns(fields.pop("time", "") or fields.pop("ts", ""))
    pid = fields.get("pid", "")
    return loglines.LogRecord(message=msg, level=fields.pop("level", ""), fields=fields, ts_ns=ts,
                          origin=origin, pid=int(pid) if pid.isdigit() else None)


def parse_logfmt_lines(
    lines: Iterable[str], stats: FileStats | None = None, origin: str = "file",
    parsed: Parsed | None = None,
) -> Iterator[ev.Event]:
    """Decode a logfmt/JSON log file into events (realtime stamps).

    Decoding is the Kata source's own (`diag.sources.kata.loglines`), so a line gives the
    same events live and in a postmortem. A known line without a time field is kept in its
    place with its time unknown (`Parsed.untimed`); a line with neither is not damage.
    """
    st = stats if stats is not None else FileStats("<log>")
    out = parsed if parsed is not None else Parsed(events=(), clock="realtime", ordered=False)
    emit = Emitter(st, out, source=SOURCE)
    for lineno, line in text_lines(lines, st):
        if line.lstrip().startswith("{"):
            got = _json_record(line.strip(), origin)
            if isinstance(got, str):
                st.bad(lineno, got, line)
                continue
            rec: loglines.LogRecord | None = got
        else:
            rec = loglines.decode_text_line(line, origin)
        if rec is None:
            continue
        if rec.ts_ns is not None and not rec.line_ts:
            rec = replace(rec, line_ts=True)
        yield from emit.emit(rec, rec.ts_ns)
    yield from emit.finish("line")


_FIRST = re.compile(r"^(?:.{0,200}?[\w.@/-]{1,64}\[\d{1,10}\]:\s)?\s*(?:time|level|ts)=")
"""logfmt starts the line (behind a syslog prefix at most): `level=` quoted inside another
format (a JSON `content` field) is not a logfmt file."""


def looks_logfmt(line: str) -> bool:
    return (("level=" in line and ("msg=" in line or "time=" in line)) and bool(_FIRST.match(line))) or (
        line.lstrip().startswith("{") and '"msg"' in line and ('"time"' in line or '"ts"' in line)
    )


class _LogfmtImporter:
    name = "logfmt"
    description = "containerd/Kata log file (logfmt or JSON lines)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:50] if x.strip()]
        return bool(lines) and sum(looks_logfmt(x) for x in lines) * 2 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_logfmt_lines((decode_line(b) for b in lines), stats,
                                           f"file:{origin}", parsed)
        return parsed


register(_LogfmtImporter())
