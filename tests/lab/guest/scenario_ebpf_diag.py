"""Diagnostic scenario: the agent's eBPF source in kprobe mode, with raw events logged, while
the shim actor moves a VF. Sends the agent's log, its journal and the kernel's kprobe list."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import kata
import labio
import scenario_agent
import sriov
from sriov import VF0


def main() -> int:
    sriov.setup()
    sriov.enable_vfs(2)
    kata.install_binaries()
    kata.install_config("no-port")
    sid = kata.sandbox_id(7)
    kata.create_sandbox(sid)
    log = open("/tmp/agent-diag.log", "wb")  # noqa: SIM115
    agent = subprocess.Popen(["vfiowatch", "run", "--journal", "/tmp/journal-diag.jsonl",
                              "--log-events", "--log-level", "debug"],
                             stdout=log, stderr=subprocess.STDOUT)
    a = scenario_agent.Agent.__new__(scenario_agent.Agent)
    a.journal, a.proc, a.t0, a.since_ns = "/tmp/journal-diag.jsonl", agent, time.monotonic(), 0
    a.wait_ready()
    probes = Path("/sys/kernel/tracing/kprobe_events").read_text()
    shim = kata.start_shim(sid, f"kata38-bind:{VF0};kata38-restore:{VF0}:igbvf")
    kata.wait_steps_done(shim)
    time.sleep(5)
    kata.stop(shim)
    agent.terminate()
    agent.wait(30)
    log.close()
    labio.send("kprobe_events.txt", probes.encode())
    labio.send("agent-diag.log", Path("/tmp/agent-diag.log").read_bytes())
    labio.send("journal-diag.jsonl", Path("/tmp/journal-diag.jsonl").read_bytes())
    return 0
