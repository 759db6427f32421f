"""Provides the importer of the agent's own journal (any rotated part, plain or .gz): read_journal.

The journal is JSON Lines (`diag.codec`): a header, a full state snapshot, then every event and
finding, stamped with wall-clock time. Reading streams it in constant memory: bad lines are
counted with the first example, a line cut by a crash at the end is reported as a truncated
tail, and a header from a newer schema stops the file with an error.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain

from diag import codec
from diag import events as ev
from diag.common.errors import JournalFormatError
from diag.importers import FileStats, Parsed, first_json_object, iter_blocks, iter_lines, register


@dataclass(slots=True)
class JournalRead:
    """A journal being read: its events (lazy), its headers and what was skipped."""

    events: Iterator[ev.Event]
    stats: codec.ReadStats
    headers: list[codec.Header] = field(default_factory=list)
    error: str = ""


def parse_journal(
    lines: Iterable[bytes], stats: codec.ReadStats | None = None,
    headers: list[codec.Header] | None = None, *, skip_restatement: bool = False,
) -> Iterator[ev.Event]:
    """Decode journal lines into events; headers go to `headers`, damage to `stats`.

    Each file opens with a header and a restatement of the state when it began (the header's
    `snapshot_records`). With `skip_restatement` those records are dropped: the right thing
    when an earlier part of the same run was replayed just before.
    """
    skip = 0
    for rec in codec.iter_records(lines, stats):
        if isinstance(rec, codec.Header):
            if headers is not None:
                headers.append(rec)
            if skip_restatement:
                skip = int(getattr(rec, "snapshot_records", 0) or 0)
            continue
        if skip:
            skip -= 1
            continue
        yield rec


def first_header(path: str) -> codec.Header | None:
    """The header of a journal file (its first line), or None."""
    st = FileStats(path)
    for line in iter_lines(path, st):
        try:
            rec = codec.loads(line)
        except (ValueError, JournalFormatError):
            return None
        return rec if isinstance(rec, codec.Header) else None
    return None


def parse_batches(
    blocks: Iterable[bytes], stats: codec.ReadStats | None = None,
    headers: list[codec.Header] | None = None, *, skip_restatement: bool = False,
) -> Iterator[list[ev.Event]]:
    """`parse_journal` of blocks of lines (`iter_blocks`), in one list of events per block."""
    skip = 0
    header = codec.Header
    for recs in codec.iter_batches(blocks, stats):
        if skip or header in map(type, recs):  # rare: a header, or the restatement after it
            out: list[ev.Event] = []
            for rec in recs:
                if isinstance(rec, codec.Header):
                    if headers is not None:
                        headers.append(rec)
                    if skip_restatement:
                        skip = int(getattr(rec, "snapshot_records", 0) or 0)
                elif skip:
                    skip -= 1
                else:
                    out.append(rec)
            if out:
                yield out
        else:
            yield recs  # type: ignore[misc]  # no header among them: events only


def parse_file(path: str, file_stats: FileStats, *, skip_restatement: bool = False) -> Parsed:
    """A journal file as a lazy, stamp-ordered stream (`events`, and the same events in lists:
    `batches`, what the postmortem replays); `file_stats` is filled as it is read."""
    st = codec.ReadStats()
    headers: list[codec.Header] = []
    parsed = Parsed(events=iter(()), clock="realtime")

    def gen() -> Iterator[list[ev.Event]]:
        try:
            yield from parse_batches(iter_blocks(path, file_stats, None), st, headers,
                                     skip_restatement=skip_restatement)
        except JournalFormatError as exc:
            file_stats.error = exc.message
        finally:
            _done(file_stats, st, headers, parsed, note_cut=True)

    parsed.batches = gen()
    parsed.events = chain.from_iterable(parsed.batches)
    return parsed


def _done(fs: FileStats, st: codec.ReadStats, headers: list[codec.Header], parsed: Parsed, *,
          note_cut: bool) -> None:
    """What reading found, into the file's stats (once it has been read)."""
    fs.lines, fs.events = st.lines, st.records - len(headers)
    fs.bad_lines, fs.first_bad = st.bad_lines, st.first_bad
    if st.truncated_tail:
        fs.truncated = True
        if note_cut:
            fs.note("the last line was cut (crash or copy while writing); it was skipped")
    if headers:
        fs.boot_id = parsed.boot_id = headers[0].boot_id


def _parsed(lines: Iterable[bytes], fs: FileStats, *, skip_restatement: bool = False,
            note_cut: bool = False) -> Parsed:
    """Journal lines as a lazy stream; `fs` is filled once it has been read (`note_cut`: say
    so when the last line was cut)."""
    st = codec.ReadStats()
    headers: list[codec.Header] = []
    parsed = Parsed(events=iter(()), clock="realtime")

    def gen() -> Iterator[ev.Event]:
        try:
            yield from parse_journal(lines, st, headers, skip_restatement=skip_restatement)
        except JournalFormatError as exc:
            fs.error = exc.message
        finally:
            _done(fs, st, headers, parsed, note_cut=note_cut)

    parsed.events = gen()
    return parsed


def read_journal(path: str, file_stats: FileStats | None = None) -> JournalRead:
    """Open a journal file (plain or .gz) for streaming; nothing is read until iterated."""
    fs = file_stats if file_stats is not None else FileStats(path, format="journal")
    parsed = parse_file(path, fs)
    out = JournalRead(events=iter(()), stats=codec.ReadStats())

    def gen() -> Iterator[ev.Event]:
        yield from parsed.events
        out.stats.lines, out.stats.bad_lines = fs.lines, fs.bad_lines
        out.stats.first_bad, out.stats.truncated_tail = fs.first_bad, fs.truncated
        out.stats.records = fs.events
        out.error = fs.error

    out.events = gen()
    return out


class _JournalImporter:
    name = "journal"
    description = "vfiowatch journal (JSON Lines, any rotated part)"

    def sniff(self, head: list[str]) -> bool:
        rec = first_json_object(head, limit=len(head))
        kind = rec.get("kind") if rec is not None else None
        return kind == "header" or (isinstance(kind, str) and kind in ev.EVENT_TYPES)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return _parsed(lines, stats)


register(_JournalImporter())
