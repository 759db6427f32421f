"""Provides the journal wire format: JSON Lines, a header line with the schema version, then records.

Every line is one JSON object. The first line of a journal is the header
(`{"kind": "header", "schema": 1, ...}`); every other line is an event or a finding, with its
`kind` and its fields. Fields equal to their default are omitted, so lines stay short; nested
records (`PciDevice`, `Process`, `NetnsRef`, ...) are plain objects.

One schema, one codec: the records of `diag.events` are msgspec Structs tagged by `kind`, so
one msgspec encoder writes them and one decoder reads a line straight into its typed, frozen
record, checking every field's type on the way (a line with `"ts_ns": "abc"` or
`"schema": null` is a bad line, counted like malformed JSON, never an error further on). Unknown
keys are ignored (a newer agent of the same schema); an unknown `kind` is a bad line.

This module does no I/O: callers hand it bytes and iterables of lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import msgspec

from diag import events as ev
from diag.common.errors import JournalFormatError

SCHEMA_VERSION = 1
"""Bump on any incompatible change of a kind or field; readers refuse newer schemas."""

DecodeError = msgspec.DecodeError
"""What a bad line raises (malformed JSON, or a record that does not fit its schema:
`msgspec.ValidationError` is a subclass)."""


class Header(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind", tag="header"):
    """The first line of every journal file (every field written, defaults included)."""

    kind: ClassVar[str] = "header"
    schema: int = SCHEMA_VERSION
    agent_version: str = ""
    hostname: str = ""
    kernel: str = ""
    boot_id: str = ""
    started_ns: int = 0
    part: int = 0
    """Rotation part number; 0 for the first file of a run."""
    snapshot_records: int = 0
    """How many records after this header restate the state when the file began (journal sink:
    inventory, Kata configs, links, sandboxes, source health, active findings); not observed live."""


Line = ev.Event | Header
"""What a journal line decodes to."""

# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_ENCODER = msgspec.json.Encoder()


def dumps(obj: Line) -> bytes:
    """Encode one record as a journal line, newline included."""
    return _ENCODER.encode(obj) + b"\n"


def dumps_lines(objs: Iterable[Line]) -> bytes:
    """Encode records as journal lines (one buffer: what a sink writes in one call)."""
    return _ENCODER.encode_lines(list(objs))


def to_record(obj: Line) -> dict[str, Any]:
    """The JSON-ready dict of an event, finding or header (what its line holds)."""
    rec: dict[str, Any] = msgspec.to_builtins(obj)
    return rec


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decoder() -> msgspec.json.Decoder[Any]:
    kinds = tuple(ev.EVENT_TYPES.values())
    return msgspec.json.Decoder(Union[(Header, *kinds)])


_DECODER: msgspec.json.Decoder[Any] | None = None
_KNOWN = 0
"""How many kinds `_DECODER` was built for (a kind registered later rebuilds it)."""


def _typed() -> msgspec.json.Decoder[Any]:
    global _DECODER, _KNOWN
    if _DECODER is None or len(ev.EVENT_TYPES) != _KNOWN:
        _DECODER, _KNOWN = _decoder(), len(ev.EVENT_TYPES)
    return _DECODER


def _checked(rec: Any) -> Line:
    if type(rec) is Header and rec.schema > SCHEMA_VERSION:
        raise JournalFormatError(
            f"journal schema {rec.schema} is newer than this vfiowatch understands "
            f"({SCHEMA_VERSION})",
            hint="upgrade vfiowatch to read this journal",
        )
    return rec  # type: ignore[no-any-return]


def loads(line: bytes | str) -> Line:
    """Decode one journal line; raises DecodeError (a ValueError: a bad line) or
    JournalFormatError (a newer schema)."""
    try:
        return _checked(_typed().decode(line))
    except RecursionError:
        raise DecodeError("nested deeper than any record (a hostile or damaged line)") from None


def from_record(rec: dict[str, Any]) -> Line:
    """Rebuild an event, finding or header from its dict; raises DecodeError when it cannot."""
    return _checked(msgspec.convert(rec, Union[(Header, *ev.EVENT_TYPES.values())]))


def decode_value(cls: type) -> Callable[[Any], Any]:
    """The converter of one record class (an event or a value record such as `PciDevice`)
    from its plain-JSON form; raises DecodeError (msgspec.ValidationError) when it does not fit."""

    def convert(rec: Any) -> Any:
        return msgspec.convert(rec, cls)

    return convert


def parse_json(data: bytes | str) -> Any:
    """Parse any JSON document into plain objects (for importers of other tools' JSON); raises
    DecodeError (a ValueError) for a bad one, a too deeply nested one included."""
    try:
        return msgspec.json.decode(data)
    except RecursionError:
        raise DecodeError("JSON nested too deeply to read") from None


def _why(exc: Exception) -> str:
    """What is wrong with a bad line, in words (msgspec's message, and the unknown kind)."""
    text = str(exc)
    if text.startswith("Invalid value ") and text.endswith("- at `$.kind`"):
        return f"unknown record kind {text[len('Invalid value '):-len(' - at `$.kind`')]}"
    return text


@dataclass(slots=True)
class ReadStats:
    """What reading a journal skipped, for the user to be told."""

    lines: int = 0
    records: int = 0
    bad_lines: int = 0
    first_bad: str = ""
    """`line N: why` for the first bad line."""
    truncated_tail: bool = False
    """The last line had no newline and did not parse: a crash cut it (kill -9, power loss)."""


def iter_batches(
    blocks: Iterable[bytes], stats: ReadStats | None = None
) -> Iterator[list[Line]]:
    """Decode blocks of journal lines (`diag.importers.iter_blocks`: whole lines, only the last
    block may end without a newline) into lists of up to BATCH records; what `iter_records`
    does line by line (bad lines counted and skipped, a newer schema raises), at a Python call
    per list: BATCH good event lines are decoded in one comprehension, and only a list with a
    bad line or a header is gone through line by line.
    """
    st = stats if stats is not None else ReadStats()
    decode = _typed().decode
    header = Header
    errors = (msgspec.DecodeError, RecursionError)
    for block in blocks:
        every = block.split(b"\n")
        cut = every.pop()  # b"" after a final newline; else the tail a crash cut
        for at in range(0, len(every) or 1, BATCH):
            lines = every[at:at + BATCH]
            last = cut if at + BATCH >= len(every) else b""
            try:
                recs: list[Any] | None = [decode(raw) for raw in lines]
            except errors:
                recs = None
            if recs is not None and not last and header not in map(type, recs):
                st.lines += len(lines)
                st.records += len(recs)
            else:  # rare: a bad line, a header, the cut tail
                slow = [raw + b"\n" for raw in lines]
                if last:
                    slow.append(last)
                recs = []
                try:
                    recs.extend(iter_records(slow, st))
                except JournalFormatError:
                    if recs:
                        yield recs  # what came before the newer header, as line by line
                    raise
            if recs:
                yield recs


BATCH = 32
"""Lines decoded into one list: a few dozen records stay in the CPU's caches until the replay
has fed them to the core (a 64 KiB block at once, ~280 records, cost 10-15 % more)."""


def iter_records(
    lines: Iterable[bytes], stats: ReadStats | None = None
) -> Iterator[Line]:
    """Decode journal lines; bad lines are counted in `stats` and skipped, never raised.

    A newer schema in a header raises JournalFormatError: nothing after it can be trusted.
    """
    st = stats if stats is not None else ReadStats()
    decode = _typed().decode
    header = Header
    n = st.lines
    records = st.records
    try:
        for raw in lines:
            n += 1
            try:
                rec = decode(raw)
            except (msgspec.DecodeError, RecursionError) as exc:
                # RecursionError: a line nested deeper than the decoder's stack (no record
                # nests so deep: a hostile or damaged line, counted like any other bad one)
                if not raw.strip():
                    continue
                if not raw.endswith(b"\n"):
                    st.truncated_tail = True
                else:
                    st.bad_lines += 1
                    if not st.first_bad:
                        st.first_bad = f"line {n}: {_why(exc)}"
                continue
            if type(rec) is header:
                st.lines = n
                _checked(rec)
            records += 1
            st.lines, st.records = n, records
            yield rec
    finally:
        st.lines, st.records = n, records
