"""The typed journal decoder keeps the decoding contract: defaults, nulls, unknown keys, damage."""

from __future__ import annotations

import pytest

from diag import codec
from diag import events as ev
from diag.importers import FileStats
from diag.importers.journal import parse_journal

HOST = {"inode": 1, "is_host": True}


def test_absent_fields_take_their_defaults_and_unknown_keys_are_ignored() -> None:
    """Omitted fields get defaults (factories called); keys a newer agent added are ignored."""
    e = codec.loads(b'{"kind":"finding","ts_ns":5,"source":"core","finding_id":"r/k/5",'
                    b'"rule":"r","severity":"warning","summary":"s","future_field":[1,2]}')
    assert isinstance(e, ev.Finding)
    assert e.labels == () and e.evidence == () and e.status == "open" and e.actor is None


def test_null_and_nested_values_decode_as_before() -> None:
    """JSON null stays None; nested records and tuples of records are rebuilt."""
    e = codec.loads(b'{"kind":"link_changed","ts_ns":1,"source":"links","ifindex":3,'
                    b'"ifname":"eth1","netns":{"inode":7,"name":"pod"},"carrier":null}')
    assert isinstance(e, ev.LinkChanged) and e.carrier is None and e.netns.label == "pod"
    inv = codec.loads(b'{"kind":"inventory_observed","ts_ns":1,"source":"sysfs",'
                      b'"devices":[{"bdf":"0000:01:10.0","vfs":["a","b"]}]}')
    assert isinstance(inv, ev.InventoryObserved) and inv.devices[0].vfs == ("a", "b")


def test_decoded_events_are_real_frozen_instances() -> None:
    """Decoded straight into records, they compare, hash and refuse mutation like any event."""
    a = codec.loads(codec.dumps(ev.DeviceBound(ts_ns=1, source="u", bdf="b", driver="d")))
    b = ev.DeviceBound(ts_ns=1, source="u", bdf="b", driver="d")
    assert a == b and hash(a) == hash(b) and type(a) is ev.DeviceBound
    with pytest.raises(AttributeError):
        a.driver = "x"  # type: ignore[misc]


@pytest.mark.parametrize("line", [
    b'{"kind":"device_bound","ts_ns":1,"source":"u","bdf":"b"}',              # missing driver
    b'{"kind":"link_changed","ts_ns":1,"source":"l","ifindex":1,"ifname":"x","netns":"host"}',
    b'{"kind":"inventory_observed","ts_ns":1,"source":"s","devices":[7]}',
    b'{"kind":"finding","ts_ns":1,"source":"c","finding_id":"f","rule":"r","severity":"bad","summary":"s"}',
])
def test_damaged_records_are_value_errors_and_counted_by_readers(line: bytes) -> None:
    """A missing field or wrong nesting is a ValueError, and a journal reader counts and skips it."""
    with pytest.raises(ValueError):
        codec.loads(line)
    st = codec.ReadStats()
    assert list(parse_journal([line + b"\n"], st)) == [] and st.bad_lines == 1
    assert FileStats("x").bad_lines == 0


def test_nested_value_records_decode_typed_and_a_bad_one_is_a_value_error() -> None:
    """A nested namespace decodes to an equal NetnsRef; a nested record missing a field, or of
    the wrong shape or type, makes the whole line a ValueError."""
    line = (b'{"kind":"link_removed","ts_ns":%d,"source":"links","ifindex":3,"ifname":"eth1",'
            b'"netns":{"inode":4026532001,"pid":20001}}')
    a, b = codec.loads(line % 1), codec.loads(line % 2)
    assert isinstance(a, ev.LinkRemoved) and isinstance(b, ev.LinkRemoved)
    assert a.netns == b.netns == ev.NetnsRef(inode=4026532001, pid=20001)
    for bad in (b'{"pid":1}', b'[1]', b'"host"', b'{"inode":"7"}'):  # missing, shape, type
        with pytest.raises(ValueError):
            codec.loads(b'{"kind":"link_removed","ts_ns":1,"source":"l","ifindex":3,'
                        b'"ifname":"x","netns":' + bad + b'}')
