"""Provides the importers of journald exports (`journalctl -o json` and `-o export`): Kata, containerd, kernel.

One JSON object per line with journald's fields. The Go shim's syslog lines carry logfmt in
`MESSAGE` (kata-facts §4.1); runtime-rs logs `MESSAGE` plus its fields as journald fields
(`NAME=kata-runtime`, `SOURCE=<sandbox id>`); containerd's unit repeats the shim's logfmt lines
and wraps returned errors in its own; the kernel's vfio-pci lines come with `_TRANSPORT=kernel`.
`MESSAGE` may be an array of bytes (journald's form for non-UTF-8 text). Entries that match a
signature become `LogLineMatched`; every entry's `__REALTIME_TIMESTAMP`, `__MONOTONIC_TIMESTAMP`
and `_BOOT_ID` are kept as clock anchors, which is how monotonic captures (udevadm) of the
same boot are put on the wall clock.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

from diag import codec
from diag import events as ev
from diag.importers import Anchor, FileStats, Parsed, first_json_object, register
from diag.importers.logfmt import match_record
from diag.sources.kata import loglines

MAX_ANCHORS = 256
"""Clock anchors kept per boot (the first ones)."""


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def entry_events(rec: dict[str, Any]) -> tuple[list[ev.Event], int | None, str]:
    """One journald entry -> (its events, realtime ns or None, why it is bad or '').

    Decoding is the Kata source's own (`diag.sources.kata.loglines.decode_journal_entry`,
    then `to_events`: a Kata write line is the write it announces), as live.
    """
    real = _int(rec.get("__REALTIME_TIMESTAMP"))
    if real is None:
        return [], None, "no __REALTIME_TIMESTAMP"
    ts = real * 1000
    lr = loglines.decode_journal_entry(rec)
    if lr is None:
        return [], ts, ""
    out = loglines.to_events(lr, ts_ns=ts, source="kata")
    if not out:
        e = match_record(lr, ts)  # the error= of a containerd line wrapping Kata's
        out = [e] if e is not None else []
    return out, ts, ""


def entry_event(rec: dict[str, Any]) -> tuple[ev.Event | None, int | None, str]:
    """The first event of `entry_events` (kept for callers that want one)."""
    events, ts, why = entry_events(rec)
    return (events[0] if events else None), ts, why


class _Folder:
    """Turns decoded journald entries into events, clock anchors and per-file notes."""

    def __init__(self, st: FileStats, anchors: list[Anchor] | None) -> None:
        self.st, self.anchors = st, anchors
        self.per_boot: dict[str, int] = {}
        self.unmatched = 0

    def fold(self, rec: dict[str, Any], lineno: int, raw: bytes | str) -> list[ev.Event]:
        events, ts, why = entry_events(rec)
        if why:
            self.st.bad(lineno, why, raw)
            return []
        boot = rec.get("_BOOT_ID")
        mono = _int(rec.get("__MONOTONIC_TIMESTAMP"))
        if self.anchors is not None and isinstance(boot, str) and mono is not None \
                and ts is not None:
            n = self.per_boot.get(boot, 0)
            if n < MAX_ANCHORS:
                self.per_boot[boot] = n + 1
                self.anchors.append(Anchor(boot, ts, mono * 1000))
        if not events:
            self.unmatched += 1
            return []
        self.st.events += len(events)
        return events

    def finish(self) -> None:
        st, per_boot = self.st, self.per_boot
        if per_boot:
            st.boot_id = next(iter(per_boot)) if len(per_boot) == 1 else ""
            if len(per_boot) > 1:
                st.note(f"entries from {len(per_boot)} boots: " + ", ".join(sorted(per_boot)))
        if self.unmatched:
            st.note(f"{self.unmatched} entr{'y' if self.unmatched == 1 else 'ies'} matched no "
                    "known Kata/QEMU/kernel signature")


def parse_journald_json(
    lines: Iterable[str | bytes], stats: FileStats | None = None,
    anchors: list[Anchor] | None = None,
) -> Iterator[ev.Event]:
    """Decode `journalctl -o json` lines; signature matches become LogLineMatched events."""
    st = stats if stats is not None else FileStats("<journald>")
    folder = _Folder(st, anchors)
    for lineno, raw in enumerate(lines, 1):
        st.lines += 1
        if not raw.strip():
            continue
        try:
            rec = codec._loads(raw)
        except ValueError:
            if isinstance(raw, bytes) and not raw.endswith(b"\n"):
                st.truncated = True
                st.note("the last line was cut; it was skipped")
            else:
                st.bad(lineno, "not valid JSON", raw)
            continue
        if not isinstance(rec, dict):
            st.bad(lineno, "JSON line is not an object", raw)
            continue
        yield from folder.fold(rec, lineno, raw)
    folder.finish()


_EXPORT_KEY = re.compile(rb"^[A-Z0-9_]{1,64}$")


def _export_entries(
    lines: Iterable[bytes], st: FileStats,
) -> Iterator[tuple[int, dict[str, Any], bytes]]:
    """(first line, fields, first raw line) of each entry of the journal export format.

    Text fields are `KEY=value`; binary ones are `KEY`, a little-endian 64-bit size, the data and
    a newline (the data may hold newlines, so it is re-assembled across lines); a blank line
    ends an entry (systemd's "Journal Export Format").
    """
    it = iter(lines)
    entry: dict[str, Any] = {}
    first, head = 0, b""
    lineno = 0
    for raw in it:
        lineno += 1
        st.lines += 1
        if raw in (b"\n", b"\r\n"):
            if entry:
                yield first, entry, head
            entry, first, head = {}, 0, b""
            continue
        if not raw.endswith(b"\n"):
            st.truncated = True
            st.note("the export ends in the middle of an entry; that entry was skipped")
            return
        if not first:
            first, head = lineno, raw
        line = raw[:-1]
        key, sep, value = line.partition(b"=")
        if sep and _EXPORT_KEY.match(key):
            entry[key.decode()] = value.decode("utf-8", "replace")
            continue
        if sep or not _EXPORT_KEY.match(line):
            st.bad(lineno, "not a KEY=value or binary field line", raw)
            continue
        buf = b""
        while len(buf) < 8 or len(buf) < 8 + int.from_bytes(buf[:8], "little") + 1:
            more = next(it, None)
            if more is None:
                st.truncated = True
                st.note("the export ends inside a binary field; that entry was skipped")
                return
            lineno += 1
            st.lines += 1
            buf += more
            if len(buf) >= 8 and int.from_bytes(buf[:8], "little") > 1 << 26:
                st.bad(lineno, f"binary field {line.decode(errors='replace')} claims an absurd size", line)
                return
        size = int.from_bytes(buf[:8], "little")
        if buf[8 + size:] != b"\n":
            st.bad(lineno, f"binary field {line.decode(errors='replace')} is not followed by a newline", line)
            continue
        entry[line.decode()] = list(buf[8:8 + size])  # journalctl -o json's form for bytes
    if entry:
        yield first, entry, head


def parse_journal_export(
    lines: Iterable[bytes], stats: FileStats | None = None, anchors: list[Anchor] | None = None,
) -> Iterator[ev.Event]:
    """Decode `journalctl -o export` output (what systemd-journal-remote reads)."""
    st = stats if stats is not None else FileStats("<export>")
    folder = _Folder(st, anchors)
    for lineno, rec, raw in _export_entries(lines, st):
        yield from folder.fold(rec, lineno, raw)
    folder.finish()


class _JournaldImporter:
    name = "journald"
    description = "journalctl -o json export (Kata, containerd, kernel)"

    def sniff(self, head: list[str]) -> bool:
        rec = first_json_object(head)
        return rec is not None and "__REALTIME_TIMESTAMP" in rec

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_journald_json(lines, stats, parsed.anchors)
        return parsed


register(_JournaldImporter())


class _JournalExportImporter:
    name = "journal-export"
    description = "journalctl -o export (journal export format)"

    def sniff(self, head: list[str]) -> bool:
        fields = [x for x in head[:60] if x.strip()]
        if not fields or not any(x.startswith("__REALTIME_TIMESTAMP=") for x in head[:200]):
            return False
        return sum(bool(re.match(r"^[A-Z0-9_]{1,64}(=|$)", x)) for x in fields) * 10 >= len(fields) * 8

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        parsed = Parsed(events=(), clock="realtime", ordered=False)
        parsed.events = parse_journal_export(lines, stats, parsed.anchors)
        return parsed


register(_JournalExportImporter())
