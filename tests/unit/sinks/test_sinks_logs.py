"""The log sink: which lines are written, at which level, with which flat keys, and how rendered."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from diag import codec, render
from diag import events as ev
from diag.core.correlator import Correlator
from diag.sinks.logs import DOMAIN_KEYS, LogSink, describe, iso_utc

TS = 1_795_791_194_123_456_789  # 2026-11-27T14:53:14.123456789Z
BDF = "0000:01:10.2"
PF = "0000:01:00.0"


def _finding(severity: ev.Severity, status: str = "open") -> ev.Finding:
    return ev.Finding(
        ts_ns=TS, source="core", finding_id=f"vfio-bind-coldplug-disabled/{BDF}/1",
        rule="vfio-bind-coldplug-disabled", severity=severity, summary="VF rebound to vfio-pci",
        status=status, bdf=BDF, pf=PF, vf_index=2, sandbox_id="sb1", pod="web-0",
        pod_namespace="prod", actor=ev.Process(pid=4242, comm="containerd-shim"),
        remedy="enable cold_plug_vfio", resolved_reason="rebound to igbvf" if status == "resolved" else "",
    )


@pytest.mark.parametrize(("severity", "level"), [
    (ev.Severity.INFO, "info"), (ev.Severity.WARNING, "warning"),
    (ev.Severity.ERROR, "error"), (ev.Severity.CRITICAL, "critical"),
])
def test_findings_log_at_the_level_of_their_severity(severity: ev.Severity, level: str) -> None:
    """An open finding logs at info/warning/error/critical by severity, with the domain keys."""
    got = describe(_finding(severity))
    assert got is not None
    lvl, name, fields = got
    assert (lvl, name) == (level, "finding")
    assert fields["timestamp"] == iso_utc(TS) and fields["summary"] == "VF rebound to vfio-pci"
    assert {k: fields[k] for k in ("bdf", "pf", "vf_index", "sandbox_id", "pod", "namespace",
                                   "actor_pid", "actor_comm", "rule", "severity", "finding_id",
                                   "synthetic")} == {
        "bdf": BDF, "pf": PF, "vf_index": 2, "sandbox_id": "sb1", "pod": "web-0",
        "namespace": "prod", "actor_pid": 4242, "actor_comm": "containerd-shim",
        "rule": "vfio-bind-coldplug-disabled", "severity": severity.label,
        "finding_id": f"vfio-bind-coldplug-disabled/{BDF}/1", "synthetic": False,
    }


def test_a_resolved_finding_logs_at_info_with_its_reason() -> None:
    """Resolution is good news: info, status=resolved, the reason, no remedy."""
    lvl, name, fields = describe(_finding(ev.Severity.CRITICAL, "resolved"))  # type: ignore[misc]
    assert (lvl, name, fields["status"]) == ("info", "finding", "resolved")
    assert fields["resolved_reason"] == "rebound to igbvf" and "remedy" not in fields


def test_raw_events_log_only_when_asked() -> None:
    """A DeviceBound is silent by default and an info line with --log-events; ticks never log."""
    e = ev.DeviceBound(ts_ns=TS, source="uevent", bdf=BDF, driver="vfio-pci",
                       previous_driver="igbvf", synthetic=True)
    assert describe(e) is None
    lvl, name, fields = describe(e, log_events=True)  # type: ignore[misc]
    assert (lvl, name) == ("info", "device_bound")
    assert fields["driver"] == "vfio-pci" and fields["previous_driver"] == "igbvf"
    assert fields["synthetic"] is True and fields["source"] == "uevent"
    assert describe(ev.ClockTicked(ts_ns=TS, source="runtime"), log_events=True) is None


def test_health_always_logs() -> None:
    """Source down, losses and decode failures log at warning without --log-events."""
    down = ev.SourceStateChanged(ts_ns=TS, source="runtime", name="ebpf", up=False,
                                 reason="bcc missing", hint="apt-get install python3-bpfcc")
    lost = ev.EventsLost(ts_ns=TS, source="uevent", lost_source="uevent", count=12, reason="ENOBUFS")
    stopped = ev.SourceStateChanged(ts_ns=TS, source="runtime", name="ebpf", up=False, reason="stopped")
    assert describe(down)[:2] == ("warning", "source_state_changed")  # type: ignore[index]
    assert describe(down)[2]["source"] == "ebpf"  # type: ignore[index]
    assert describe(lost)[:2] == ("warning", "events_lost")  # type: ignore[index]
    assert describe(stopped)[0] == "info"  # type: ignore[index]


def test_without_log_events_exactly_the_always_logged_kinds_are_written() -> None:
    """render.ALWAYS_LOGGED (which postmortem uses to tell whether an agent's logs were written
    with --log-events) is what the sink writes without it: the demo recording's every kind plus
    the health kinds go in, and the kinds of the lines out are exactly those in the set."""
    demo = Path(__file__).resolve().parents[3] / "diag" / "data" / "demo.jsonl"
    with demo.open("rb") as fh:
        items = [r for r in codec.iter_records(fh) if isinstance(r, ev.Event)]
    items += [ev.SourceStateChanged(ts_ns=TS, source="runtime", name="ebpf", up=False, reason="x"),
              ev.EventsLost(ts_ns=TS, source="uevent", lost_source="uevent", count=1, reason="ENOBUFS"),
              ev.Resynced(ts_ns=TS, source="uevent", resynced_source="uevent"),
              ev.DecodeFailed(ts_ns=TS, source="uevent", failed_source="uevent", reason="bad")]
    given = {type(i) for i in items}
    assert len(given) > 10 and given >= render.ALWAYS_LOGGED
    for batch in (False, True):
        out = io.StringIO()
        sink = LogSink(stream=out, log_events=False)
        if batch:
            sink.write_batch(items)
        else:
            for i in items:
                sink.write(i)
        written = {json.loads(line)["event"] for line in out.getvalue().splitlines()}
        assert written == {"finding" if k is ev.Finding else k.kind for k in render.ALWAYS_LOGGED}


def test_lines_about_a_device_are_enriched_from_the_newest_snapshot() -> None:
    """A bind event names its PF and VF index, known only from the inventory."""
    c = Correlator(rules=[])
    c.feed(ev.InventoryObserved(ts_ns=TS, source="sysfs", devices=(
        ev.PciDevice(bdf=PF, role="pf", driver="igb"),
        ev.PciDevice(bdf=BDF, role="vf", pf=PF, vf_index=2, driver="igbvf"),
    )))
    views = {d.bdf: d for d in c.snapshot().devices}
    _, _, fields = describe(ev.DeviceUnbound(ts_ns=TS, source="uevent", bdf=BDF),  # type: ignore[misc]
                            log_events=True, views=views)
    assert (fields["pf"], fields["vf_index"]) == (PF, 2)


def test_json_lines_carry_utc_timestamp_level_event_first() -> None:
    """One object a line; the event's own time in ISO-8601 UTC; timestamp, level, event lead."""
    out = io.StringIO()
    sink = LogSink(stream=out, log_events=True)
    sink.write(ev.DeviceBound(ts_ns=TS, source="uevent", bdf=BDF, driver="vfio-pci"))
    sink.write(_finding(ev.Severity.CRITICAL))
    sink.log.info("agent_started", version="x")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    docs = [json.loads(line) for line in lines]
    assert list(docs[0])[:3] == ["timestamp", "level", "event"]
    assert docs[0]["timestamp"] == iso_utc(TS) == "2026-11-27T14:53:14.123456Z"
    assert docs[1]["level"] == "critical" and docs[1]["rule"] == "vfio-bind-coldplug-disabled"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", docs[2]["timestamp"])


def test_console_format_escapes_hostile_strings() -> None:
    """An ifname or comm with ESC sequences reaches the terminal as visible \\x1b text."""
    out = io.StringIO()
    sink = LogSink(stream=out, fmt="console", log_events=True, colors=False)
    sink.write(ev.LinkChanged(ts_ns=TS, source="links", ifindex=3, ifname="eth\x1b[2J\r",
                              netns=ev.NetnsRef(inode=1, name="ns\x07")))
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\r" not in text
    assert "eth\\x1b[2J\\x0d" in text and "ns\\x07" in text


def test_json_format_keeps_hostile_strings_as_json_escapes() -> None:
    """JSON escapes control characters itself; the value round-trips exactly."""
    out = io.StringIO()
    LogSink(stream=out, log_events=True).write(
        ev.NetdevAdded(ts_ns=TS, source="uevent", bdf=BDF, ifname="x\x1by"))
    assert "\x1b" not in out.getvalue()
    assert json.loads(out.getvalue())["netdev"] == "x\x1by"


def test_readme_documents_every_domain_key() -> None:
    """README '## Logs' names each flat key of the schema."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    assert "## Logs" in readme
    section = readme.split("## Logs", 1)[1].split("\n## ", 1)[0]
    missing = [k for k in DOMAIN_KEYS if f"`{k}`" not in section]
    assert missing == []


def _mixed_batch() -> list[ev.Event]:
    return [
        ev.DeviceBound(ts_ns=TS, source="uevent", bdf=BDF, driver="vfio-pci", previous_driver="igbvf"),
        *(_finding(s) for s in (ev.Severity.INFO, ev.Severity.WARNING, ev.Severity.ERROR,
                                ev.Severity.CRITICAL)),
        _finding(ev.Severity.CRITICAL, "resolved"),
        ev.SourceStateChanged(ts_ns=TS, source="runtime", name="ebpf", up=False,
                              reason="bcc missing", hint="apt-get install python3-bpfcc"),
        ev.EventsLost(ts_ns=TS, source="uevent", lost_source="uevent", count=12, reason="ENOBUFS"),
        ev.ClockTicked(ts_ns=TS, source="runtime"),
        ev.NetdevAdded(ts_ns=TS, source="uevent", bdf=BDF, ifname="x\x1by"),
    ]


@pytest.mark.parametrize("log_events", [False, True])
@pytest.mark.parametrize("level", ["info", "warning", "critical"])
def test_a_batch_writes_the_same_json_lines_as_structlog_line_by_line(log_events: bool,
                                                                       level: str) -> None:
    """write_batch renders JSON without structlog's processors: byte for byte the lines that
    write() (through structlog) gives for the same items, at every level filter, in one write."""
    c = Correlator(rules=[])
    c.feed(ev.InventoryObserved(ts_ns=TS, source="sysfs", devices=(
        ev.PciDevice(bdf=PF, role="pf", driver="igb"),
        ev.PciDevice(bdf=BDF, role="vf", pf=PF, vf_index=2, driver="igbvf"),
    )))
    one, batch = io.StringIO(), io.StringIO()
    writes: list[str] = []
    batch.write = lambda s: writes.append(s) or io.StringIO.write(batch, s)  # type: ignore[method-assign]
    a = LogSink(stream=one, log_events=log_events, level=level)
    b = LogSink(stream=batch, log_events=log_events, level=level)
    for sink in (a, b):
        sink.snapshot(c.snapshot())
    for item in _mixed_batch():
        a.write(item)
    b.write_batch(_mixed_batch())
    assert one.getvalue() and batch.getvalue() == one.getvalue()
    assert len(writes) == 1
    docs = [json.loads(line) for line in one.getvalue().splitlines()]
    assert all(d["pf"] == PF for d in docs if "bdf" in d)  # enriched from the snapshot


def test_iso_utc_keeps_each_stamp_its_own_second_in_any_order() -> None:
    """The formatted second is reused only within that second: stamps going back and forth
    across second boundaries each get their own time."""
    import time as _time

    stamps = [TS, TS + 900_000_000, TS - 1, TS + 10**9, TS, 0, TS + 86_400 * 10**9, TS]
    for t in stamps:
        secs, ns = divmod(t, 10**9)
        want = _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(secs)) + f".{ns // 1000:06d}Z"
        assert iso_utc(t) == want
