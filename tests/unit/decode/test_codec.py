"""The journal wire format: every event kind round-trips; damage is reported, never raised."""

from __future__ import annotations

import typing

import msgspec
import pytest

from diag import codec
from diag import events as ev
from diag.common.errors import JournalFormatError


def _sample(tp: typing.Any, name: str) -> typing.Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, __import__("types").UnionType):
        return _sample(next(a for a in args if a is not type(None)), name)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return (_sample(args[0], name),)
        return tuple(_sample(a, name) for a in args)
    if tp is ev.Severity:
        return ev.Severity.WARNING
    if tp is bool:
        return True
    if tp is int:
        return 7
    if tp is str:
        return f"{name}-\x1b[31m-é"
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _build(tp)
    raise AssertionError(f"no sample for {tp!r}")


def _build(cls: type) -> typing.Any:
    hints = typing.get_type_hints(cls, vars(ev))
    return cls(**{f.name: _sample(hints[f.name], f.name) for f in msgspec.structs.fields(cls)})


@pytest.mark.parametrize("kind", sorted(ev.EVENT_TYPES))
def test_every_kind_round_trips_with_all_fields_set(kind: str) -> None:
    """An event with every field set (nested records, tuples, enums) decodes to an equal event."""
    event = _build(ev.EVENT_TYPES[kind])
    line = codec.dumps(event)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert codec.loads(line) == event


@pytest.mark.parametrize("kind", sorted(ev.EVENT_TYPES))
def test_defaults_are_omitted_and_restored(kind: str) -> None:
    """Only required fields go on the wire for a minimal event; decoding restores the defaults."""
    cls = ev.EVENT_TYPES[kind]
    hints = typing.get_type_hints(cls, vars(ev))
    required = {
        f.name: _sample(hints[f.name], f.name)
        for f in msgspec.structs.fields(cls)
        if f.required
    }
    event = cls(**required)
    rec = codec.to_record(event)
    assert set(rec) == {"kind", *required}
    assert codec.loads(codec.dumps(event)) == event


def test_header_round_trips_and_newer_schema_is_refused() -> None:
    """The header decodes; a header from a newer schema raises a titled JournalFormatError."""
    h = codec.Header(agent_version="0.1.0", hostname="h", kernel="6.18", boot_id="b", started_ns=1)
    assert codec.loads(codec.dumps(h)) == h
    newer = codec.dumps(ev.replace(h, schema=codec.SCHEMA_VERSION + 1))
    with pytest.raises(JournalFormatError, match="newer"):
        codec.loads(newer)


def test_truncated_tail_and_bad_lines_are_counted_not_raised() -> None:
    """A cut last line (crash) is flagged; a garbage line mid-file is counted with its number."""
    good = codec.dumps(ev.DeviceRemoved(ts_ns=1, source="uevent", bdf="0000:01:10.0"))
    lines = [codec.dumps(codec.Header()), good, b"{not json\n", good, good[:20]]
    stats = codec.ReadStats()
    out = list(codec.iter_records(lines, stats))
    assert len(out) == 3
    assert stats.bad_lines == 1 and stats.first_bad.startswith("line 3:")
    assert stats.truncated_tail


def test_unknown_kind_is_a_bad_line() -> None:
    """A record of an unknown kind is skipped and counted."""
    stats = codec.ReadStats()
    assert list(codec.iter_records([b'{"kind":"nope","ts_ns":1}\n'], stats)) == []
    assert stats.bad_lines == 1 and "unknown record kind" in stats.first_bad
