"""Whole-report golden files for `vfiowatch postmortem` on the lab's real captures and Kata's lines.

Regenerate after an intended change with `UPDATE_GOLDEN=1 .venv/bin/pytest tests/golden/test_postmortem_golden.py`
and review the diff: the files under tests/golden/postmortem/ are what an operator would see.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from diag import postmortem as pm
from diag import render
from diag.postmortem import output

TESTS = Path(__file__).resolve().parents[1]
FIX = TESTS / "fixtures"
GOLDEN = Path(__file__).resolve().parent / "postmortem"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"

CASES: dict[str, list[str]] = {
    # udevadm --kernel --property of the real igb/igbvf/vfio-pci moves, nothing else: no
    # Kata configuration, so Kata's default (no-port) is assumed.
    "lab-udevadm-property": ["postmortem/udevadm-monitor-kernel-property.txt"],
    # Every capture of the lab session (two udevadm, two ip monitor, one unrecognised log):
    # monotonic and untimed captures aligned by matching, copies merged.
    "lab-all-captures": ["postmortem"],
    # The #10162 story: the VF's real moves, Kata's journal (the exact QEMU line) and containerd's
    # log, with the shipped no-port configuration. udevadm is aligned from journald's clocks.
    "kata-10162-no-port": [
        "postmortem/udevadm-monitor-kernel-property.txt",
        "postmortem-kata/journalctl-kata-containerd-kernel.json",
        "postmortem-kata/containerd.log",
        "postmortem-kata/config-no-port",
    ],
    # The same moves with cold_plug_vfio = root-port from a config.d drop-in: no coldplug finding.
    "kata-root-port": [
        "postmortem/udevadm-monitor-kernel-property.txt",
        "postmortem-kata/config-root-port",
        "kata/go-physical/run/vc/sbs",
    ],
}


def _rel(path: str) -> str:
    return os.path.relpath(path, FIX)


def digest(report: pm.Report) -> dict[str, object]:
    """What the golden file pins: inputs, clocks, findings and the timeline, path-independent."""
    doc = output.report_json(report)
    return {
        "exit_status": doc["exit_status"],
        "inputs": [
            {"path": _rel(i["path"]), "format": i["format"], "clock": i["clock"],
             "events": i["events"], "bad_lines": i["bad_lines"], "notes": i["notes"],
             "alignment": i["alignment"]}
            for i in doc["inputs"]  # type: ignore[union-attr]
        ],
        "clock_notes": [n.replace(str(FIX) + "/", "") for n in doc["clock_notes"]],  # type: ignore[union-attr]
        "findings": [
            {k: f.get(k) for k in ("rule", "severity", "status", "bdf", "sandbox_id", "first_ns",
                                    "last_ns", "resolved_ns", "summary")}
            for f in doc["findings"]  # type: ignore[union-attr]
        ],
        "timeline": [
            f"{e.ts_ns} {'replay' if e.input < 0 else _rel(report.inputs[e.input].path)}"
            f"{' ~' if e.uncertainty_ns else ''}{' ?' if e.order_uncertain else ''}: "
            f"{render.timeline(e.event)}"
            for e in report.timeline
        ],
    }


def _check(name: str, actual: str) -> None:
    path = GOLDEN / name
    if UPDATE or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual)
        if not UPDATE:
            pytest.fail(f"{path} did not exist; written, review and commit it")
        return
    expected = path.read_text()
    assert actual == expected, (
        f"{name} differs from the golden file; if intended, regenerate with UPDATE_GOLDEN=1")


@pytest.mark.parametrize("case", sorted(CASES))
def test_postmortem_report_matches_golden(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON report of each case (inputs, clocks, findings, timeline) equals its golden file."""
    monkeypatch.chdir(FIX)
    # Relative inputs: the Kata config paths quoted in the timeline must not name this checkout.
    report = pm.run(CASES[case], pm.Options())
    _check(f"{case}.json", json.dumps(digest(report), indent=1, ensure_ascii=False) + "\n")


def test_10162_text_and_markdown_reports_match_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    """The terminal text and the ticket Markdown of the #10162 case equal their golden files."""
    monkeypatch.chdir(FIX)
    report = pm.run(CASES["kata-10162-no-port"], pm.Options())
    _check("kata-10162-no-port.txt", output.render_text(report))
    _check("kata-10162-no-port.md", output.render_markdown(report))


def test_10162_case_tells_the_whole_story() -> None:
    """The #10162 case: the exact QEMU line matched, udevadm aligned from journald, critical
    coldplug and kata-known-error findings on the VF, the move attributed to the shim by
    Kata's own lines, exit status 1."""
    report = pm.run([str(FIX / p) for p in CASES["kata-10162-no-port"]], pm.Options())
    assert report.exit_status == 1
    rules = {(f.rule, f.bdf) for f in report.findings}
    assert ("vfio-bind-coldplug-disabled", "0000:01:10.0") in rules
    crit = {f.rule: f for f in report.findings if f.severity.label == "critical"}
    assert set(crit) == {"vfio-bind-coldplug-disabled", "kata-known-error"}
    # Kata's own write lines name the shim that moved the VF (no eBPF among these inputs).
    actor = crit["vfio-bind-coldplug-disabled"].actor
    assert actor is not None and actor.pid == 3131 and actor.kata_runtime == "go"
    udev = next(i for i in report.inputs if i.format == "udevadm")
    assert udev.alignment is not None and udev.alignment.uncertainty_ns == 0
    assert "journald" in udev.alignment.method
    lines = [e.event for e in report.timeline if e.event.kind == "log_line_matched"]
    assert any("Bus '<unknown PCIePortBusPrefix: >0' not found" in x.text for x in lines)  # type: ignore[attr-defined]


def test_root_port_config_raises_no_coldplug_finding() -> None:
    """cold_plug_vfio = root-port (config.d drop-in over a no-port main file): the same real
    moves raise no vfio-bind-coldplug-disabled finding; the sandbox state is read with it."""
    report = pm.run([str(FIX / p) for p in CASES["kata-root-port"]], pm.Options())
    assert not [f for f in report.findings if f.rule == "vfio-bind-coldplug-disabled"]
    cfgs = [e.event for e in report.timeline if e.event.kind == "kata_config_loaded"]
    assert cfgs and cfgs[0].config.cold_plug_vfio == "root-port"  # type: ignore[attr-defined]


def test_matched_alignment_lands_within_its_stated_uncertainty_of_the_truth() -> None:
    """udevadm (monotonic) aligned only by matching against `ip -ts monitor` lands within its
    stated ± of the true offset, which the lab's own log of its writes gives (t_real - t_mono)."""
    first = next(x for x in (FIX / "postmortem" / "lab-actions.log").read_text().splitlines()
                 if x and not x.startswith("#"))
    mono, real = (int(v) for v in first.split()[:2])
    truth = real - mono
    report = pm.run([str(FIX / "postmortem" / "udevadm-monitor-kernel-property.txt"),
                     str(FIX / "postmortem" / "ip-ts-monitor-link.txt")], pm.Options())
    a = report.inputs[0].alignment
    assert a is not None and a.uncertainty_ns is not None and a.support >= 2
    # ip -ts stamps are microseconds: allow that rounding on top of the stated uncertainty.
    assert abs(a.offset_ns - truth) <= a.uncertainty_ns + 1_000
