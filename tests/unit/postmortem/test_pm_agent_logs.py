"""The agent's own JSON log lines as postmortem input (what Loki, Elasticsearch and `kubectl logs` hold).

The lines are written by the real log sink (`diag.sinks.logs.LogSink`, as `vfiowatch run` writes
them) from the events of the bundled recorded incident (diag/data/demo.jsonl).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from diag import codec
from diag import events as ev
from diag.cli import main
from diag.sinks.logs import LogSink
from tests.conftest import REPO

DEMO = REPO / "diag" / "data" / "demo.jsonl"
RULE = "vfio-bind-coldplug-disabled"


EXPOSURE = "kata-vfio-exposure"


def demo_story(*, exposure: bool = False) -> list[ev.Event]:
    """The demo's events and findings through the record where the cold-plug finding resolves.

    The cut is by content, not index: later records (the host driver back, containerd's
    RunPodSandbox failure, the sandbox's stop) tell the rest of the story. Without `exposure`
    the Kata handler's facts and the exposure warning they raised at start are left out: the
    facts' log line says how many VFs pods can be given, not which, so a replay cannot judge
    the exposure again (test_the_kata_facts_line_is_the_agents_own below covers them)."""
    with DEMO.open("rb") as fh:
        records = [r for r in codec.iter_records(fh) if isinstance(r, ev.Event)]
    end = next(i for i, r in enumerate(records)
               if isinstance(r, ev.Finding) and r.rule == RULE and r.status == "resolved")
    return [r for r in records[:end + 1] if exposure or not (
        isinstance(r, ev.KataFactsObserved) or (isinstance(r, ev.Finding) and r.rule == EXPOSURE))]


def logged(records: list[ev.Event]) -> dict[str, ev.Finding]:
    """Each finding the agent logged, as its last line says it."""
    return {r.finding_id: r for r in records if isinstance(r, ev.Finding)}


def agent_log(tmp_path: Path, *, log_events: bool, prefix: bool = False,
              exposure: bool = False) -> Path:
    """The demo's story through the real log sink, one JSON object a line."""
    buf = io.StringIO()
    sink = LogSink(stream=buf, log_events=log_events)
    for r in demo_story(exposure=exposure):
        sink.write(r)
    lines = buf.getvalue().splitlines(keepends=True)
    if prefix:  # `kubectl logs --timestamps`: the time of writing before each line
        lines = [f"2026-11-27T16:08:03.{n:09d}Z {line}" for n, line in enumerate(lines)]
    path = tmp_path / ("with-events.log" if log_events else "findings-only.log")
    path.write_text("".join(lines))
    return path


def the_rules_finding(doc: dict) -> dict:
    [f] = [f for f in doc["findings"] if f["rule"] == RULE]
    return f


def postmortem(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict]:
    code = main(["postmortem", *args, "--format", "json"])
    return code, json.loads(capsys.readouterr().out)


def test_logs_with_events_replay_to_the_agents_finding(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--log-events` lines: every line read as agent-logs, the replay raises the finding the
    agent logged (same rule, device, severity, status: said on the input), with the shim's
    writes as its evidence."""
    code, doc = postmortem(capsys, str(agent_log(tmp_path, log_events=True)))
    [inp] = doc["inputs"]
    assert (inp["format"], inp["bad_lines"], inp["clock"]) == ("agent-logs", 0, "realtime")
    agents = logged(demo_story())
    assert inp["notes"] == [f"the agent logged {len(agents)} finding(s): the replay raised the same"]
    assert sorted(f["finding_id"].split("/")[1] for f in doc["findings"]) == sorted(
        i.split("/")[1] for i in agents)
    f = the_rules_finding(doc)
    [mine] = [a for a in agents.values() if a.rule == RULE]
    assert mine.actor is not None
    assert (code, f["rule"], f["bdf"], f["severity"], f["status"]) == (
        1, RULE, "0000:01:10.0", "critical", "resolved")
    assert f["actor"]["comm"] == "containerd-shim" and f["actor"]["pid"] == mine.actor.pid
    writes = [e for e in f["evidence"] if e["kind"] == "sysfs_write_observed"]
    # Each write has two witnesses in the recording, Kata's own line (mode kata-log) and eBPF's
    # kprobe record; Kata's line names the device's driver/unbind link, eBPF the driver's file.
    # Kata logs a write before making it, so its witness claims no result; eBPF's has it.
    assert [(e["source"], e["text"].split(" wrote ")[1]) for e in writes] == [
        ("kata", "'vfio-pci' to /sys/bus/pci/devices/0000:01:10.0/driver_override (Kata's log line)"),
        ("ebpf", "'vfio-pci' to /sys/bus/pci/devices/0000:01:10.0/driver_override: ok"),
        ("kata", "'0000:01:10.0' to /sys/bus/pci/devices/0000:01:10.0/driver/unbind (Kata's log line)"),
        ("ebpf", "'0000:01:10.0' to /sys/bus/pci/drivers/igbvf/unbind: ok"),
        ("kata", "'0000:01:10.0' to /sys/bus/pci/drivers_probe (Kata's log line)"),
        ("ebpf", "'0000:01:10.0' to /sys/bus/pci/drivers_probe: ok")]


def test_logs_without_events_show_the_finding_as_logged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The default logs (findings and health only): nothing to replay, so the agent's finding
    is shown as it logged it (pod included), marked so, and exits 1 like any finding."""
    code, doc = postmortem(capsys, str(agent_log(tmp_path, log_events=False)))
    [inp] = doc["inputs"]
    assert inp["bad_lines"] == 0 and "shown as logged" in inp["notes"][0]
    assert len(doc["findings"]) == len(logged(demo_story()))
    f = the_rules_finding(doc)
    assert (code, f["rule"], f["severity"], f["status"], f["pod"], f["pod_namespace"]) == (
        1, RULE, "critical", "resolved", "sriov-pod", "default")
    assert ["inferred", "as the agent logged it (no events to replay)"] in f["labels"]


def test_logs_with_events_that_begin_late_do_not_blame_log_events(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--log-events` logs that begin after the bind (a rotated or cut file): the cold-plug
    finding cannot be replayed and is shown as logged, and the note says the logs begin late,
    not that the agent ran without --log-events (it did: the raw events are there)."""
    path = agent_log(tmp_path, log_events=True)
    lines = path.read_text().splitlines(keepends=True)
    opened = next(i for i, line in enumerate(lines)
                  if '"event": "finding"' in line.replace('":"', '": "') and RULE in line)
    path.write_text("".join(lines[opened:]))
    code, doc = postmortem(capsys, str(path))
    [inp] = doc["inputs"]
    [note] = inp["notes"]
    assert "not raised by the replay" in note and "shown as logged" in note
    assert "without --log-events" not in note and "begin after those events" in note
    f = the_rules_finding(doc)
    assert (code, f["severity"]) == (1, "critical")
    assert ["inferred", "as the agent logged it (no events to replay)"] in f["labels"]


def test_kubectl_logs_timestamps_prefix_is_read_the_same(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`kubectl logs --timestamps` lines give the same findings and timeline as the bare lines."""
    plain = postmortem(capsys, str(agent_log(tmp_path, log_events=True)))[1]
    (tmp_path / "sub").mkdir()
    stamped = postmortem(capsys, str(agent_log(tmp_path / "sub", log_events=True, prefix=True)))[1]
    assert stamped["inputs"][0]["format"] == "agent-logs" and stamped["inputs"][0]["bad_lines"] == 0
    def bare(doc: dict) -> list[dict]:
        return [{k: v for k, v in f.items() if k != "inputs"} for f in doc["findings"]]

    assert bare(stamped) == bare(plain) and len(plain["findings"]) == len(logged(demo_story()))
    assert [e["event"] for e in stamped["timeline"]] == [e["event"] for e in plain["timeline"]]


def test_a_damaged_line_is_counted_and_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A line that is not one of the agent's (cut JSON) is skipped, counted and shown, exit 2;
    the other lines still give the finding."""
    path = agent_log(tmp_path, log_events=True)
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(5, '{"timestamp":"2026-11-27T16:07:05Z","level":"info","event":"device_b\n')
    path.write_text("".join(lines))
    code, doc = postmortem(capsys, str(path))
    [inp] = doc["inputs"]
    assert code == 2 and inp["bad_lines"] == 1
    assert inp["first_bad"].startswith("line 6: not one of the agent's JSON log lines")
    assert the_rules_finding(doc)["status"] == "resolved"


def test_the_kata_facts_line_is_the_agents_own(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole story with the Kata handler's facts the agent logged at start: their line is
    read as the agent's (no bad line, so no exit 2), and the exposure warning they raised,
    which the replay cannot judge again from a summary, is shown as the agent logged it."""
    path = agent_log(tmp_path, log_events=True, exposure=True)
    assert '"event":"kata_facts_observed"' in path.read_text()
    code, doc = postmortem(capsys, str(path))
    [inp] = doc["inputs"]
    assert (code, inp["bad_lines"]) == (1, 0), inp
    [f] = [f for f in doc["findings"] if f["rule"] == EXPOSURE]
    assert (f["severity"], f.get("status", "open")) == ("warning", "open")
    assert ["inferred", "as the agent logged it (no events to replay)"] in f["labels"]
    assert the_rules_finding(doc)["status"] == "resolved"


def test_a_health_line_whose_source_is_not_a_name_is_a_bad_line() -> None:
    """A source_state_changed line with a list for its source is counted bad, not an event that
    breaks the replay (the fuzzer found `"source": []` reaching the core's health table)."""
    from diag.importers.agentlogs import event_of

    doc = {"timestamp": "2026-12-03T10:00:00Z", "level": "info", "event": "source_state_changed",
           "source": [], "up": True, "mode": "netlink"}
    with pytest.raises(ValueError, match="source is not a name"):
        event_of(doc)
    ok = event_of({**doc, "source": "uevent"})
    assert isinstance(ok, ev.SourceStateChanged) and ok.name == "uevent"
