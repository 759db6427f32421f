"""Provides the importer of klog output (kubelet, containerd's CRI plugin, device plugins): `E1114 17:06:48.791067 1234 file.go:12] msg`.

The header is `<I|W|E|F><MMDD> <hh:mm:ss.uuuuuu> <thread> <file>:<line>] `; the message is plain
text or, in structured logging, a quoted message followed by `key="value"` pairs (`err=` is
where kubelet puts the runtime's error). A line that does not start with a header continues
the previous message (kubelet logs QEMU's multi-line errors that way). klog prints no year and
no zone: a file of klog lines keeps its order with its time unknown; inside `journalctl`
output (`kubelet[PID]: E1114 ...`) the journal's prefix gives the time. Lines are matched with
the Kata signature catalogue (the runtime's error wrapped by kubelet or containerd).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import Emitter, bounded_lines
from diag.sources.kata import loglines
from diag.sources.kata.loglines import MAX_LINE

HEADER = re.compile(
    r"^(?P<lvl>[IWEF])(?P<mm>\d{2})(?P<dd>\d{2}) (?P<hms>\d{2}:\d{2}:\d{2})\.(?P<us>\d{6})\s+"
    r"(?P<tid>\d{1,10}) (?P<src>[^\s:\]]{1,200}):(?P<line>\d{1,7})\] ?(?P<msg>.*)$")
LEVELS = {"I": "info", "W": "warning", "E": "error", "F": "fatal"}
MAX_CONTINUATION = 64
"""Lines joined to one message at most (a runaway dump is not one message)."""


@dataclass(frozen=True, slots=True)
class KlogLine:
    level: str
    month: int
    day: int
    hms: str
    message: str
    fields: dict[str, str]


def decode(text: str) -> KlogLine | None:
    """One klog line, None when it has no klog header."""
    m = HEADER.match(text)
    if m is None:
        return None
    msg = m.group("msg")
    fields: dict[str, str] = {}
    if msg.startswith('"'):  # structured: "message" key=value ...
        head, end = loglines._unquote_go(msg, 0)
        fields = loglines.parse_logfmt(msg[end:].strip())
        if "err" in fields and "error" not in fields:
            fields["error"] = fields["err"]
        msg = head
    return KlogLine(level=LEVELS[m.group("lvl")], month=int(m.group("mm")), day=int(m.group("dd")),
                    hms=m.group("hms"), message=msg, fields=fields)


def parse_klog(lines: Iterable[str], stats: FileStats | None = None,
               parsed: Parsed | None = None) -> Iterator[ev.Event]:
    """Decode klog lines into events (untimed: klog has no year)."""
    st = stats if stats is not None else FileStats("<klog>")
    out = parsed if parsed is not None else Parsed(events=(), clock="none", ordered=True)
    emit = Emitter(st, out)
    cur: KlogLine | None = None
    extra: list[str] = []

    def flush() -> Iterator[ev.Event]:
        if cur is None:
            return
        msg = cur.message + ("\n" + "\n".join(extra) if extra else "")
        rec = loglines.LogRecord(message=msg, level=cur.level, fields=cur.fields, origin="klog")
        yield from emit.emit(rec, None)

    for raw in lines:
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if not line.strip():
            continue
        k = decode(line)
        if k is not None:
            yield from flush()
            cur, extra = k, []
        elif cur is not None and len(extra) < MAX_CONTINUATION:
            extra.append(line)
        elif cur is None:
            yield from emit.emit(loglines.LogRecord(message=line, origin="klog"), None)
    yield from flush()
    yield from emit.finish("klog line")
    out.clock = "none"


class _KlogImporter:
    name = "klog"
    description = "klog lines (kubelet, containerd CRI, device plugins)"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:60] if x.strip()]
        hits = sum(bool(HEADER.match(x)) for x in lines)
        return hits >= 1 and hits * 2 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="none", ordered=True)
        parsed.events = parse_klog(bounded_lines(lines, stats), stats, parsed)
        return parsed



register(_KlogImporter())
