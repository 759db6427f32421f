"""Latency benchmark on the host: a kernel uevent to the agent's log line, beside `udevadm monitor`.

`vfiowatch run --no-journal --log-events` with every source it can run (the eBPF source too, once
attached: its watermark lags the clock by `lag_ms`), and `udevadm monitor --kernel`, both read
from pipes and stamped as each line arrives; the benchmark writes synthetic `add <uuid>` uevents
(safe: the kernel only broadcasts them) to a PCI device of this machine, 100 ms apart, and times
each from just before the write to the agent's `device_added` line and to udevadm's. The agent's
figure is what the runtime's merge adds to reading the socket: the watermark merge (issue 19
item 3) instead of the fixed 75 ms window. The lab bench times the real bind -> finding line.
Prints a table; asserts no time, only that every uevent reached both.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable

import pytest

from tests.bench.benchtable import table
from tests.conftest import vfiowatch_bin
from tests.kernel.vw_kernel_helpers import storm_device

pytestmark = pytest.mark.usefixtures("require_root")

UEVENTS = int(os.environ.get("VFIOWATCH_BENCH_LATENCY_UEVENTS", "50"))


class _Lines:
    """The lines of a process's stdout that `want` keeps, each with the wall clock (ns) it was
    read at."""

    def __init__(self, proc: subprocess.Popen[bytes], want: Callable[[bytes], bool]) -> None:
        self.lines: list[tuple[int, bytes]] = []
        self._proc, self._want = proc, want
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            t = time.time_ns()
            if self._want(line):
                self.lines.append((t, line))


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


@pytest.mark.bench
def test_uevent_to_agent_log_line_beside_udevadm_monitor() -> None:
    """Median/p90/p99 ms from a synthetic uevent's write to the agent's line and udevadm's."""
    bdf = storm_device()
    tag = bdf.encode()
    agent = subprocess.Popen([vfiowatch_bin(), "run", "--no-journal", "--log-events"],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    udev = subprocess.Popen(["udevadm", "monitor", "--kernel"], stdout=subprocess.PIPE)
    try:
        health: dict[str, str] = {}

        def agent_line(line: bytes) -> bool:
            if b'"source_state_changed"' in line:
                rec = json.loads(line)
                health[rec["source"]] = f"{'up' if rec['up'] else 'down'} {rec.get('mode', '')}"
                if rec["source"] == "ebpf" and "attached" in rec.get("reason", ""):
                    health["ebpf"] += " attached"
            return b'"device_added"' in line and tag in line

        got = _Lines(agent, agent_line)
        seen = _Lines(udev, lambda line: b" add " in line and tag in line)
        deadline = time.monotonic() + 120  # bcc compiles the eBPF programs first
        while time.monotonic() < deadline and not (
                "attached" in health.get("ebpf", "") or health.get("ebpf", "").startswith("down")):
            time.sleep(0.1)
        time.sleep(1)
        sources = ", ".join(f"{k} {v}" for k, v in sorted(health.items()))
        agent_ms: list[float] = []
        udev_ms: list[float] = []
        for _ in range(UEVENTS):
            na, nu = len(got.lines), len(seen.lines)
            t0 = time.time_ns()
            with open(f"/sys/bus/pci/devices/{bdf}/uevent", "w") as fh:
                fh.write(f"add {uuid.uuid4()}")
            until = time.monotonic() + 2
            while (len(got.lines) == na or len(seen.lines) == nu) and time.monotonic() < until:
                time.sleep(0.0005)
            if len(got.lines) > na:
                agent_ms.append((got.lines[na][0] - t0) / 1e6)
            if len(seen.lines) > nu:
                udev_ms.append((seen.lines[nu][0] - t0) / 1e6)
            time.sleep(0.1)
    finally:
        for p in (agent, udev):
            p.terminate()
            p.wait(10)
    rows = [(name, f"{_pct(xs, .5):.1f}", f"{_pct(xs, .9):.1f}", f"{_pct(xs, .99):.1f}",
             f"{len(xs)}/{UEVENTS}") for name, xs in (("vfiowatch run (log line)", agent_ms),
                                                     ("udevadm monitor --kernel", udev_ms))]
    print()
    print(table(f"a synthetic uevent on {bdf} to the line that tells it, ms (agent sources: "
                f"{sources})",
                ("reader", "median", "p90", "p99", "seen"), rows))
    print(f"agent/udevadm medians: {_pct(agent_ms, .5) / _pct(udev_ms, .5):.1f}x; the fixed "
          f"merge window this replaced held every event 75 ms")
    assert len(agent_ms) == len(udev_ms) == UEVENTS
