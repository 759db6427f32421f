"""`vfiowatch status` and `findings` against a real `vfiowatch run` on this machine, then after it stops."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import pytest

from tests.conftest import vfiowatch_bin
from tests.kernel.test_service_live import Agent, agents  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("require_root")


def _status(journal: object, *extra: str) -> tuple[int, dict]:
    p = subprocess.run([vfiowatch_bin(), "status", "--journal", str(journal), "--format", "json",
                        *extra], capture_output=True, text=True, timeout=30)
    assert p.stderr == "", p.stderr
    return p.returncode, json.loads(p.stdout)


def test_status_sees_the_running_agent_then_its_stop(agents: Callable[..., Agent]) -> None:  # noqa: F811
    """While `run` writes the journal: running with the agent's own pid, its uevent source up,
    exit 0. After SIGTERM: exit 3, not running, the source recorded as stopped."""
    agent = agents("--sources", "uevent", metrics=False, sources=("uevent",))
    end = time.monotonic() + 15
    while True:  # the journal is written within about a second of the log line
        rc, doc = _status(agent.journal)
        if rc == 0 or time.monotonic() > end:
            break
        time.sleep(0.2)
    assert rc == 0, doc
    assert (doc["agent"]["running"], doc["agent"]["pid"]) == (True, agent.proc.pid)
    assert [(s["name"], s["up"]) for s in doc["sources"]] == [("uevent", True)]
    p = subprocess.run([vfiowatch_bin(), "findings", "--journal", str(agent.journal)],
                       capture_output=True, text=True, timeout=30)
    assert (p.returncode, p.stdout) == (0, "0 active findings\n")

    assert agent.stop()[0] == 0
    rc, doc = _status(agent.journal)
    assert rc == 3 and doc["agent"]["running"] is False and doc["agent"]["pid"] is None
    [src] = doc["sources"]
    assert (src["name"], src["up"], src["reason"]) == ("uevent", False, "stopped")
