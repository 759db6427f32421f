"""deploy/alerts.yaml: promtool accepts it, its unit tests pass, and it fires on the agent's own
/metrics output (real metric names and labels), not only on hand-written series."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from diag import events as ev
from diag.core.correlator import Correlator
from diag.core.state import HostState
from diag.events import replace
from diag.sinks.journal import JournalStats, journal_records
from diag.sinks.metrics import MetricsSink
from tests.conftest import FIXTURES, REPO

ALERTS = REPO / "deploy" / "alerts.yaml"
RULE_TESTS = FIXTURES / "alerts" / "alerts_test.yaml"
NAMES = {"VfiowatchCriticalFinding", "VfiowatchVfStrandedOnVfio", "VfiowatchSourceDown",
         "VfiowatchEventsLost", "VfiowatchJournalNotWritable"}
T0 = 1_795_791_194_000_000_000
PF = "0000:01:00.0"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is missing: deploy/setup-host.sh installs prometheus (make setup)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules() -> None:
    """`promtool check rules` accepts the file; it holds the README's four alerts and the
    stranded-VF one, each with a severity and a summary."""
    res = _promtool("check", "rules", str(ALERTS))
    assert res.returncode == 0 and "SUCCESS: 5 rules found" in res.stdout, res.stdout + res.stderr
    rules = [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]
    assert {r["alert"] for r in rules} == NAMES
    assert all(r["labels"]["severity"] and r["annotations"]["summary"] for r in rules)


def test_the_alert_unit_tests_pass() -> None:
    """`promtool test rules`: each alert fires when it should, not before its `for`, and not on
    neighbouring values (tests/fixtures/alerts/alerts_test.yaml)."""
    res = _promtool("test", "rules", str(RULE_TESTS))
    assert res.returncode == 0, res.stdout + res.stderr


def _exposition(state: HostState, journal: JournalStats) -> dict[str, float]:
    """The agent's /metrics text for this state, as `series -> value`."""
    sink = MetricsSink(journal=journal, process_metrics=False)
    sink.snapshot(state)
    body, _ = sink.exposition()
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            labels = {**s.labels, "instance": "node-a:9477"}
            sel = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
            out[f"{s.name}{{{sel}}}"] = s.value
    return out


def _healthy() -> HostState:
    c = Correlator()
    c.feed(ev.InventoryObserved(ts_ns=T0, source="sysfs", devices=(
        ev.PciDevice(bdf=PF, role="pf", driver="igb"),
        ev.PciDevice(bdf="0000:01:10.0", role="vf", pf=PF, vf_index=0, driver="igbvf"),
    )))
    for name in ("uevent", "links", "ebpf"):
        c.feed(ev.SourceStateChanged(ts_ns=T0, source="runtime", name=name, up=True, mode="m"))
    return c.snapshot()


def _troubled() -> HostState:
    """A real incident (the bundled demo journal up to its critical finding: a VF rebound to
    vfio-pci by Kata with cold plug disabled), plus a VF stranded on vfio-pci since the start,
    eBPF down and 40 uevents lost, five minutes on."""
    c = Correlator()
    recs, _ = journal_records(REPO / "diag" / "data" / "demo.jsonl")
    last = T0
    stranded = ev.PciDevice(bdf="0000:02:10.0", role="vf", pf="0000:02:00.0", vf_index=0,
                            driver="vfio-pci", iommu_group=77)
    for r in recs:
        if isinstance(r, ev.InventoryObserved):  # the stranded VF is there from the start
            r = replace(r, devices=(*r.devices, stranded))
        if isinstance(r, ev.Event) and not isinstance(r, ev.Finding):
            c.feed(r)
            last = max(last, r.ts_ns)
            if any(n for _, sev, n in c.snapshot().counts_by_rule if sev == "critical"):
                break  # the incident at its height (the demo goes on to resolve it)
    c.feed(ev.SourceStateChanged(ts_ns=last + 1, source="runtime", name="ebpf", up=False,
                                 reason="no bcc"))
    c.feed(ev.EventsLost(ts_ns=last + 2, source="uevent", lost_source="uevent", count=40))
    c.feed(ev.SourceStateChanged(ts_ns=last + 300 * 10**9, source="runtime", name="uevent",
                                 up=True, mode="netlink"))
    return c.snapshot()


def test_the_alerts_fire_on_the_agents_own_metrics(tmp_path: Path) -> None:
    """Three healthy scrapes then ten troubled ones of the real exposition, fed to promtool:
    all five alerts fire with the labels the agent exports (annotations left out here: the
    fixture tests them)."""
    healthy = _exposition(_healthy(), JournalStats())
    bad = _exposition(_troubled(), JournalStats(writable=False, records_dropped=9))
    assert any('rule="vfio-bind-coldplug-disabled"' in k and 'severity="critical"' in k
               for k in bad), "the demo incident no longer opens a critical finding"
    series = []
    for key in sorted(set(healthy) | set(bad)):
        vals = [healthy.get(key), healthy.get(key), healthy.get(key), *[bad.get(key)] * 10]
        series.append({"series": key,
                       "values": " ".join("_" if v is None else repr(float(v)) for v in vals)})

    doc = yaml.safe_load(ALERTS.read_text())
    for g in doc["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    rules = tmp_path / "alerts-no-annotations.yaml"
    rules.write_text(yaml.safe_dump(doc))
    expected = {
        "VfiowatchCriticalFinding": [{"severity": "critical", "instance": "node-a:9477",
                                      "rule": "vfio-bind-coldplug-disabled"}],
        "VfiowatchVfStrandedOnVfio": [{"severity": "warning", "instance": "node-a:9477"}],
        "VfiowatchSourceDown": [{"severity": "warning", "instance": "node-a:9477",
                                 "source": "ebpf"}],
        "VfiowatchEventsLost": [{"severity": "warning", "instance": "node-a:9477",
                                 "source": "uevent", "count": "exact"}],
        "VfiowatchJournalNotWritable": [{"severity": "warning", "instance": "node-a:9477"}],
    }
    assert set(expected) == NAMES
    test = {
        "rule_files": [str(rules)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m", "input_series": series,
            "alert_rule_test": [
                *({"eval_time": "2m", "alertname": a, "exp_alerts": []} for a in expected),
                *({"eval_time": "12m", "alertname": a,
                   "exp_alerts": [{"exp_labels": lab} for lab in labs]}
                  for a, labs in expected.items()),
            ],
        }],
    }
    test_file = tmp_path / "from_exposition_test.yaml"
    test_file.write_text(yaml.safe_dump(test, width=1000))
    res = _promtool("test", "rules", str(test_file))
    assert res.returncode == 0, res.stdout + res.stderr
