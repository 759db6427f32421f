"""Kata decoders never raise on arbitrary input (hypothesis): logfmt, journald entries, state JSON, TOML trees."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from diag import events as ev
from diag.sources.kata import decode as kata_decode
from diag.sources.kata import effective, loglines, signatures

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=30,
)
KEYS = st.sampled_from(["Network", "Endpoints", "Type", "physical", "Physical", "BDF", "Driver", "Devices",
                        "VFIODevs", "HypervisorState", "Pid", "Config", "ContainerConfigs", "Annotations",
                        "resource", "endpoint", "physical_endpoint", "bdf", "hypervisor", "config", "pid"])
STATEY = st.recursive(
    st.none() | st.integers() | st.text(max_size=16) | st.sampled_from(["physical", "vfio", "0000:01:10.0"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=40,
)
TOML_VAL = st.recursive(
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=2),
    max_leaves=6,
)
HYP_KEYS = st.sampled_from(["cold_plug_vfio", "hot_plug_vfio", "pcie_root_port", "pcie_switch_port",
                            "enable_annotations", "machine_type", "x"])


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=300))
def test_text_lines(line: str) -> None:
    """Any text line decodes (or is None) and matching never raises."""
    rec = loglines.decode_text_line(line)
    if rec is not None:
        loglines.to_event(rec, ts_ns=0)
    signatures.match(line)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(["MESSAGE", "SYSLOG_IDENTIFIER", "_TRANSPORT", "PRIORITY", "_PID",
                                        "__REALTIME_TIMESTAMP", "SOURCE", "LEVEL"]), JSON, max_size=6))
def test_journal_entries(entry: dict) -> None:
    """Any journald-shaped object decodes without raising."""
    rec = loglines.decode_journal_entry(entry)
    if rec is not None:
        loglines.to_event(rec, ts_ns=0)


@settings(max_examples=150, deadline=None)
@given(STATEY)
def test_state_files(doc: object) -> None:
    """Any JSON document as persist.json / state.json: a StateInfo or a DecodeError, never an exception."""
    text = json.dumps(doc)
    for decode in (kata_decode.decode_persist, kata_decode.decode_state, kata_decode.decode_bundle):
        out = decode(text, "/x.json")
        assert isinstance(out, (kata_decode.StateInfo, kata_decode.BundleInfo, kata_decode.DecodeError))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(HYP_KEYS, TOML_VAL, max_size=5), st.sampled_from(["qemu", "clh", "fc"]),
       st.sampled_from(["go", "rs"]))
def test_config_trees(table: dict, hyp: str, runtime: str) -> None:
    """Any value types under [hypervisor.<h>]: a KataConfig plus Kata-style errors, never an exception."""
    layer = effective.Layer("/c.toml", "file", "", {"hypervisor": {hyp: table}})
    cfg, errors = effective.effective_config([layer], handler="h", runtime=runtime)
    assert isinstance(cfg, ev.KataConfig)
    assert all(e.path == "/c.toml" for e in errors)
    effective.apply_annotations(cfg, {effective.ANN_COLD: str(table.get("x", "")), effective.ANN_ROOT_PORT: str(table.get("x", ""))})
