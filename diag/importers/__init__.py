"""Provides the postmortem importer registry: content sniffing, plain/.gz line reading, per-file stats.

An importer turns one kind of file an operator already has (the agent's journal, `udevadm
monitor`, `ip monitor`, `journalctl -o json`, logfmt logs, `lspci`, a snapshot, Kata's
configuration and state files) into the same events the live sources emit. Each is one module
with a pure `parse_<fmt>(lines) -> events` plus `sniff(head) -> bool`, registered with one
`register(...)` line and one line in IMPORTERS' module list. The format is recognised from content, never
from the file name; `.gz` input is read transparently and a truncated or corrupt stream ends
the file with a note instead of an exception.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from diag import events as ev
from diag.common.registry import Registry

Clock = Literal["realtime", "monotonic", "none", "static"]
"""How a file's event stamps are to be read.

`realtime`: nanoseconds since the epoch. `monotonic`: nanoseconds since boot (udevadm's
`KERNEL[s]`), to be aligned. `none`: the file has no time at all; stamps are ordinals.
`static`: a state listing (configuration, lspci) with no time of its own.
"""

HEAD_BYTES = 64 * 1024
"""How much of a file (decompressed) the sniffers see."""
MAX_LINE = 1024 * 1024
"""Longer lines are cut (the first MiB is kept, counted as malformed by the parser): a hostile or
broken file must not make one line eat the memory."""
MiB = 1024 * 1024
MAX_INPUT_BYTES = 256 * MiB
"""What one input gives at most (decompressed) to an importer that keeps its events: past it the
input is cut, and the report says so (the agent's own journal is streamed: not capped)."""
MAX_WHOLE_FILE = 16 * MiB
"""A file read whole (Kata configuration and state, a snapshot) larger than this is none of
those: it is refused, not held in memory."""
GZ_MAX_RATIO = 100
GZ_RATIO_FROM = 8 * MiB
"""A .gz input that has inflated past GZ_RATIO_FROM at more than GZ_MAX_RATIO times the
compressed bytes read is a compression bomb (text compresses 5-30 times): it is cut there."""
_INFLATE_CHUNK = 256 * 1024
"""Each decompress call gives at most this much (an unbounded call inflates 64 KiB to 64 MiB)."""


@dataclass(slots=True)
class FileStats:
    """What reading one input file gave and skipped, for the report."""

    path: str
    format: str = ""
    """Importer name, `unrecognised` or `unreadable`."""
    lines: int = 0
    events: int = 0
    bad_lines: int = 0
    first_bad: str = ""
    """`line N: why: <text>` for the first malformed line."""
    truncated: bool = False
    """The file ended early: a cut .gz stream or a last line without newline that did not parse."""
    error: str = ""
    """Why the file could not be read at all (exit status 2)."""
    notes: list[str] = field(default_factory=list)
    clock: Clock = "none"
    boot_id: str = ""
    bytes_read: int = 0

    def bad(self, lineno: int, why: str, text: bytes | str = b"") -> None:
        """Count one malformed line; keep the first as an example."""
        self.bad_lines += 1
        if not self.first_bad:
            sample = text if isinstance(text, str) else text.decode("utf-8", "replace")
            sample = sample.rstrip("\n")
            if len(sample) > 160:
                sample = sample[:159] + "…"
            self.first_bad = f"line {lineno}: {why}" + (f": {sample}" if sample else "")

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A pair of clock readings known to be the same instant (a journald entry has both)."""

    boot_id: str
    realtime_ns: int
    monotonic_ns: int


@dataclass(slots=True)
class Parsed:
    """An importer's result for one file: events in the file's own clock, in file order."""

    events: Iterable[ev.Event]
    clock: Clock
    boot_id: str = ""
    anchors: list[Anchor] = field(default_factory=list)
    """Filled while `events` is consumed (journald entries with both clocks)."""
    ordered: bool = True
    """True when `events` come sorted by stamp (streamed straight into the merge)."""
    untimed: list[bool] = field(default_factory=list)
    """Filled while `events` is consumed, one flag per event: True when its line had no time
    of its own (a known line in a pasted fragment); it borrowed its neighbour's stamp to keep
    its place in the input's order, and the report marks it time unknown."""
    resolution_ns: int = 0
    """The stamps are truncated to this (`dmesg -T`: whole seconds): the input is placed on the
    common clock only to within it, and its copies of a happening another input saw are merged
    within it."""
    pods: dict[str, tuple[str, str]] = field(default_factory=dict)
    """Sandbox id, or the prefix a listing shows (crictl: 13 characters) -> (namespace, pod):
    a listing that ties sandboxes to pods names the pod of a finding's sandbox."""
    batches: Iterator[list[ev.Event]] | None = None
    """The same events in lists, when the importer reads in blocks (the agent's journal): the
    replay takes a list at a time. One stream: `events` flattens it, read one or the other."""


class Importer(Protocol):
    """One input format."""

    name: str
    description: str

    def sniff(self, head: list[str]) -> bool:
        """True when the first lines of a file (decoded, newline-stripped) are this format."""
        ...

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        """Decode a whole file's lines (newlines kept); malformed lines go to `stats`."""
        ...


IMPORTERS: Registry[Importer] = Registry("importer", [
    "diag.importers.journal",
    "diag.importers.agentlogs",  # the agent's JSON log lines (kubectl logs, Loki, Elasticsearch)
    "diag.importers.journald",  # journald (-o json) and journal-export (-o export)
    "diag.importers.kubeevents",  # kubectl get events -o json / -o yaml
    "diag.importers.snapshot",
    "diag.importers.katastate",
    "diag.importers.udevadm",
    "diag.importers.ipmon",
    "diag.importers.lspci",
    "diag.importers.kataversion",
    "diag.importers.kataconfig",
    "diag.importers.collect",  # a kata-collect-data.sh report
    "diag.importers.iommugroups",
    "diag.importers.crictl",
    "diag.importers.describe",  # kubectl describe (its Events)
    "diag.importers.journalctl",  # journalctl's text output modes
    "diag.importers.ps",
    "diag.importers.klog",
    "diag.importers.dmesg",
    "diag.importers.logfmt",
    "diag.importers.text",  # any other text: the signature catalogue line by line (last)
])
"""Importer name -> importer, in registration order, which is the sniffing order (most specific
first); one line per importer module."""


def register(importer: Importer) -> Importer:
    """Register an importer under its `name` (written once, on the importer)."""
    return IMPORTERS.add(importer.name, importer)


# --------------------------------------------------------------------------------------------
# Reading plain and gzip files
# --------------------------------------------------------------------------------------------

_GZ_MAGIC = b"\x1f\x8b"


def is_gzip(path: str) -> bool:
    with open(path, "rb") as fh:
        return fh.read(2) == _GZ_MAGIC


def _gunzip(raw: io.BufferedReader, stats: FileStats) -> Iterator[bytes]:
    """Decompress a gzip stream chunk by chunk, keeping everything before a cut or corruption.

    `gzip.GzipFile` raises on a cut stream and loses the data of the last block; a journal
    rotated by a crashed agent or a copy cut by a full disk must still give what it holds.
    Concatenated members (what `cat a.gz b.gz` makes) are followed.
    """
    d = zlib.decompressobj(wbits=31)
    fed = False
    inflated = 0
    while True:
        chunk = raw.read(1 << 16)
        if not chunk:
            break
        stats.bytes_read += len(chunk)
        while chunk:
            fed = True
            try:
                out = d.decompress(chunk, _INFLATE_CHUNK)
            except zlib.error as exc:
                stats.truncated = True
                stats.note(f"compressed stream is corrupt ({exc}); read up to there")
                return
            if out:
                inflated += len(out)
                if inflated > GZ_RATIO_FROM and inflated > GZ_MAX_RATIO * stats.bytes_read:
                    stats.truncated = True
                    stats.note(f"a compression bomb: it inflates more than {GZ_MAX_RATIO} times "
                               f"(the limit past {GZ_RATIO_FROM // MiB} MiB); read only its first "
                               f"{inflated // MiB} MiB")
                    return
                yield out
            if d.eof:
                chunk = d.unused_data
                d = zlib.decompressobj(wbits=31)
                fed = False
                if not chunk.strip(b"\0"):
                    chunk = b""  # padding after the last member
            else:
                chunk = d.unconsumed_tail  # more output waits for this input
    if fed and not d.eof:
        tail = d.flush()
        if tail:
            yield tail
        stats.truncated = True
        stats.note("compressed stream is cut (truncated .gz); read up to the cut")


def _plain(raw: io.BufferedReader, stats: FileStats) -> Iterator[bytes]:
    while True:
        chunk = raw.read(1 << 14)
        if not chunk:
            return
        stats.bytes_read += len(chunk)
        yield chunk


def iter_lines(path: str, stats: FileStats, limit: int | None = MAX_INPUT_BYTES) -> Iterator[bytes]:
    """Yield the lines of a plain or gzip file; a cut or corrupt stream ends it with a note.

    The last line of a cut stream is yielded without its newline, so parsers can tell a
    truncated tail from a malformed line. Past `limit` bytes (decompressed; None: no limit)
    the input is cut and marked so.
    """
    for block in iter_blocks(path, stats, limit):
        parts = block.split(b"\n")
        last = parts.pop()
        for part in parts:
            yield part + b"\n"
        if last:
            yield last


def iter_blocks(path: str, stats: FileStats, limit: int | None = MAX_INPUT_BYTES) -> Iterator[bytes]:
    """The file as `iter_lines` reads it, in blocks of whole lines (each block ends with a
    newline; only the last one may not: the cut tail). What a reader that splits and decodes
    a block at a time uses (the agent's journal), so it pays no Python call per line here."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed in finally
    except OSError as exc:
        stats.error = f"{exc.strerror or exc}"
        return
    try:
        try:
            gz = raw.read(2) == _GZ_MAGIC
            raw.seek(0)
        except OSError as exc:
            stats.error = f"{exc.strerror or exc}"
            return
        chunks = _gunzip(raw, stats) if gz else _plain(raw, stats)
        pending = b""
        skipping = False  # inside a line longer than MAX_LINE: drop until its end
        total = 0
        try:
            for chunk in chunks:
                total += len(chunk)
                if limit is not None and total > limit:
                    stats.truncated = True
                    stats.note(f"read only its first {limit // MiB} MiB (the limit for one input)")
                    pending = b""
                    break
                data = pending + chunk if pending else chunk
                cut = data.rfind(b"\n") + 1
                pending = data[cut:]
                if cut:
                    start = 0
                    if skipping:  # the rest of the overlong line ends at the first newline
                        skipping = False
                        start = data.index(b"\n") + 1
                    if start < cut:
                        yield data[start:cut]
                if len(pending) > MAX_LINE:
                    if not skipping:
                        stats.note(f"a line longer than {MAX_LINE // 1024} KiB was cut there")
                        yield pending[:MAX_LINE] + b"\n"
                    skipping = True
                    pending = b""
        except OSError as exc:
            stats.truncated = True
            stats.note(f"read error ({exc.strerror or exc}); read up to there")
        if pending and not skipping:
            yield pending
    finally:
        raw.close()


def read_whole(lines: Iterable[bytes], stats: FileStats, what: str,
               limit: int | None = None) -> bytes | None:
    """A file read whole, or None (and `stats.error`) when it is larger than `limit` (default
    MAX_WHOLE_FILE): no `what` is that large, and holding it would cost its size in memory."""
    limit = MAX_WHOLE_FILE if limit is None else limit
    parts: list[bytes] = []
    size = 0
    for line in lines:
        size += len(line)
        if size > limit:
            stats.error = (f"larger than {_size(limit)} (decompressed), the limit for {what}: "
                           "not read")
            return None
        parts.append(line)
    return b"".join(parts)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n % MiB == 0 else f"{n} bytes"


def read_head(path: str, limit: int = HEAD_BYTES) -> tuple[list[str], str]:
    """First lines of a file (decompressed, decoded), and an error text when unreadable."""
    st = FileStats(path)
    buf = bytearray()
    for line in iter_lines(path, st):
        buf += line
        if len(buf) >= limit:
            break
    if st.error:
        return [], st.error
    if not buf and st.truncated:  # a .gz that gives nothing at all: cannot be read
        return [], "; ".join(st.notes) or "compressed stream is corrupt"
    text = bytes(buf[:limit]).decode("utf-8", "replace")
    lines = text.split("\n")
    if len(buf) >= limit and lines:
        lines.pop()  # the cut-off last line would mislead the sniffers
    return lines, ""


def sniff(path: str) -> tuple[Importer | None, str]:
    """The importer for a file by its content, and an error text when it cannot be read."""
    head, err = read_head(path)
    if err:
        return None, err
    for imp in IMPORTERS.load().values():
        try:
            if imp.sniff(head):
                return imp, ""
        except Exception:  # a sniffer bug must not stop the others
            continue
    return None, ""


def walk(inputs: Iterable[str]) -> list[str]:
    """Expand directories (recursively, sorted) into files; files stay in the order given.
    A directory's `*.lock` files (the agent's journal lock: a pid, no events) are left out."""
    out: list[str] = []
    for item in inputs:
        if os.path.isdir(item):
            for dirpath, dirnames, filenames in os.walk(item):
                dirnames.sort()
                for name in sorted(filenames):
                    if not name.endswith(".lock"):
                        out.append(os.path.join(dirpath, name))
        else:
            out.append(item)
    return out


def text_lines(lines: Iterable[str], stats: FileStats) -> Iterator[tuple[int, str]]:
    """(line number, line without its newline) of every non-blank line; all lines are counted."""
    for lineno, raw in enumerate(lines, 1):
        stats.lines += 1
        line = raw.rstrip("\r\n")
        if line.strip():
            yield lineno, line


def decode_line(raw: bytes) -> str:
    """A line as text: invalid UTF-8 replaced, newline and carriage return stripped."""
    return raw.decode("utf-8", "replace").rstrip("\r\n")


LineParser = Callable[[Iterable[str]], Iterator[ev.Event]]


def first_json_object(head: list[str], limit: int = 20) -> dict[str, object] | None:
    """The first non-blank line of `head` parsed as a JSON object; None when that line is not
    one (sniffers of JSON-lines formats all start here)."""
    from diag import codec

    for line in head[:limit]:
        s = line.strip()
        if not s:
            continue
        if not s.startswith("{"):
            return None
        try:
            rec = codec.parse_json(s)
        except ValueError:
            return None
        return rec if isinstance(rec, dict) else None
    return None
