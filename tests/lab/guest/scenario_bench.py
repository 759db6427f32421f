"""Benchmarks inside the guest (the guest kernel has kprobes, unlike the build machine).

1. Overhead of the agent's eBPF source on unrelated syscalls: one-byte write()s to /dev/null
   (tests/lab/guest/c/writeloop.c), side by side: no probe, a bare bcc kprobe on the write
   syscall (the floor any kprobe-based tool pays), and `vfiowatch run` with its eBPF source up.
2. Detection latency: the kernel's `bind DRIVER=vfio-pci` uevent (stamped on a raw netlink
   socket) to the agent's finding log line (stamped when read from its stdout), beside
   `udevadm monitor --kernel` reading the same uevent; and whether that first line already has
   the finding's final severity and its actor (a pager fires on the first line).

Sends `bench.json` (every sample) and `bench.txt` (the table).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time

import kata
import labio
import scenario_agent
import sriov
from sriov import VF0

WRITES = 200_000
ROUNDS = 5
LATENCY_RUNS = 15
RULE = "vfio-bind-coldplug-disabled"


def writeloop() -> float:
    out = subprocess.run(["/lab/bin/writeloop", str(WRITES)], capture_output=True, text=True,
                         check=True).stdout
    return float(out)


def measure(label: str, results: dict[str, list[float]]) -> None:
    for _ in range(ROUNDS):
        results.setdefault(label, []).append(writeloop())
    labio.say(f"{label}: {statistics.median(results[label]):.1f} ns/write")


class LineClock(threading.Thread):
    """Reads a child's output lines and stamps each with CLOCK_MONOTONIC on arrival."""

    def __init__(self, proc: subprocess.Popen[bytes], *keep: bytes) -> None:
        super().__init__(daemon=True)
        self.proc, self.keep = proc, keep
        self.lines: list[tuple[int, bytes]] = []
        self.all: list[bytes] = []
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t = time.monotonic_ns()
            self.all.append(line)
            if all(k in line for k in self.keep):
                self.lines.append((t, line))


def latency(help_text: str) -> dict[str, list[float]]:
    kata.install_config("no-port")
    sid = kata.sandbox_id(9)
    kata.create_sandbox(sid)
    rec = sriov.Recorder()
    agent = scenario_agent.Agent(98, help_text, pipe=True)
    # Only the line that opens a finding: updates and resolutions name the rule too.
    agent_lines = LineClock(agent.proc, RULE.encode(), b'"status":"open"')
    udevadm = subprocess.Popen(["udevadm", "monitor", "--kernel"], stdout=subprocess.PIPE)
    udev_lines = LineClock(udevadm, b" bind ")
    agent.wait_ready()
    out: dict[str, list[float]] = {"agent_ms": [], "udevadm_ms": [], "missed": [],
                                   "opened_final": [], "opened_early": []}
    for i in range(LATENCY_RUNS):
        rec.take()
        n_agent, n_udev = len(agent_lines.lines), len(udev_lines.lines)
        shim = kata.start_shim(sid, f"kata38-bind:{VF0};wait:back{i};kata38-restore:{VF0}:igbvf")
        t_bind = None
        end = time.monotonic() + 20
        while time.monotonic() < end and (t_bind is None or len(agent_lines.lines) <= n_agent):
            for r in rec.records:
                if (t_bind is None and r.socket == "uevent" and r.data.startswith(b"bind@")
                        and b"DRIVER=vfio-pci" in r.data):
                    t_bind = r.t_mono_ns
            time.sleep(0.005)
        if t_bind is not None and len(agent_lines.lines) > n_agent:
            out["agent_ms"].append((agent_lines.lines[n_agent][0] - t_bind) / 1e6)
            first = _fields(agent_lines.lines[n_agent][1])
            final = first.get("severity") == "critical" and first.get("actor_comm") == SHIM_COMM
            out["opened_final" if final else "opened_early"].append(float(i))
            if not final:
                labio.say(f"move {i}: the finding opened as {first.get('severity')!r} with actor "
                          f"{first.get('actor_comm')!r}")
        else:
            out["missed"].append(float(i))
        if t_bind is not None and len(udev_lines.lines) > n_udev:
            out["udevadm_ms"].append((udev_lines.lines[n_udev][0] - t_bind) / 1e6)
        scenario_agent.go(f"back{i}")
        kata.wait_steps_done(shim)
        kata.stop(shim)
        sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
        time.sleep(1.5)  # past the lab's episode window, so the next move is a new episode
    agent.stop()
    udevadm.send_signal(signal.SIGTERM)
    udevadm.wait(10)
    rec.close()
    kata.remove_sandbox(sid)
    labio.send("agent-bench.log", b"".join(agent_lines.all)[-20000:])
    return out


SHIM_COMM = "containerd-shim"
"""The Kata shim's comm (15 characters of containerd-shim-kata-v2): the finding's actor."""


def _fields(line: bytes) -> dict[str, object]:
    """The JSON object of an agent log line (empty when it is not one)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    sriov.setup()
    sriov.enable_vfs(2)
    kata.install_binaries()
    os.makedirs(os.path.dirname(scenario_agent.LAB_CONFIG), exist_ok=True)
    with open(scenario_agent.LAB_CONFIG, "w") as fh:
        fh.write(scenario_agent.LAB_CORE + "episode_window = 1\n")
    res = subprocess.run(["vfiowatch", "run", "--help"], capture_output=True, text=True)
    help_text = res.stdout + res.stderr
    if res.returncode != 0:  # the agent is part of the project: no agent, no benchmark
        labio.fail(f"`vfiowatch run --help` exited {res.returncode} in the guest:\n{help_text}")
        return 1
    sources = scenario_agent.registered_sources()
    # The cold-plug finding needs the actor (eBPF) and the sandbox's configuration (Kata).
    if not {"ebpf", "kata"} <= set(sources):
        labio.fail(f"the agent in the guest lacks the ebpf or kata source (has {sources})")
        return 1
    over: dict[str, list[float]] = {}
    # Rounds alternate (A, B, A, B, ...) so drift on the shared host hits both sides alike.
    from bcc import BPF

    b = BPF(text="int on_write(void *ctx) { return 0; }")
    fn = b.get_syscall_fnname("write")
    for _ in range(ROUNDS):
        over.setdefault("no probe", []).append(writeloop())
        b.attach_kprobe(event=fn, fn_name="on_write")
        over.setdefault("bare kprobe (bcc)", []).append(writeloop())
        b.detach_kprobe(event=fn)
    b.cleanup()
    measure("no probe (before)", over)
    labio.say(f"no probe {statistics.median(over['no probe']):.1f} ns/write, bare kprobe "
              f"{statistics.median(over['bare kprobe (bcc)']):.1f} ns/write")
    mode = ""
    # The agent cannot be switched on and off per round (start-up compiles its probes), so
    # its rounds are bracketed by no-probe rounds right before and right after.
    agent = scenario_agent.Agent(99, help_text)
    agent.wait_ready()
    for r in agent.records():
        if r.get("kind") == "source_state_changed" and r.get("name") == "ebpf":
            mode = r.get("mode", "") or mode
    # Paused (SIGSTOP) the agent's probes stay attached but its user space uses no CPU:
    # that isolates the eBPF cost from the agent's own work, which under TCG competes with
    # the benchmark for the same two emulated CPUs.
    for _ in range(ROUNDS):
        over.setdefault("vfiowatch run", []).append(writeloop())
        agent.proc.send_signal(signal.SIGSTOP)
        over.setdefault("probes, agent paused", []).append(writeloop())
        agent.proc.send_signal(signal.SIGCONT)
    agent.stop()
    measure("no probe (after)", over)
    lat = latency(help_text)
    base = statistics.median(over["no probe"])
    # The agent's ratios are against its own bracket.
    bracket = statistics.median(over["no probe (before)"] + over["no probe (after)"])
    over_ratio = statistics.median(over["vfiowatch run"]) / bracket
    paused_ratio = statistics.median(over["probes, agent paused"]) / bracket
    lines = [f"eBPF overhead on 1-byte write()s to /dev/null ({WRITES} per round, "
             f"{ROUNDS} rounds, median ns/write; guest under TCG):"]
    for label, xs in over.items():
        lines.append(f"  {label:<22} {statistics.median(xs):9.1f} ns   "
                     f"x{statistics.median(xs) / base:.3f} vs interleaved no probe")
    lines.append(f"  vs the no-probe rounds bracketing the agent: eBPF probes alone (agent "
                 f"paused) x{paused_ratio:.3f} (target <= 1.02); whole agent running "
                 f"x{over_ratio:.3f}")
    lines.append(f"  (agent sources: {','.join(sources)}; eBPF mode: {mode or 'no eBPF source'})")
    lines.append(f"detection latency, bind uevent -> line ({LATENCY_RUNS} moves):")
    for key, label in (("agent_ms", "vfiowatch finding log"), ("udevadm_ms", "udevadm monitor")):
        xs = lat.get(key, [])
        lines.append(f"  {label:<22} median {pct(xs, 0.5):8.1f} ms   p99 {pct(xs, 0.99):8.1f} ms"
                     f"   (n={len(xs)})")
    lines.append(f"  missed: {len(lat.get('missed', []))}; the first line already critical with "
                 f"the shim as actor: {len(lat.get('opened_final', []))}/"
                 f"{len(lat.get('opened_final', [])) + len(lat.get('opened_early', []))}")
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    labio.send("bench.txt", text.encode())
    labio.send("bench.json", json.dumps({"overhead_ns": over, "latency_ms": lat,
                                         "agent_overhead_ratio": over_ratio,
                                         "probe_overhead_ratio": paused_ratio,
                                         "ebpf_mode": mode, "sources": sources}).encode())
    return 0
