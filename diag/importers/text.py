"""Provides the catch-all importer: any other text, scanned line by line with the signature catalogue (`text (signatures only)`).

A fragment inside `ctr` or `podman` output, a pod log, a QMP session, a bug report or a chat
paste still says what failed: each line is decoded as the Kata source decodes a log line
(logfmt when it has keys, else plain text) and searched with the catalogue, like grep with
it. Lines have no time of their own unless a `time=` field gives one: the input keeps its
order and the report says its time is unknown. A file that is not text (NUL bytes, mostly
undecodable) is not read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from diag import events as ev
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import Emitter, bounded_lines
from diag.sources.kata import loglines
from diag.sources.kata.loglines import MAX_LINE

NAME = "text"


def parse_text(lines: Iterable[str], stats: FileStats | None = None,
               parsed: Parsed | None = None) -> Iterator[ev.Event]:
    """Every line that matches a catalogued signature, in order, time from `time=` if any."""
    st = stats if stats is not None else FileStats("<text>")
    out = parsed if parsed is not None else Parsed(events=(), clock="realtime", ordered=False)
    emit = Emitter(st, out)
    for raw in lines:
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if not line.strip():
            continue
        rec = loglines.decode_text_line(line, "text")
        yield from emit.emit(rec, rec.ts_ns if rec is not None and rec.line_ts else None)
    yield from emit.finish("line")


def is_text(head: list[str]) -> bool:
    """Mostly printable, no NUL: what a person pasted, not a binary file."""
    sample = "\n".join(head[:200])
    if not sample.strip() or "\x00" in sample:
        return False
    bad = sum(1 for c in sample if c == "\ufffd" or (ord(c) < 32 and c not in "\t\n\r\x1b"))
    return bad * 20 < len(sample)


class _TextImporter:
    name = NAME
    description = "text (signatures only): any other text, searched line by line"

    def sniff(self, head: list[str]) -> bool:
        return is_text(head)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_text(bounded_lines(lines, stats), stats, parsed)
        return parsed


register(_TextImporter())
