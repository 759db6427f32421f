"""One agent per journal, with two real `vfiowatch run` processes: the second refuses, kill -9 frees it.

Without the lock a second `run --journal J` rotated J away while the first kept writing to the
deleted file: everything the first recorded after that was lost.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from diag import events as ev
from diag.sinks.journal import journal_records
from tests.conftest import vfiowatch_bin
from tests.kernel.test_service_live import Agent, a_device, agents, synth  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("require_root")


def _listing(d: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_ino, p.stat().st_size) for p in d.iterdir()}


def test_a_second_agent_refuses_names_the_first_and_touches_nothing(
        agents: Callable[..., Agent], tmp_path: Path) -> None:  # noqa: F811
    """The second `run` on the same journal exits non-zero within seconds naming the first's
    pid, leaves the journal directory as it was, and the first journals every later event."""
    first = agents("--sources", "uevent", metrics=False, sources=("uevent",))
    journal = first.journal
    bdf = a_device()
    synth(bdf, "bind")
    first.wait_for(lambda d: d["event"] == "device_bound" and d.get("bdf") == bdf)
    before = _listing(journal.parent)
    lock = journal.with_name(journal.name + ".lock")

    second = subprocess.Popen([vfiowatch_bin(), "run", "--journal", str(journal), "--sources", "uevent"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _out, err = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        second.kill()
        _out, err = second.communicate()
        pytest.fail(f"the second agent kept running beside the first:\n{err[-2000:]}")
    assert second.returncode != 0, err[-2000:]
    assert err.startswith(f"Journal in use: {journal} is being written by another vfiowatch "
                          f"agent (pid {first.proc.pid}"), err
    assert "hint: stop that agent first" in err and "Traceback" not in err
    assert _listing(journal.parent) == before  # nothing written, rotated, compressed or deleted
    assert lock.read_text().split("\n")[0] == str(first.proc.pid)

    for _ in range(5):
        synth(bdf, "bind")
    end = time.monotonic() + 15
    while sum(1 for d in first.lines() if d["event"] == "device_bound" and d.get("bdf") == bdf) < 6:
        assert time.monotonic() < end, "the first agent stopped seeing uevents"
        time.sleep(0.05)
    rc, _ = first.stop()
    assert rc == 0
    assert journal.stat().st_ino == before[journal.name][0]  # the same file, never rotated away
    recs, _ = journal_records(journal)
    bound = [r for r in recs if isinstance(r, ev.DeviceBound) and r.bdf == bdf and r.synthetic]
    assert len(bound) == 6


def test_after_kill_9_a_new_agent_starts_on_the_same_journal(
        agents: Callable[..., Agent], tmp_path: Path) -> None:  # noqa: F811
    """The kernel drops the lock with the killed process: the stale lock file (old pid still in
    it) is no obstacle, and the new agent writes its own pid."""
    first = agents("--sources", "uevent", metrics=False, sources=("uevent",))
    lock = first.journal.with_name(first.journal.name + ".lock")
    old = first.proc.pid
    first.stop(signal.SIGKILL)
    assert lock.read_text().split("\n")[0] == str(old)
    second = agents("--sources", "uevent", metrics=False, sources=("uevent",), journal=first.journal)
    assert lock.read_text().split("\n")[0] == str(second.proc.pid) != str(old)
    rc, _ = second.stop()
    assert rc == 0 and os.path.exists(first.journal)
