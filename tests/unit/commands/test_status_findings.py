"""`vfiowatch status` and `vfiowatch findings` on journals cut from the bundled recorded incident.

The journal is the demo's (a real recording: the #10162 move of VF 0000:01:10.0 by a Kata shim,
critical at once, updated when QEMU's bus error confirms it, then Kata's own error lines, the
restore that resolves it, then the agent stopping). The cuts are made by content (the records of
the cold-plug finding, its severity, the sources' stop), not by line number, so a re-recording of
the same story keeps them; "the agent runs" is a real process holding the journal's lock with
`lock_journal`, as `vfiowatch run` does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diag import cli
from diag.commands import agentstate as ag
from tests.conftest import REPO

DEMO = REPO / "diag" / "data" / "demo.jsonl"
LINES = DEMO.read_bytes().splitlines(keepends=True)
RECORDS = [json.loads(line) for line in LINES]
FINDINGS = [i for i, r in enumerate(RECORDS) if r["kind"] == "finding"]
STOPPING = next(i for i, r in enumerate(RECORDS) if r.get("reason") == "stopped")
RULE = "vfio-bind-coldplug-disabled"
BDF = "0000:01:10.0"


def coldplug(status: str | None) -> int:
    """The line of the cold-plug finding's first record with this status (None: the opening)."""
    return next(i for i in FINDINGS if RECORDS[i]["rule"] == RULE
                and RECORDS[i].get("status") in ((None, "open") if status is None else (status,)))


def only(keep: Callable[[dict], bool], lines: list[bytes]) -> list[bytes]:
    """The lines with only the finding records `keep` accepts (every other record kept)."""
    return [line for line in lines if not line.startswith(b'{"kind":"finding"')
            or keep(json.loads(line))]


def journal(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "journal.jsonl"
    path.write_bytes(b"".join(lines))
    return path


def while_critical(tmp_path: Path) -> Path:
    """Up to the record that opened the cold-plug finding (critical): sources up, it alone open."""
    return journal(tmp_path, LINES[:coldplug(None) + 1])


def coldplug_resolved(tmp_path: Path) -> Path:
    """Everything up to the agent's stop with the cold-plug finding's records alone: it resolved,
    the sources still up."""
    return journal(tmp_path, only(lambda r: r["rule"] == RULE, LINES[:STOPPING]))


@pytest.fixture
def agent_lock() -> Iterator[Callable[[Path], int]]:
    """hold(journal) -> pid: a child process takes the journal's lock as the agent does."""
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path) -> int:
        p = subprocess.Popen(
            [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from diag.sinks.journal import lock_journal; lock_journal(Path(sys.argv[1])); "
             "print('locked', flush=True); sys.stdin.read()", str(path)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(p)
        assert p.stdout is not None and p.stdout.readline() == "locked\n"
        return p.pid

    yield hold
    for p in procs:
        p.kill()
        p.wait()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    rc = cli.main(list(argv))
    return rc, capsys.readouterr().out


def test_running_agent_with_a_critical_finding(tmp_path: Path, agent_lock, capsys) -> None:
    """While a process holds the lock: status names its pid, every source up, 1 critical
    finding beside the warning that the host's Kata was exposed (raised at start), exit 1;
    findings lists the critical one first with its pod and remedy, exit 1."""
    path = while_critical(tmp_path)
    pid = agent_lock(path)
    rc, out = run(capsys, "status", "--journal", str(path))
    assert rc == 1, out
    assert out.startswith(f"agent     running, pid {pid} (vfiowatch 0.1.0"), out
    assert "sources   4 up, 0 down" in out
    assert "findings  2 active: 1 critical, 1 warning" in out
    rc, out = run(capsys, "findings", "--journal", str(path))
    assert rc == 1
    lines = out.splitlines()
    assert lines[0] == "2 active findings"
    assert lines[1].split() == ["SEVERITY", "RULE", "DEVICE", "POD", "SINCE", "SUMMARY"]
    assert lines[2].split()[:4] == ["CRITICAL", "vfio-bind-coldplug-disabled", BDF, "default/sriov-pod"]
    assert lines[3].split()[:2] == ["WARNING", "kata-vfio-exposure"]
    assert lines[4].startswith(f"  what to do (vfio-bind-coldplug-disabled {BDF}): Set cold_plug_vfio")
    assert any(x.startswith("  what to do (kata-vfio-exposure): ") for x in lines), out  # no device: no blank


def test_json_gives_the_agent_the_sources_and_the_findings_as_recorded(
        tmp_path: Path, agent_lock, capsys) -> None:
    """JSON: status has the agent's pid, each source with mode, counts by severity and its exit
    status; findings has each finding as the journal's own record (the newest one: the cold-plug
    finding's update once QEMU's bus error confirmed it)."""
    path = while_critical(tmp_path)
    pid = agent_lock(path)
    rc, out = run(capsys, "status", "--journal", str(path), "--format", "json")
    doc = json.loads(out)
    assert (rc, doc["kind"], doc["exit_status"]) == (1, "vfiowatch_status", 1)
    assert (doc["agent"]["running"], doc["agent"]["pid"]) == (True, pid)
    assert {s["name"]: s["up"] for s in doc["sources"]} == {
        "ebpf": True, "kata": True, "links": True, "uevent": True}
    assert doc["active_findings"] == {"critical": 1, "error": 0, "warning": 1, "info": 0}
    updated = coldplug("updated")
    (tmp_path / "later").mkdir()
    later = journal(tmp_path / "later", LINES[:updated + 1])
    agent_lock(later)
    rc, out = run(capsys, "findings", "--journal", str(later), "--format", "json")
    doc = json.loads(out)
    [f] = [f for f in doc["active"] if f["rule"] == RULE]
    assert f == RECORDS[updated] != RECORDS[coldplug(None)]  # the record itself, the newest
    assert len(doc["active"]) == len({RECORDS[i]["finding_id"] for i in FINDINGS if i <= updated})
    assert (rc, doc["resolved"], doc["exit_status"]) == (1, None, 1)


def test_resolved_findings_leave_exit_0_and_show_with_all(tmp_path: Path, agent_lock, capsys) -> None:
    """After the resolution: no active finding (exit 0 for findings and status); --all lists the
    resolved one."""
    path = coldplug_resolved(tmp_path)
    agent_lock(path)
    rc, out = run(capsys, "findings", "--journal", str(path))
    assert (rc, out) == (0, "0 active findings\n")
    rc, out = run(capsys, "status", "--journal", str(path))
    assert rc == 0 and "findings  0 active" in out
    rc, out = run(capsys, "findings", "--journal", str(path), "--all")
    resolved = out.splitlines()[-1].split()
    assert resolved[:5] == ["CRITICAL", "vfio-bind-coldplug-disabled", BDF, "default/sriov-pod", "resolved"]


def test_severity_filters_findings_and_their_exit_status(tmp_path: Path, agent_lock, capsys) -> None:
    """While the only active finding is a warning (Kata's create-rollback line, its records
    alone): --severity critical shows none and exits 0."""
    first_warning = next(i for i in FINDINGS if RECORDS[i]["severity"] == "warning")
    path = journal(tmp_path, only(lambda r: r["severity"] == "warning", LINES[:first_warning + 1]))
    agent_lock(path)
    assert run(capsys, "findings", "--journal", str(path))[0] == 1
    rc, out = run(capsys, "findings", "--journal", str(path), "--severity", "critical")
    assert (rc, out) == (0, "0 active findings at critical or above\n")


def test_no_agent_running_is_exit_3_and_said(tmp_path: Path, capsys) -> None:
    """No process holds the lock (a stale lock file naming a dead pid included): exit 3 from
    both commands, and the state is shown as what the agent left."""
    path = while_critical(tmp_path)
    (tmp_path / "journal.jsonl.lock").write_text(f"{2**22 + 1}\nstarted 2026-11-27T16:07:04Z\n")
    rc, out = run(capsys, "status", "--journal", str(path))
    assert rc == 3
    assert out.startswith(f"agent     NOT RUNNING: no process holds {path}.lock; what follows is "
                          "the state it recorded last")
    rc, out = run(capsys, "findings", "--journal", str(path))
    assert rc == 3 and "2 active findings" in out


def test_the_stopped_agents_sources_are_down_with_their_reason(tmp_path: Path, agent_lock, capsys) -> None:
    """The whole recording (every source stopped at the end, eBPF included): status lists them
    ✗ with the reason; exit 1 (sources down, and the Kata exposure warning is still open)."""
    path = journal(tmp_path, LINES)
    agent_lock(path)
    rc, out = run(capsys, "status", "--journal", str(path))
    assert rc == 1
    assert "sources   0 up, 4 down" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("  ✗")] == [
        ["✗", "ebpf", "kprobe"], ["✗", "kata", "configured"], ["✗", "links", "all-netns"],
        ["✗", "uevent", "netlink"]]
    assert all(line.rstrip().endswith("stopped") for line in out.splitlines()
               if line.startswith("  ✗")), out
    assert "findings  1 active: 1 warning" in out


def test_a_missing_or_foreign_journal_is_refused_with_the_fix(tmp_path: Path, capsys) -> None:
    """Exit 2 with the path and what to do, for a missing file and for a file that is not a
    journal."""
    rc = cli.main(["status", "--journal", str(tmp_path / "none.jsonl")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith(f"No agent journal: {tmp_path / 'none.jsonl'} does not exist")
    assert "hint: start the agent (systemctl start vfiowatch)" in err
    other = tmp_path / "other.txt"
    other.write_text("hello\n")
    rc = cli.main(["findings", "--journal", str(other)])
    err = capsys.readouterr().err
    assert rc == 2 and f"{other} is not a vfiowatch journal" in err


def test_hostile_strings_in_a_journal_reach_the_terminal_escaped(tmp_path: Path, agent_lock, capsys) -> None:
    """A summary and a source reason holding terminal escapes are printed escaped."""
    doc = dict(RECORDS[coldplug(None)])
    doc["summary"] = "moved \x1b]0;owned\x07 by \x1b[2J"
    src = {"kind": "source_state_changed", "ts_ns": doc["ts_ns"], "source": "runtime",
           "name": "uevent", "up": False, "reason": "gone\rOK"}
    path = journal(tmp_path, [*LINES[:FINDINGS[0]], json.dumps(doc).encode() + b"\n",
                              json.dumps(src).encode() + b"\n"])
    agent_lock(path)
    _rc, out = run(capsys, "findings", "--journal", str(path))
    _rc, out2 = run(capsys, "status", "--journal", str(path))
    assert "\x1b" not in out + out2 and "\r" not in out + out2
    assert "moved \\x1b]0;owned\\x07 by \\x1b[2J" in out and "gone\\x0dOK" in out2


def test_lock_holder_is_the_process_holding_the_lock_now(tmp_path: Path) -> None:
    """The holder is read from the kernel's lock table: none without a lock file, the child's
    pid while it holds the lock, none once it is killed (its pid still written in the file)."""
    path = while_critical(tmp_path)
    assert ag.lock_holder(path) is None
    p = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from diag.sinks.journal import lock_journal; lock_journal(Path(sys.argv[1])); "
         "print('locked', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert p.stdout is not None and p.stdout.readline() == "locked\n"
        assert ag.lock_holder(path) == p.pid
    finally:
        p.kill()
        p.wait()
    assert (tmp_path / "journal.jsonl.lock").read_text().split("\n")[0] == str(p.pid)
    assert ag.lock_holder(path) is None
