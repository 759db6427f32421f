"""`vfiowatch postmortem` on a journal the real `vfiowatch run` wrote on this machine (root)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import vfiowatch_bin
from tests.kernel.test_service_live import Agent, a_device, synth

pytestmark = pytest.mark.usefixtures("require_root")


def test_postmortem_of_a_live_agent_journal_agrees_with_it(tmp_path: Path) -> None:
    """Synthetic uevents through the running agent into its journal; postmortem of the journal
    directory reads every line, shows the events as synthetic, and its findings equal the
    ones the agent recorded."""
    agent = Agent(tmp_path, metrics=False)
    bdf = a_device()
    try:
        for action in ("unbind", "bind", "change"):
            synth(bdf, action)
            time.sleep(0.2)
        agent.wait_for(lambda d: d.get("event") == "device_changed" and d.get("bdf") == bdf
                       and d.get("synthetic"), timeout=15)
        time.sleep(1.5)  # at least one timer tick and journal flush
    finally:
        rc, _ = agent.stop()
    assert rc == 0
    out = subprocess.run([vfiowatch_bin(), "postmortem", "--format", "json",
                          str(agent.journal.parent)], capture_output=True, text=True, timeout=120)
    doc = json.loads(out.stdout)
    assert out.returncode == doc["exit_status"] and out.returncode in (0, 1)
    journals = [i for i in doc["inputs"] if i["format"] == "journal"]
    assert journals and all(i["bad_lines"] == 0 and not i["error"] for i in journals)
    mine = [e["event"] for e in doc["timeline"] if e["event"].get("bdf") == bdf]
    assert {e["kind"] for e in mine} >= {"device_unbound", "device_bound", "device_changed"}
    assert all(e.get("synthetic") for e in mine if e["kind"].startswith("device_"))
    assert doc["replay_matches_recording"] in (True, None)
