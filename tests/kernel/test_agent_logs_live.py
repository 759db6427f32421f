"""A real `vfiowatch run --log-events` log, read back by `vfiowatch postmortem` as the agent's JSON logs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from tests.conftest import vfiowatch_bin
from tests.kernel.test_service_live import Agent, a_device, agents, synth  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("require_root")


def test_the_agents_own_log_is_a_postmortem_input(agents: Callable[..., Agent]) -> None:  # noqa: F811
    """Every line the agent wrote is read (agent-logs, none skipped), and the synthetic bind it
    logged comes back as that device's bind event, marked synthetic."""
    agent = agents("--sources", "uevent", metrics=False, sources=("uevent",))
    bdf = a_device()
    synth(bdf, "bind")
    agent.wait_for(lambda d: d["event"] == "device_bound" and d.get("bdf") == bdf)
    assert agent.stop()[0] == 0
    p = subprocess.run([vfiowatch_bin(), "postmortem", str(agent.out), "--format", "json"],
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(p.stdout)
    [inp] = doc["inputs"]
    assert (inp["format"], inp["bad_lines"]) == ("agent-logs", 0), inp["first_bad"]
    bound = [e["event"] for e in doc["timeline"] if e["event"]["kind"] == "device_bound"]
    assert any(e["bdf"] == bdf and e["synthetic"] for e in bound), bound
    states = [e["event"] for e in doc["timeline"] if e["event"]["kind"] == "source_state_changed"]
    assert [(s["name"], s["up"]) for s in states] == [("uevent", True), ("uevent", False)]
