"""Postmortem filters and totals that do not mislead (issue 20, fault 3), on a recorded lab journal.

The journal is tests/fixtures/journals/lab-scenario1.jsonl, the demo until 2026-12-03, kept
frozen (its README says what tests may rely on): the re-recorded demo has no late write and no
escalation. VF 0000:01:10.0 moved to vfio-pci by the shim of sandbox 015f1c2e8a9b (pod
default/sriov-pod), a finding opened as warning, raised to critical, then resolved; the shim's
eBPF writes were recorded after later events (the probe attached late).
"""

from __future__ import annotations

import itertools
import json

import pytest

from diag.cli import main
from tests.conftest import REPO

JOURNAL = str(REPO / "tests" / "fixtures" / "journals" / "lab-scenario1.jsonl")
RULE = "vfio-bind-coldplug-disabled"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["postmortem", JOURNAL, *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_device_as_lspci_prints_it_matches_the_full_address(capsys: pytest.CaptureFixture[str]) -> None:
    """`--device 01:10.0` is 0000:01:10.0: the same finding, and the exit line says whose."""
    code, out, _ = run(capsys, "--device", "01:10.0")
    assert code == 1 and f"CRITICAL {RULE}  0000:01:10.0" in out
    assert out.rstrip().endswith("exit 1: findings about --device 0000:01:10.0 up to critical")
    assert run(capsys, "--device", "0000:01:10.0")[1] == out


def test_a_device_without_findings_exits_0_whatever_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    """VF 0000:01:10.2 is in the inputs but has no finding: exit 0, said for that device (it
    used to print `findings up to critical` from another device's finding)."""
    code, out, _ = run(capsys, "--device", "01:10.2")
    assert code == 0
    assert out.rstrip().endswith("exit 0: no finding about --device 0000:01:10.2 reached warning")
    assert "Findings (0)" in out


def test_garbage_device_is_refused_with_the_forms(capsys: pytest.CaptureFixture[str]) -> None:
    """Not a PCI address: a usage error (exit 2) naming both accepted forms."""
    with pytest.raises(SystemExit) as exc:
        main(["postmortem", JOURNAL, "--device", "garbage"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert ("argument --device: 'garbage' is not a PCI address; use 0000:01:10.0, or 01:10.0 "
            "as lspci prints it") in err


@pytest.mark.parametrize(("args", "held"), [
    (("--sandbox", "nosuch"), "they hold sandboxes: 015f1c2e8a9b"),
    (("--device", "0000:02:00.0"), "they hold devices: 0000:00:00.0, "),
    (("--namespace", "prod"), "they hold pods: default/sriov-pod"),
])
def test_a_filter_matching_nothing_is_said_with_what_there_is(
        capsys: pytest.CaptureFixture[str], args: tuple[str, str], held: str) -> None:
    """A sandbox, device or namespace the inputs never mention: exit 2, said at the top with
    what the inputs hold instead, and in the exit line."""
    code, out, _ = run(capsys, *args)
    assert code == 2
    asked = " ".join(args)
    assert f"Filter matches nothing (exit status 2)\n  ! {asked} matches nothing in the inputs; {held}" in out
    assert out.rstrip().endswith(f"exit 2: {asked} matches nothing in the inputs (see the top)")
    doc = json.loads(run(capsys, *args, "--format", "json")[1])
    assert doc["exit_status"] == 2 and doc["filter_matches_nothing"].startswith(asked)
    code, md, _ = run(capsys, *args, "--format", "markdown")
    assert code == 2 and f"**Filter matches nothing:** {asked} matches nothing in the inputs" in md


def test_pod_and_namespace_select_the_pods_sandbox(capsys: pytest.CaptureFixture[str]) -> None:
    """`--pod sriov-pod` and `--namespace default` show the finding of its sandbox, exit 1."""
    for args in (("--pod", "sriov-pod"), ("--namespace", "default"),
                 ("--pod", "sriov-pod", "--namespace", "default")):
        code, out, _ = run(capsys, *args)
        assert code == 1, args
        assert f"CRITICAL {RULE}  0000:01:10.0" in out and "pod=default/sriov-pod" in out


def test_since_takes_a_time_of_day_like_tui_at(capsys: pytest.CaptureFixture[str]) -> None:
    """`--since 16:07:58` (the journal's day, UTC) is accepted and means 2026-11-27T16:07:58Z;
    a malformed one is refused before anything is read."""
    code, out, _ = run(capsys, "--since", "16:07:58")
    assert code == 1
    assert out == run(capsys, "--since", "2026-11-27T16:07:58Z")[1]
    assert "16:07:04" not in out.split("Timeline", 1)[1]
    # +SECONDS counts from the first event (16:07:04.820814), as tui --at does
    assert run(capsys, "--since", "+53")[1] == run(capsys, "--since", "2026-11-27T16:07:57.820814Z")[1]
    code = main(["postmortem", JOURNAL, "--since", "16:61"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("Bad option: --since: cannot read '16:61' as a time")


def test_findings_by_rule_counts_a_finding_at_its_final_severity(capsys: pytest.CaptureFixture[str]) -> None:
    """The finding opened as warning and became critical: JSON counts it once, as critical."""
    doc = json.loads(run(capsys, "--format", "json")[1])
    assert doc["findings_by_rule"] == [{"rule": RULE, "severity": "critical", "count": 1}]
    assert [f["severity"] for f in doc["findings"]] == ["critical"]


def test_an_entry_recorded_after_a_later_one_is_marked(capsys: pytest.CaptureFixture[str]) -> None:
    """The shim's driver_override write (16:07:58.717) recorded after the sandbox line of
    16:07:59.024 carries the order mark (JSON order_uncertain) instead of passing silently."""
    doc = json.loads(run(capsys, "--format", "json")[1])
    tl = doc["timeline"]
    late = [(a["event"]["kind"], b["event"]["kind"], b["order_uncertain"])
            for a, b in itertools.pairwise(tl) if b["ts_ns"] < a["ts_ns"]]
    assert late and all(marked for _a, _b, marked in late)
    assert ("sandbox_started", "sysfs_write_observed", True) in late
    text = run(capsys)[1]
    line = next(x for x in text.splitlines() if "wrote 'vfio-pci' to /sys/bus/pci/devices/0000:01:10.0/driver_override" in x
                and x.lstrip().startswith("16:07:58.717834"))
    assert line.lstrip().startswith("16:07:58.717834? ")
    assert "? = order uncertain: against the neighbouring input, or recorded after a later event" in text
