"""Benchmarks inside the guest (the guest kernel has kprobes, unlike the build machine).

1. Overhead of the agent's eBPF source on unrelated syscalls: one-byte write()s to /dev/null
   (tests/lab/guest/c/writeloop.c), side by side: no probe, a bare bcc kprobe on the write
   syscall (the floor any kprobe-based tool pays), and `vfiowatch run` with its eBPF source up.
2. Detection latency: the kernel's `bind DRIVER=vfio-pci` uevent (stamped on a raw netlink
   socket) to the agent's finding log line (stamped when read from its stdout), beside
   `udevadm monitor --kernel` reading the same uevent; the severity and actor the finding
   opened with and whether an update line followed (a pager fires on the first line); and
   whether the agent's journal kept the kernel's order across its sockets.

One agent serves both: its start-up (bcc compiling the probes: minutes under TCG on a loaded
host) is paid once per boot, and the bare kprobe's program compiles while it does. The
no-probe rounds that bracket the agent run before it starts and right after it stops.

Sends `bench.json` (every sample) and `bench.txt` (the table).
"""

from __future__ import annotations

import calendar
import collections
import json
import os
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

import kata
import labio
import scenario_agent
import sriov
from sriov import VF0

WRITES = 200_000
ROUNDS = 5
LATENCY_RUNS = 15
RULE = "vfio-bind-coldplug-disabled"
SHIM_COMM = "containerd-shim"
"""The Kata shim's comm (15 characters of containerd-shim-kata-v2): the finding's actor."""
ORDER_KINDS = ("sysfs_write_observed", "device_unbound", "device_bound", "netdev_removed",
               "netdev_added", "link_removed", "link_changed", "vfio_device_added",
               "vfio_device_removed", "finding")
"""Journal records whose order the merge decides (events from the uevent, links and eBPF
sockets, and the findings they raise)."""


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
        self.wall: list[int] = []
        """time.time_ns() at each kept line's arrival (the agent stamps its lines' events so)."""
        self.all: list[bytes] = []
        self.start()

    def run(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            t, wall = time.monotonic_ns(), time.time_ns()
            self.all.append(line)
            if all(k in line for k in self.keep):
                self.wall.append(wall)
                self.lines.append((t, line))


class Compile(threading.Thread):
    """Compiles the bare kprobe's program (bcc) while the agent compiles its own."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.bpf: Any = None
        self.error = ""
        self.seconds = 0.0
        self.start()

    def run(self) -> None:
        t0 = time.monotonic()
        try:
            from bcc import BPF

            self.bpf = BPF(text="int on_write(void *ctx) { return 0; }")
        except Exception as exc:  # reported with the table; the agent's rows still count
            self.error = f"{type(exc).__name__}: {exc}"
        self.seconds = time.monotonic() - t0


def _fields(line: bytes) -> dict[str, object]:
    """The JSON object of an agent log line (empty when it is not one)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return {}
    return rec if isinstance(rec, dict) else {}


def _iso_ns(stamp: str) -> int:
    """`2026-12-03T13:08:55.902682Z` (the log sink's timestamp) -> ns since the epoch."""
    day, frac = stamp.rstrip("Z").split(".")
    secs = calendar.timegm(time.strptime(day, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int(frac.ljust(9, "0")[:9])


class Profile:
    """py-spy sampling the agent's threads while the moves run (when the image has py-spy):
    where the agent's CPU goes between a uevent and its finding line."""

    SPY = "/lab/bin/py-spy"
    OUT = "/tmp/agent-profile.txt"

    def __init__(self, pid: int) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if os.path.exists(self.SPY):
            self.proc = subprocess.Popen(
                [self.SPY, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", self.OUT,
                 "--threads", "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self, top: int = 12) -> list[list[str]]:
        """[[function, % own samples, % samples under it]] of the busiest frames, and a row per
        thread (its share of the samples), or a row saying why there is no profile."""
        if self.proc is None:
            return [["no py-spy in the image", "", ""]]
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return [["py-spy did not stop", "", ""]]
        if not os.path.exists(self.OUT):
            return [[f"py-spy wrote nothing: {err.decode(errors='replace').strip()[-200:]}", "", ""]]
        own: collections.Counter[str] = collections.Counter()
        under: collections.Counter[str] = collections.Counter()
        threads: collections.Counter[str] = collections.Counter()
        n = 0
        with open(self.OUT) as fh:
            for line in fh:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not count.isdigit():
                    continue
                c = int(count)
                frames = stack.split(";")
                n += c
                threads[frames[0]] += c
                names = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1]
                         + ")" for f in frames[1:]]
                if names:
                    own[names[-1]] += c
                for name in set(names):
                    under[name] += c
        if not n:
            return [["py-spy took no sample", "", ""]]
        rows = [[f"{t} (thread)", f"{100 * c / n:.0f}", ""] for t, c in threads.most_common(6)]
        rows += [[f, f"{100 * c / n:.1f}", f"{100 * under[f] / n:.1f}"] for f, c in own.most_common(top)]
        return [*rows, [f"{n} samples at 100/s", "", ""]]


def latency(agent: scenario_agent.Agent, agent_lines: LineClock, sid: str
            ) -> dict[str, list[float]]:
    """LATENCY_RUNS moves of VF0 by the shim (cold_plug_vfio=no-port) and back."""
    rec = sriov.Recorder()
    udevadm = subprocess.Popen(["udevadm", "monitor", "--kernel"], stdout=subprocess.PIPE)
    udev_lines = LineClock(udevadm, b" bind ")
    time.sleep(1.0)  # udevadm's socket is bound before the first move
    out: dict[str, list[float]] = {"agent_ms": [], "udevadm_ms": [], "missed": [],
                                   "opened_final": [], "opened_early": [], "upgraded": [],
                                   "move_ns": [], "inside_ms": []}
    spy = Profile(agent.proc.pid)
    for i in range(LATENCY_RUNS):
        rec.take()
        n_agent, n_udev = len(agent_lines.lines), len(udev_lines.lines)
        start_ns = time.time_ns()
        shim = kata.start_shim(sid, f"kata38-bind:{VF0};wait:back{i};kata38-restore:{VF0}:igbvf")
        t_bind = None
        opened = None
        k = -1
        end = time.monotonic() + 20
        while time.monotonic() < end and (t_bind is None or opened is None):
            for r in rec.records:
                if (t_bind is None and r.socket == "uevent" and r.data.startswith(b"bind@")
                        and b"DRIVER=vfio-pci" in r.data):
                    t_bind = r.t_mono_ns
            k, opened = next(((j, x) for j, x in enumerate(agent_lines.lines[n_agent:], n_agent)
                              if _fields(x[1]).get("status") == "open"), (-1, None))
            time.sleep(0.005)
        first: dict[str, object] = {}
        if t_bind is not None and opened is not None:
            out["agent_ms"].append((opened[0] - t_bind) / 1e6)
            first = _fields(opened[1])
            # The line's timestamp is the bind uevent's, as the agent stamped it on receipt:
            # what follows it (merge, core, log sink) is the agent's own part of the latency.
            out["inside_ms"].append((agent_lines.wall[k] - _iso_ns(str(first["timestamp"])))
                                    / 1e6)
            final = first.get("severity") == "critical" and first.get("actor_comm") == SHIM_COMM
            out["opened_final" if final else "opened_early"].append(float(i))
            if not final:
                labio.say(f"move {i}: the finding opened as {first.get('severity')!r} with actor "
                          f"{first.get('actor_comm')!r}")
        else:
            out["missed"].append(float(i))
        if t_bind is not None and len(udev_lines.lines) > n_udev:
            out["udevadm_ms"].append((udev_lines.lines[n_udev][0] - t_bind) / 1e6)
        time.sleep(0.5)  # an attribution arriving late would update the finding by now
        scenario_agent.go(f"back{i}")
        kata.wait_steps_done(shim)
        kata.stop(shim)
        sriov.wait_for(lambda: sriov.driver_of(VF0) == "igbvf", 5)
        time.sleep(1.5)  # past the lab's episode window, so the next move is a new episode
        # An update of the same finding while it was open: the severity or actor it opened
        # with was not final (resolution lines are not updates).
        fid = first.get("finding_id")
        ups = [f for _, x in agent_lines.lines[n_agent:] if (f := _fields(x)).get("finding_id")
               == fid and f.get("status") == "updated"
               and (f.get("severity"), f.get("actor_comm")) != (first.get("severity"),
                                                               first.get("actor_comm"))]
        if fid and ups:
            out["upgraded"].append(float(i))
            labio.say(f"move {i}: opened {first.get('severity')}/{first.get('actor_comm')}, then "
                      f"updated to {ups[0].get('severity')}/{ups[0].get('actor_comm')}")
        out["move_ns"] += [float(start_ns), float(time.time_ns())]
    udevadm.send_signal(signal.SIGTERM)
    udevadm.wait(10)
    rec.close()
    out["profile"] = spy.stop()
    return out


def journal_order(path: str, moves: list[float]) -> dict[str, object]:
    """How well the agent's journal kept the kernel's order across its sockets: records
    released behind a newer one (out of time order), and per move whether the shim's three
    writes came before the vfio-pci bind and the unbind before it."""
    recs: list[dict] = []
    with open(path, "rb") as fh:
        for line in fh:
            try:
                recs.append(json.loads(line))
            except ValueError:
                continue
    newest, behind, kinds = 0, 0, 0
    behind_kinds: dict[str, int] = {}
    for r in recs:
        if r.get("kind") not in ORDER_KINDS:
            continue
        kinds += 1
        ts = int(r.get("ts_ns", 0))
        if ts < newest:
            behind += 1
            behind_kinds[r["kind"]] = behind_kinds.get(r["kind"], 0) + 1
        newest = max(newest, ts)
    in_order, checked = 0, 0
    for a, b in zip(moves[::2], moves[1::2], strict=True):
        seq = []
        for r in recs:
            if not a <= int(r.get("ts_ns", 0)) <= b or VF0 not in json.dumps(r):
                continue
            k = r.get("kind")
            if k == "sysfs_write_observed" and r.get("actor", {}).get("comm") == SHIM_COMM:
                seq.append("write:" + str(r.get("control")))
            elif k == "device_unbound":
                seq.append("unbound")
            elif k == "device_bound":
                seq.append("bound:" + str(r.get("driver")))
        if "bound:vfio-pci" not in seq:
            continue
        checked += 1
        head = seq[:seq.index("bound:vfio-pci")]
        want = ["write:driver_override", "write:unbind", "write:drivers_probe"]
        writes = [x for x in head if x.startswith("write:")]
        if writes[-3:] == want and "unbound" in head and head.index("unbound") > head.index(
                "write:unbind"):
            in_order += 1
        else:
            labio.say(f"order: move at {int(a)}: {seq}")
    return {"records": kinds, "behind": behind, "behind_kinds": behind_kinds,
            "moves_in_order": in_order, "moves_checked": checked}


def pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def main() -> int:
    t_start = time.monotonic()
    sriov.setup()
    sriov.enable_vfs(2)
    kata.install_binaries()
    os.makedirs(os.path.dirname(scenario_agent.LAB_CONFIG), exist_ok=True)
    with open(scenario_agent.LAB_CONFIG, "w") as fh:
        fh.write(scenario_agent.LAB_CORE + "episode_window = 1\n")
    kata.install_config("no-port")
    sid = kata.sandbox_id(9)
    kata.create_sandbox(sid)
    over: dict[str, list[float]] = {}
    # The agent's bracket, part one: nothing else runs yet.
    measure("no probe (before)", over)
    res = subprocess.run(["vfiowatch", "run", "--help"], capture_output=True, text=True)
    help_text = res.stdout + res.stderr
    if res.returncode != 0:  # the agent is part of the project: no agent, no benchmark
        labio.fail(f"`vfiowatch run --help` exited {res.returncode} in the guest:\n{help_text}")
        return 1
    agent = scenario_agent.Agent(99, help_text, pipe=True)
    # Every finding line of the rule: the one that opens it, its updates, its resolution.
    agent_lines = LineClock(agent.proc, RULE.encode())
    bare = Compile()  # the bare kprobe's program compiles while the agent compiles its own
    sources = scenario_agent.registered_sources()
    # The cold-plug finding needs the actor (eBPF) and the sandbox's configuration (Kata).
    if not {"ebpf", "kata"} <= set(sources):
        agent.stop()
        labio.fail(f"the agent in the guest lacks the ebpf or kata source (has {sources})")
        return 1
    ready_s = agent.wait_ready()
    mode = ""
    for r in agent.records():
        if r.get("kind") == "source_state_changed" and r.get("name") == "ebpf":
            mode = r.get("mode", "") or mode
    t_ready = time.monotonic()
    lat = latency(agent, agent_lines, sid)
    t_lat = time.monotonic() - t_ready
    # Paused (SIGSTOP) the agent's probes stay attached but its user space uses no CPU:
    # that isolates the eBPF cost from the agent's own work, which under TCG competes with
    # the benchmark for the same two emulated CPUs.
    for _ in range(ROUNDS):
        over.setdefault("vfiowatch run", []).append(writeloop())
        agent.proc.send_signal(signal.SIGSTOP)
        over.setdefault("probes, agent paused", []).append(writeloop())
        agent.proc.send_signal(signal.SIGCONT)
    agent.stop()
    measure("no probe (after)", over)  # the bracket, part two
    bare.join(600)
    if bare.bpf is not None:
        b = bare.bpf
        fn = b.get_syscall_fnname("write")
        # Rounds alternate (A, B, A, B, ...) so drift on the shared host hits both sides alike.
        for _ in range(ROUNDS):
            over.setdefault("no probe", []).append(writeloop())
            b.attach_kprobe(event=fn, fn_name="on_write")
            over.setdefault("bare kprobe (bcc)", []).append(writeloop())
            b.detach_kprobe(event=fn)
        b.cleanup()
    else:
        measure("no probe", over)
    order = journal_order(agent.journal, lat["move_ns"])
    kata.remove_sandbox(sid)
    labio.send("agent-bench.log", b"".join(agent_lines.all)[-20000:])
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
    if bare.error:
        lines.append(f"  bare kprobe not measured: {bare.error}")
    lines.append(f"  (agent sources: {','.join(sources)}; eBPF mode: {mode or 'no eBPF source'};"
                 f" one agent, ready {ready_s:.0f} s after its start; bare kprobe compiled in "
                 f"{bare.seconds:.0f} s beside it)")
    lines.append(f"detection latency, bind uevent -> line ({LATENCY_RUNS} moves in "
                 f"{t_lat:.0f} s):")
    for key, label in (("agent_ms", "vfiowatch finding log"), ("udevadm_ms", "udevadm monitor")):
        xs = lat.get(key, [])
        lines.append(f"  {label:<22} median {pct(xs, 0.5):8.1f} ms   p99 {pct(xs, 0.99):8.1f} ms"
                     f"   (n={len(xs)})")
    xs = lat.get("inside_ms", [])
    lines.append(f"  {'of which in the agent':<22} median {pct(xs, 0.5):8.1f} ms   p99 "
                 f"{pct(xs, 0.99):8.1f} ms   (its line's time is the uevent's receipt)")
    n_open = len(lat["opened_final"]) + len(lat["opened_early"])
    lines.append(f"  missed: {len(lat['missed'])}; opened critical with the shim as actor: "
                 f"{len(lat['opened_final'])}/{n_open}; an update of severity or actor "
                 f"followed: {len(lat['upgraded'])}/{n_open}")
    lines.append(f"  order across sockets: {order['behind']} of {order['records']} journal "
                 f"records behind a newer one {order['behind_kinds'] or ''}; the shim's three "
                 f"writes and the unbind before the vfio-pci bind in "
                 f"{order['moves_in_order']}/{order['moves_checked']} moves")
    lines.append(f"  (scenario took {time.monotonic() - t_start:.0f} s in the guest)")
    lines.append("the agent's threads during the moves (py-spy, active samples: function, % own, "
                 "% under it):")
    lines += [f"  {f:<70} {a:>6} {b:>6}" for f, a, b in lat.get("profile", [])]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    labio.send("bench.txt", text.encode())
    labio.send("bench.json", json.dumps({"overhead_ns": over, "latency_ms": lat,
                                         "agent_overhead_ratio": over_ratio,
                                         "probe_overhead_ratio": paused_ratio,
                                         "order": order, "ready_s": ready_s,
                                         "ebpf_mode": mode, "sources": sources}).encode())
    return 0
