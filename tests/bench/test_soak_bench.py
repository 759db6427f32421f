"""kill -9 during uevent storms and a soak at a steady rate: the real agent, its journal decoded.

`vfiowatch run --sources uevent` runs as a subprocess on a journal in a temporary directory
(default sinks: journal and metrics, no raw-event logging); the uevents are synthetic `change`
uevents for an existing device (`synth`: its driver never changes), written by a separate
process. Other work on this machine may send uevents too: every count beside the storm's own
(`sent`) is taken over the same window by the agent and by `udevadm monitor --kernel`.

* kill -9: KILLS rounds (VFIOWATCH_BENCH_KILLS, default 20) of start on the same journal, storm
  as fast as the host takes it for a random 0.5-2 s, SIGKILL. After each kill every line of
  every journal file is decoded with the codec: bad lines (none allowed) and cut last lines
  (at most one per kill, reported apart); the records of every file already seen must still
  all be there (a later round never has fewer); and how long each restart took to take the
  journal's lock over from the killed agent (its pid in the lock file) and to have its
  uevent source up.
* soak: SOAK_S seconds (VFIOWATCH_BENCH_SOAK_S, default 120; the issue's figure is 600) at
  SOAK_RATE uevents/s (VFIOWATCH_BENCH_SOAK_RATE, default 480), with `udevadm monitor
  --kernel` receiving the same uevents: RSS at start and end, CPU per event, events lost by
  the agent's own counters, the journal's size.

Prints tables; asserts only correctness (no bad line, nothing written lost), never a time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from diag import codec
from diag import events as ev
from diag.sinks.journal import journal_records, lock_path
from tests.bench.benchtable import table
from tests.conftest import REPO, vfiowatch_bin
from tests.kernel.test_service_live import Agent, _parts, a_device

pytestmark = pytest.mark.usefixtures("require_root")

KILLS = int(os.environ.get("VFIOWATCH_BENCH_KILLS", "20"))
SOAK_S = float(os.environ.get("VFIOWATCH_BENCH_SOAK_S", "120"))
SOAK_RATE = float(os.environ.get("VFIOWATCH_BENCH_SOAK_RATE", "480"))
CLK_TCK = os.sysconf("SC_CLK_TCK")

STORM = """
import sys, time
from tests.kernel.test_service_live import synth
bdf, seconds, rate = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
print("ready", flush=True)
sent, t0 = 0, time.monotonic()
while (now := time.monotonic()) < t0 + seconds:
    n = 200 if not rate else min(1000, int((now - t0) * rate) - sent)
    if n <= 0:
        time.sleep(0.002)
        continue
    synth(bdf, "change", n)
    sent += n
print(sent, flush=True)
"""
"""`python -c STORM BDF SECONDS RATE`: synthetic change uevents for BDF, RATE/s (0: as fast as
the kernel takes the writes) for SECONDS after it prints `ready`; then prints how many."""


def _storm(bdf: str, seconds: float, rate: float) -> subprocess.Popen[str]:
    python = Path(vfiowatch_bin()).parent / "python"
    p = subprocess.Popen([str(python), "-c", STORM, bdf, str(seconds), str(rate)], cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def _sent(p: subprocess.Popen[str], seconds: float) -> int:
    out, _ = p.communicate(timeout=seconds + 60)
    return int(out.split()[-1])


def _status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB) and Threads from /proc/<pid>/status, fds from /proc/<pid>/fd."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, val = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            out[key] = int(val.split()[0])
    return out


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


class JournalScan:
    """Every file of a journal (live file and parts, as replay finds them) decoded by the codec."""

    def __init__(self, journal: Path, bdf: str) -> None:
        self.files: dict[tuple[int, int], int] = {}
        """Records per file, keyed by its header's (started_ns, part): a key rotation keeps."""
        self.bad = self.cut = self.records = self.changed = self.lost_inband = 0
        self.first_bad: list[str] = []
        paths = [p for _, p in sorted(_parts(journal).items())]
        for path in [*paths, journal] if journal.exists() else paths:
            recs, st = journal_records(path)
            hdr = recs[0] if recs and isinstance(recs[0], codec.Header) else None
            key = (hdr.started_ns, hdr.part) if hdr else (-1, len(self.files))
            self.files[key] = len(recs)
            self.records += len(recs)
            self.bad += st.bad_lines
            self.cut += st.truncated_tail
            if st.first_bad:
                self.first_bad.append(f"{path.name}: {st.first_bad}")
            self.changed += sum(1 for r in recs if isinstance(r, ev.DeviceChanged)
                                and r.bdf == bdf and r.synthetic)
            self.lost_inband += sum(r.count or 0 for r in recs if isinstance(r, ev.EventsLost))


def _lock_taken(journal: Path, old_pid: int, out: dict[str, Any], t0: float) -> None:
    """Poll the lock file until a pid other than the killed agent's is in it (the new agent
    has the flock: it writes its pid only once it holds it)."""
    lock = lock_path(journal)
    while time.monotonic() - t0 < 60:
        try:
            first = lock.read_text().split("\n")[0]
        except OSError:
            first = ""
        if first.isdigit() and int(first) != old_pid:
            out["pid"], out["s"] = int(first), time.monotonic() - t0
            return
        time.sleep(0.001)


def _start(tmp: Path, journal: Path, old_pid: int) -> tuple[Agent, float, float]:
    """An agent on `journal`: (agent, seconds until it held the lock, seconds until uevent up)."""
    got: dict[str, Any] = {}
    t0 = time.monotonic()
    poll = threading.Thread(target=_lock_taken, args=(journal, old_pid, got, t0))
    poll.start()
    a = Agent(tmp, "--sources", "uevent", "--journal-keep", "1000", journal=journal,
              metrics=False, sources=("uevent",), log_events=False)
    ready = time.monotonic() - t0
    poll.join()
    assert got.get("pid") == a.proc.pid, got
    return a, got["s"], ready


def _udevadm(out: Path) -> tuple[subprocess.Popen[bytes], Any]:
    """`udevadm monitor --kernel` (PCI uevents) writing to `out`, once it listens."""
    fh = open(out, "wb")  # noqa: SIM115 - closed by the caller
    p = subprocess.Popen(["udevadm", "monitor", "--kernel", "--subsystem-match=pci"],
                         stdout=fh, stderr=subprocess.DEVNULL)
    time.sleep(1)  # its socket is bound within milliseconds; its banner is buffered
    return p, fh


def _kernel_lines(out: Path, offset: int, bdf: str | None = None,
                  windows: list[tuple[float, float]] | None = None) -> int:
    """uevents `udevadm monitor` printed after byte `offset` (only `change`s of `bdf` if given;
    only those it received inside one of `windows`, CLOCK_MONOTONIC seconds, if given)."""
    with open(out, "rb") as fh:
        fh.seek(offset)
        lines = [ln for ln in fh.read().splitlines() if ln.startswith(b"KERNEL[")]
    if bdf is not None:
        lines = [ln for ln in lines if b" change " in ln and ln.endswith(f"/{bdf} (pci)".encode())]
    if windows is not None:
        at = [float(ln[7:ln.index(b"]")]) for ln in lines]
        return sum(1 for t in at if any(a <= t <= b for a, b in windows))
    return len(lines)


def _seqnum() -> int:
    """The kernel's uevent counter: uevents broadcast so far (this host's, every device)."""
    return int(Path("/sys/kernel/uevent_seqnum").read_text())


def _ms(xs: list[float]) -> str:
    xs = sorted(xs)
    return f"{xs[len(xs) // 2] * 1000:.0f} / {xs[-1] * 1000:.0f}"


@pytest.mark.bench
def test_kill_9_during_storms_loses_nothing_written(tmp_path: Path) -> None:
    """KILLS kill -9s of the agent in uevent storms on one journal: no bad line, at most one
    cut line per kill, every record of every earlier file still there after each later kill."""
    bdf = a_device()
    journal = tmp_path / "journal" / "journal.jsonl"
    rng = random.Random(os.environ.get("VFIOWATCH_BENCH_SEED", "18"))
    lock_s: list[float] = []
    ready_s: list[float] = []
    storm_s: list[float] = []
    sent = journaled = broadcast = 0
    windows: list[tuple[float, float]] = []
    lost = 0
    prev: JournalScan | None = None
    old_pid = -1
    agent: Agent | None = None
    storm: subprocess.Popen[str] | None = None
    mon, mon_fh = _udevadm(tmp_path / "udevadm.out")
    try:
        for _ in range(KILLS):
            agent, took_lock, ready = _start(tmp_path, journal, old_pid)
            lock_s.append(took_lock)
            ready_s.append(ready)
            seconds = rng.uniform(0.5, 2.0)
            seq0, t0 = _seqnum(), time.monotonic()
            storm = _storm(bdf, seconds + 0.5, 0)  # still storming when the kill lands
            time.sleep(seconds)
            old_pid = agent.proc.pid
            broadcast += _seqnum() - seq0
            windows.append((t0, time.monotonic()))
            agent.stop(signal.SIGKILL)
            sent += _sent(storm, seconds)
            storm_s.append(seconds)
            scan = JournalScan(journal, bdf)
            if prev is not None:
                for key, n in prev.files.items():
                    lost += max(0, n - scan.files.get(key, 0))
                journaled += scan.changed - prev.changed
            else:
                journaled += scan.changed
            prev = scan
    finally:
        if storm is not None and storm.poll() is None:
            storm.kill()
            storm.wait()
        if agent is not None and agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
        mon.terminate()
        mon.wait(10)
        mon_fh.close()
    mon_all = _kernel_lines(tmp_path / "udevadm.out", 0, bdf)  # every round, restarts too
    mon_seen = _kernel_lines(tmp_path / "udevadm.out", 0, bdf, windows)
    assert prev is not None
    print()
    print(table(
        f"kill -9 during uevent storms: {KILLS} rounds on one journal (`vfiowatch run --sources "
        f"uevent`; storms of {min(storm_s):.1f}-{max(storm_s):.1f} s as fast as the host takes "
        f"them, kill -9 in the storm)",
        ("what", "figure"),
        [("kills", f"{KILLS}"),
         ("journal files after the last kill", f"{len(prev.files)}"),
         ("records decoded (every file, codec)", f"{prev.records:,}"),
         ("bad lines (must be 0)", f"{prev.bad}"),
         ("cut last lines (at most 1 per kill)", f"{prev.cut}"),
         ("records lost that a kill had left written (must be 0)", f"{lost}"),
         ("uevents sent by the storms (some after the kills)", f"{sent:,}"),
         ("uevents broadcast while an agent ran (SEQNUM, storm to kill)", f"{broadcast:,}"),
         ("agent: storm records journaled / broadcast while it ran",
          f"{journaled:,} ({journaled / broadcast:.2f}x)"),
         ("agent: uevents counted lost in-band (SEQNUM gaps)", f"{prev.lost_inband:,}"),
         ("udevadm monitor --kernel: received in the same windows (it lags) / broadcast",
          f"{mon_seen:,} ({mon_seen / broadcast:.2f}x)"),
         ("udevadm monitor --kernel: seen in all, kills and restarts too / sent",
          f"{mon_all:,} ({mon_all / sent:.2f}x)"),
         ("restart: lock taken over, ms median / max", _ms(lock_s)),
         ("restart: uevent source up, ms median / max", _ms(ready_s))]))
    assert prev.bad == 0, prev.first_bad
    assert prev.cut <= KILLS
    assert lost == 0


@pytest.mark.bench
def test_soak_at_a_steady_uevent_rate_beside_udevadm_monitor(tmp_path: Path) -> None:
    """SOAK_S s at SOAK_RATE uevents/s: the agent's RSS, fds and threads at start and end, CPU
    per event, events lost and journal size, beside `udevadm monitor --kernel` on the same."""
    bdf = a_device()
    journal = tmp_path / "journal" / "journal.jsonl"
    mon_out = tmp_path / "udevadm.out"
    mon, mon_fh = _udevadm(mon_out)
    agent = Agent(tmp_path, "--sources", "uevent", journal=journal, sources=("uevent",),
                  log_events=False)
    storm: subprocess.Popen[str] | None = None
    try:
        time.sleep(2)  # start-up (inventory, first snapshot) is not the soak
        events0 = agent.metric("vfiowatch_source_events_total").get("source=uevent", 0.0)
        start = {"agent": _status(agent.proc.pid), "udevadm": _status(mon.pid)}
        cpu0 = {"agent": _cpu_s(agent.proc.pid), "udevadm": _cpu_s(mon.pid)}
        mon_at = mon_out.stat().st_size
        storm = _storm(bdf, SOAK_S, SOAK_RATE)
        sent = _sent(storm, SOAK_S)
        time.sleep(1)  # the last uevents in flight
        end = {"agent": _status(agent.proc.pid), "udevadm": _status(mon.pid)}
        cpu1 = {"agent": _cpu_s(agent.proc.pid), "udevadm": _cpu_s(mon.pid)}
        events1 = agent.metric("vfiowatch_source_events_total").get("source=uevent", 0.0)
        lost = sum(agent.metric("vfiowatch_source_events_lost_total").values())
        rc, _ = agent.stop()
        assert rc == 0
        stopped = agent.wait_for(lambda d: d["event"] == "agent_stopped", timeout=1)
    finally:
        if storm is not None and storm.poll() is None:
            storm.kill()
            storm.wait()
        if agent.proc.poll() is None:
            agent.stop(signal.SIGKILL)
        mon.terminate()
        mon.wait(10)
        mon_fh.close()
    seen = {"agent": events1 - events0,
            "udevadm": float(_kernel_lines(mon_out, mon_at))}
    scan = JournalScan(journal, bdf)
    size = sum(p.stat().st_size for p in journal.parent.iterdir())

    def mb(kb: int) -> str:
        return f"{kb / 1024:.1f}"

    rows = []
    for who in ("agent", "udevadm"):
        s, e = start[who], end[who]
        per_ev = (cpu1[who] - cpu0[who]) / max(seen[who], 1) * 1e6
        rows.append((who, f"{seen[who]:,.0f}", f"{seen[who] / sent:.2f}", mb(s["VmRSS"]),
                     mb(e["VmRSS"]), mb(e["VmHWM"]), f"{s['fds']} / {e['fds']}",
                     f"{s['Threads']} / {e['Threads']}", f"{cpu1[who] - cpu0[who]:.1f}",
                     f"{per_ev:.0f}"))
    a_cpu = (cpu1["agent"] - cpu0["agent"]) / max(seen["agent"], 1)
    u_cpu = (cpu1["udevadm"] - cpu0["udevadm"]) / max(seen["udevadm"], 1)
    print()
    print(table(
        f"soak: {SOAK_S:.0f} s at {SOAK_RATE:.0f} synthetic uevents/s ({sent:,} sent; both "
        f"receive every uevent of this host in the window, not only the storm's)",
        ("process", "uevents seen", "x sent", "RSS MB start", "RSS MB end", "HWM MB",
         "fds start/end", "threads start/end", "CPU s", "CPU us/event"), rows))
    print(f"agent / udevadm monitor: CPU per event {a_cpu / u_cpu:.1f}x, RSS at end "
          f"{end['agent']['VmRSS'] / end['udevadm']['VmRSS']:.1f}x; agent RSS "
          f"{(end['agent']['VmRSS'] - start['agent']['VmRSS']) / 1024:+.1f} MB over the soak; "
          f"lost by its counters {lost:.0f} (source) + {stopped['dropped']} (queue); "
          f"{stopped['journal_records']:,} journal records, {size / 2**20:.1f} MB "
          f"({size / max(scan.records, 1):.0f} B/record), {scan.bad} bad lines")
    assert scan.bad == 0 and scan.cut == 0, scan.first_bad
