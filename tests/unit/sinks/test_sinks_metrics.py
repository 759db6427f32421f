"""The metrics sink: families and values from a HostState, naming rules, /metrics and /healthz."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from diag import events as ev
from diag.core.correlator import Correlator
from diag.sinks.journal import JournalStats
from diag.sinks.metrics import MetricsSink, parse_addr

T0 = 1_795_791_194_000_000_000
PF = "0000:01:00.0"


def _state() -> Correlator:
    c = Correlator(rules=[])
    c.feed(ev.InventoryObserved(ts_ns=T0, source="sysfs", devices=(
        ev.PciDevice(bdf=PF, role="pf", driver="igb"),
        ev.PciDevice(bdf="0000:01:10.0", role="vf", pf=PF, vf_index=0, driver="vfio-pci"),
        ev.PciDevice(bdf="0000:01:10.2", role="vf", pf=PF, vf_index=1, driver="igbvf"),
        ev.PciDevice(bdf="0000:01:10.4", role="vf", pf=PF, vf_index=2, driver=None),
    )))
    c.feed(ev.SourceStateChanged(ts_ns=T0, source="runtime", name="uevent", up=True, mode="netlink"))
    c.feed(ev.SourceStateChanged(ts_ns=T0, source="runtime", name="ebpf", up=False, reason="no bcc"))
    c.feed(ev.EventsLost(ts_ns=T0, source="uevent", lost_source="uevent", count=3))
    c.feed(ev.Resynced(ts_ns=T0, source="uevent", resynced_source="uevent"))
    return c


def _samples(sink: MetricsSink) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = sink.exposition()
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_report_sources_devices_and_vfs_on_vfio() -> None:
    """Source up/events/lost/resyncs, devices by driver and role, VFs on vfio-pci."""
    sink = MetricsSink(process_metrics=False)
    sink.snapshot(_state().snapshot())
    m = _samples(sink)
    assert m[("vfiowatch_source_up", (("source", "uevent"),))] == 1
    assert m[("vfiowatch_source_up", (("source", "ebpf"),))] == 0
    assert ("vfiowatch_source_up", (("source", "runtime"),)) not in m  # a stamp, not a source
    assert m[("vfiowatch_source_events_lost_total", (("count", "exact"), ("source", "uevent")))] == 3
    assert m[("vfiowatch_source_resyncs_total", (("source", "uevent"),))] == 1
    assert m[("vfiowatch_source_mode_info", (("mode", "netlink"), ("source", "uevent")))] == 1
    assert m[("vfiowatch_devices", (("driver", "vfio-pci"), ("role", "vf")))] == 1
    assert m[("vfiowatch_devices", (("driver", "none"), ("role", "vf")))] == 1
    assert m[("vfiowatch_vfs_on_vfio_pci", ())] == 1
    assert m[("vfiowatch_findings_total", ())] == 0


def test_active_findings_are_counted_by_rule_and_severity() -> None:
    """counts_by_rule becomes vfiowatch_findings_active{rule,severity}."""
    from diag.events import replace

    st = replace(_state().snapshot(), counts_by_rule=(("vfio-bind-coldplug-disabled", "critical", 2),),
                 findings_total=5)
    sink = MetricsSink(process_metrics=False)
    sink.snapshot(st)
    m = _samples(sink)
    key = ("vfiowatch_findings_active", (("rule", "vfio-bind-coldplug-disabled"), ("severity", "critical")))
    assert m[key] == 2 and m[("vfiowatch_findings_total", ())] == 5


def test_journal_health_is_exported() -> None:
    """A failing journal shows writable 0, its drops and its errno."""
    js = JournalStats(writable=False, records_dropped=7, write_errors={"ENOSPC": 2})
    sink = MetricsSink(journal=js, process_metrics=False)
    m = _samples(sink)
    assert m[("vfiowatch_journal_writable", ())] == 0
    assert m[("vfiowatch_journal_records_dropped_total", ())] == 7
    assert m[("vfiowatch_journal_write_errors_total", (("errno", "ENOSPC"),))] == 2


def test_every_name_follows_the_convention() -> None:
    """vfiowatch_<what>[_<unit>][_total]: lower snake case, counters end in _total."""
    sink = MetricsSink(journal=JournalStats())
    sink.snapshot(_state().snapshot())
    body, _ = sink.exposition()
    for fam in text_string_to_metric_families(body.decode()):
        assert re.fullmatch(r"vfiowatch_[a-z0-9_]+", fam.name), fam.name
        for s in fam.samples:
            if fam.type == "counter":
                assert s.name.endswith(("_total", "_created")), s.name


@pytest.mark.parametrize(("text", "want"), [
    ("9100", ("127.0.0.1", 9100)), (":9100", ("127.0.0.1", 9100)), ("127.0.0.1", ("127.0.0.1", 9477)),
    ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9100", ("::1", 9100)), ("[::]", ("::", 9477)),
])
def test_addresses_default_to_loopback(text: str, want: tuple[str, int]) -> None:
    """A bare port binds loopback; every interface must be named."""
    assert parse_addr(text) == want


def test_http_serves_metrics_and_healthz() -> None:
    """/metrics is the exposition; /healthz says 200 or 503 with the health check's detail."""
    sink = MetricsSink(process_metrics=False)
    healthy = {"ok": True}
    host, port = sink.start_server("127.0.0.1:0", lambda: (healthy["ok"], "detail"))
    try:
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
        assert b"vfiowatch_build_info" in body
        assert urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5).status == 200
        healthy["ok"] = False
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(f"http://{host}:{port}/healthz", timeout=5)
        assert exc.value.code == 503
    finally:
        sink.stop_server()


def test_the_server_thread_sleeps_until_a_scrape_and_stops_at_once() -> None:
    """Idle, the server's thread does not wake (socketserver's serve_forever polled 4 times a
    second): its voluntary context switches stay put over 1.5 s; a scrape still answers, and
    stop_server() ends the thread."""
    import time
    from pathlib import Path

    sink = MetricsSink(process_metrics=False)
    host, port = sink.start_server("127.0.0.1:0", lambda: (True, "detail"))
    thread = sink._thread
    assert thread is not None and thread.native_id is not None
    status = Path(f"/proc/self/task/{thread.native_id}/status")

    def switches() -> int:
        line = next(x for x in status.read_text().splitlines() if x.startswith("voluntary_ctxt_switches"))
        return int(line.split()[1])

    try:
        time.sleep(0.3)  # settled in its select()
        before = switches()
        time.sleep(1.5)
        assert switches() == before
        body = urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
        assert b"vfiowatch_build_info" in body
    finally:
        sink.stop_server()
    assert not thread.is_alive()


def test_kata_exposure_is_1_when_exposed_0_when_latent_and_absent_when_not() -> None:
    """vfiowatch_kata_exposure{handler,issue}: Kata 3.8 no-port with a VF is 1 (#10162), runtime-rs with no VF
    pods can be given is 0 (latent), a fixed handler (root-port with a root port) has no series."""
    c = _state()
    vf = ev.VfCandidate(bdf="0000:01:10.2", pf=PF, driver="igbvf")
    for f in (ev.KataHandlerFacts(handler="kata", version="3.8.0", vfs=(vf,)),
              ev.KataHandlerFacts(handler="kata-rs", runtime="rs", version="4.1.0"),
              ev.KataHandlerFacts(handler="kata-fixed", version="3.8.0", vfs=(vf,), cold_plug_vfio="root-port",
                                  pcie_root_port=1)):
        c.feed(ev.KataFactsObserved(ts_ns=T0, source="kata", facts=f))
    sink = MetricsSink(process_metrics=False)
    sink.snapshot(c.snapshot())
    got = {k[1]: v for k, v in _samples(sink).items() if k[0] == "vfiowatch_kata_exposure"}
    assert got == {(("handler", "kata"), ("issue", "10162")): 1.0,
                   (("handler", "kata-rs"), ("issue", "10162")): 0.0}
