"""Provides the journal wire format: JSON Lines, a header line with the schema version, then records.

Every line is one JSON object. The first line of a journal is the header
(`{"kind": "header", "schema": 1, ...}`); every other line is an event or a finding, with its
`kind` and its fields. Fields equal to their default are omitted, so lines stay short; nested
records (`PciDevice`, `Process`, `NetnsRef`, ...) are plain objects. Decoding rebuilds the frozen
dataclasses from per-class converters compiled once from the type hints.

This module does no I/O: callers hand it bytes and iterables of lines.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

from diag import events as ev
from diag.common.errors import JournalFormatError

try:  # orjson is a declared dependency; the fallback keeps the pure tests independent of it.
    import orjson

    def _dumps(obj: Any) -> bytes:
        return orjson.dumps(obj)

    _loads: Callable[[bytes | str], Any] = orjson.loads
except ImportError:  # pragma: no cover - exercised only without orjson
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()

    _loads = json.loads

SCHEMA_VERSION = 1
"""Bump on any incompatible change of a kind or field; readers refuse newer schemas."""

JSONDecodeError: type[Exception] = ValueError  # orjson.JSONDecodeError and json's both subclass it


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The first line of every journal file."""

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


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_Encoder = Callable[[Any], Any]
_ENCODERS: dict[type, Callable[[Any], dict[str, Any]]] = {}
_DECODERS: dict[type, Callable[[dict[str, Any]], Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(ev))


def _converter(tp: Any, leaf: Callable[[type], _Encoder | None],
               seq: Callable[[Iterable[Any]], Any]) -> _Encoder | None:
    """A converter for values of type `tp`, or None when they pass as they are: `leaf` makes
    the one of a class (a record, an enum), carried through Optional and tuple types (`seq`
    makes the sequence: a list to encode, a tuple to decode)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        one = _converter(inner[0], leaf, seq) if len(inner) == 1 else None
        if one is None:
            return None
        return lambda v: None if v is None else one(v)
    if origin is tuple:
        args = typing.get_args(tp)
        each = _converter(args[0], leaf, seq) if args else None
        if each is None:
            return seq
        return lambda v: seq(each(x) for x in v)
    return leaf(tp) if isinstance(tp, type) else None


def _encoder_leaf(tp: type) -> _Encoder | None:
    if dataclasses.is_dataclass(tp):
        return _record_encoder(tp)
    if issubclass(tp, enum.Enum):
        return lambda v: v.name.lower()
    return None


def _value_encoder(tp: Any) -> _Encoder | None:
    """Return a converter for values of type `tp`, or None when the value is JSON as it is."""
    return _converter(tp, _encoder_leaf, list)


def _record_encoder(cls: type) -> Callable[[Any], dict[str, Any]]:
    cached = _ENCODERS.get(cls)
    if cached is not None:
        return cached
    hints = _hints(cls)
    plan: list[tuple[str, Any, _Encoder | None]] = []
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default: Any = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        plan.append((f.name, default, _value_encoder(hints[f.name])))
    kind = getattr(cls, "kind", "") if issubclass(cls, ev.Event) else ""

    def encode(obj: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": kind} if kind else {}
        for name, default, enc in plan:
            value = getattr(obj, name)
            if default is not dataclasses.MISSING and value == default:
                continue
            out[name] = value if enc is None or value is None else enc(value)
        return out

    _ENCODERS[cls] = encode
    return encode


def to_record(obj: ev.Event | Header) -> dict[str, Any]:
    """Return the JSON-ready dict of an event, finding or header."""
    if isinstance(obj, Header):
        rec = dataclasses.asdict(obj)
        return {"kind": "header", **rec}
    return _record_encoder(type(obj))(obj)


def dumps(obj: ev.Event | Header) -> bytes:
    """Encode one record as a journal line, newline included."""
    return _dumps(to_record(obj)) + b"\n"


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def _decoder_leaf(tp: type) -> _Encoder | None:
    if dataclasses.is_dataclass(tp):
        if not issubclass(tp, ev.Event) and _all_scalar(tp):
            return _interned(_record_decoder(tp))
        return _record_decoder(tp)
    if tp is ev.Severity:
        return ev.Severity.parse
    return None


def _value_decoder(tp: Any) -> _Encoder | None:
    """Return the converter from JSON for values of type `tp`, or None when none is needed."""
    return _converter(tp, _decoder_leaf, tuple)


_SCALARS = (int, str, bool, float, type(None))
INTERN_MAX = 4096
"""Distinct nested value records (namespaces, settings) kept per class for sharing."""


def _all_scalar(cls: type) -> bool:
    """Every field is a scalar or an optional scalar (so a record's items are hashable)."""
    for tp in _hints(cls).values():
        args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
        if not all(a in _SCALARS for a in args):
            return False
    return True


def _interned(dec: Callable[[dict[str, Any]], Any]) -> Callable[[Any], Any]:
    """Share one frozen instance per distinct record: a journal names the same few network
    namespaces in every link event, and looking one up costs less than building it."""
    cache: dict[tuple[Any, ...], Any] = {}

    def decode(rec: Any) -> Any:
        try:
            key = tuple(rec.items())
            hit = cache.get(key)
        except (AttributeError, TypeError):  # not an object, or an unhashable value in it
            return dec(rec)
        if hit is None:
            hit = dec(rec)
            if len(cache) >= INTERN_MAX:
                cache.clear()
            cache[key] = hit
        return hit

    return decode


_ABSENT = object()


def _slot_setter(cls: type, name: str) -> Callable[[Any, Any], None] | None:
    """The slot descriptor's setter for `name` (bypasses a frozen class's __setattr__)."""
    for klass in cls.__mro__:
        d = klass.__dict__.get(name)
        if d is not None:
            setter = getattr(d, "__set__", None)
            return setter if callable(setter) and type(d).__name__ == "member_descriptor" else None
    return None


def _record_decoder(cls: type) -> Callable[[dict[str, Any]], Any]:
    """A decoder compiled once per class: one expression per field, no per-record loop.

    Replay speed is decode speed (a postmortem reads millions of lines), so the decoder is
    generated code like dataclasses' own `__init__`: each field is read with `rec.get` (absent
    -> its default; JSON null -> None; else through the nested decoder), and the instance is
    built by setting its slots directly (a frozen dataclass's `__init__` pays an
    `object.__setattr__` call per field; this halves construction). Classes with a
    `__post_init__` or without slots fall back to calling the class. Unknown keys are ignored
    (a newer agent of the same schema); a missing required field raises TypeError.
    """
    cached = _DECODERS.get(cls)
    if cached is not None:
        return cached
    hints = _hints(cls)
    fields = dataclasses.fields(cls)
    ns: dict[str, Any] = {"cls": cls, "_A": _ABSENT, "_new": object.__new__}
    setters = [_slot_setter(cls, f.name) for f in fields]
    direct = all(s is not None for s in setters) and not hasattr(cls, "__post_init__")
    values: list[str] = []
    for i, f in enumerate(fields):
        dec = _value_decoder(hints[f.name])
        key = repr(f.name)
        if dec is not None:
            ns[f"d{i}"] = dec
        if f.default is not dataclasses.MISSING:
            ns[f"D{i}"] = f.default
            default: str | None = f"D{i}"
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"F{i}"] = f.default_factory
            default = f"F{i}()"
        else:
            default = None
        if default is None:
            get = f"rec[{key}]"
            values.append(get if dec is None else f"(None if (v{i} := {get}) is None else d{i}(v{i}))")
        elif dec is None and not default.endswith("()"):
            values.append(f"g({key}, {default})")
        else:
            conv = f"v{i}" if dec is None else f"(None if v{i} is None else d{i}(v{i}))"
            values.append(f"({default} if (v{i} := g({key}, _A)) is _A else {conv})")
    if direct:
        for i, s in enumerate(setters):
            ns[f"s{i}"] = s
        body = ["    o = _new(cls)"]
        body += [f"    s{i}(o, {v})" for i, v in enumerate(values)]
        body.append("    return o")
    else:
        args = ", ".join(f"{f.name}={v}" for f, v in zip(fields, values, strict=True))
        body = [f"    return cls({args})"]
    src = ("def decode(rec):\n    try:\n        g = rec.get\n"
           + "\n".join("    " + line for line in body)
           + "\n    except KeyError as exc:\n"
           + "        raise TypeError(f'missing required field {exc}') from None\n"
           + "    except AttributeError as exc:\n"
           + "        raise TypeError(f'not an object where a record belongs ({exc})') from None\n")
    exec(compile(src, f"<codec decoder for {cls.__name__}>", "exec"), ns)
    decode: Callable[[dict[str, Any]], Any] = ns["decode"]
    _DECODERS[cls] = decode
    return decode


def decode_value(cls: type) -> Callable[[dict[str, Any]], Any]:
    """The decoder of one record class (an event or a value record such as `PciDevice`).

    Raises TypeError on a missing or unknown required field; unknown keys are ignored.
    """
    return _record_decoder(cls)


_BY_KIND: dict[str, Callable[[dict[str, Any]], Any]] = {}
"""Event decoders by wire kind, filled on first use (the hot path of a replay)."""


def from_record(rec: dict[str, Any]) -> ev.Event | Header:
    """Rebuild an event, finding or header from its dict; raises ValueError when it cannot."""
    kind = rec.get("kind")
    dec = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if dec is not None:
        try:
            return typing.cast(ev.Event, dec(rec))
        except TypeError as exc:  # missing required field, wrong nesting
            raise ValueError(f"bad {kind} record: {exc}") from None
    if kind == "header":
        h = Header(**{k: v for k, v in rec.items() if k != "kind" and k in Header.__slots__})
        if h.schema > SCHEMA_VERSION:
            raise JournalFormatError(
                f"journal schema {h.schema} is newer than this vfiowatch understands "
                f"({SCHEMA_VERSION})",
                hint="upgrade vfiowatch to read this journal",
            )
        return h
    cls = ev.EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown record kind {kind!r}")
    dec = _BY_KIND[typing.cast(str, kind)] = _record_decoder(cls)
    try:
        return typing.cast(ev.Event, dec(rec))
    except TypeError as exc:  # missing required field, wrong nesting
        raise ValueError(f"bad {kind} record: {exc}") from None


def loads(line: bytes | str) -> ev.Event | Header:
    """Decode one journal line; raises ValueError (or JournalFormatError) on bad input."""
    rec = _loads(line)
    if not isinstance(rec, dict):
        raise ValueError("journal line is not a JSON object")
    return from_record(rec)


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


def iter_records(
    lines: Iterable[bytes], stats: ReadStats | None = None
) -> Iterator[ev.Event | Header]:
    """Decode journal lines; bad lines are counted in `stats` and skipped, never raised.

    A newer schema in a header raises JournalFormatError: nothing after it can be trusted.
    """
    st = stats if stats is not None else ReadStats()
    for raw in lines:
        st.lines += 1
        if not raw.strip():
            continue
        try:
            rec = loads(raw)
        except JournalFormatError:
            raise
        except (ValueError, TypeError, KeyError) as exc:
            if not raw.endswith(b"\n"):
                st.truncated_tail = True
            else:
                st.bad_lines += 1
                if not st.first_bad:
                    st.first_bad = f"line {st.lines}: {exc}"
            continue
        st.records += 1
        yield rec
