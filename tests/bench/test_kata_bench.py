"""Benchmarks of the kata source's polling beside the tools an operator would use (printed, never asserted).

* process scan (shims + QEMU from /proc) per round vs `ps -eo pid,comm,args`;
* VFIO holder scan (readlink of every /proc/<pid>/fd/*) vs `find /proc/*/fd -lname '/dev/vfio/*'`;
* configuration round: unchanged (stat fingerprint only) and a full re-discovery;
* the loop's CPU over 10 s at its default intervals (0.5 s sandboxes, 1 s config, 2 s holders);
* latency from a sandbox state dir appearing / a drop-in being written to the event, through
  the real `KataSource.run` thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import SourceContext, proc
from diag.sources.kata import discovery, sandboxes
from diag.sources.kata.source import KataSource, KataWatcher
from tests.conftest import bind_mounts

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "kata"
ROWS: list[tuple[str, str, str]] = []


def _per_call(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n


def _tool(argv: list[str], n: int = 5) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return (time.perf_counter() - t) / n


@contextlib.contextmanager
def _root(tmp: Path) -> Iterator[Path]:
    r = tmp / "root"
    shutil.copytree(FIX / "go-physical", r, symlinks=True)
    (r / "proc").mkdir()  # the real /proc, bind-mounted: a link to it would lead outside --root
    with bind_mounts((Path("/proc"), r / "proc")):
        yield r


def test_kata_poll_cost_and_latency(tmp_path: Path) -> None:
    """Prints the table; checks only that every measurement ran."""
    with _root(tmp_path) as root:
        _measure(root)


def _measure(root: Path) -> None:
    paths = HostPaths.at(root)
    npids = sum(1 for _ in proc.iter_pids(HostPaths()))
    nfds = sum(len(os.listdir(f"/proc/{p}/fd")) for p in proc.iter_pids(HostPaths()) if os.path.isdir(f"/proc/{p}/fd"))

    scan = _per_call(lambda: sandboxes.scan_processes(paths), 50)
    cache = sandboxes.ProcCache()
    sandboxes.scan_processes(paths, cache)
    cached = _per_call(lambda: sandboxes.scan_processes(paths, cache), 50)
    ps = _tool(["ps", "-eo", "pid,comm,args"])
    ROWS.append((f"process scan, full ({npids} pids)", f"{scan * 1e3:.2f} ms", f"ps -eo pid,comm,args: {ps * 1e3:.2f} ms ({ps / scan:.1f}x)"))
    ROWS.append(("process scan, cached (9 of 10 rounds)", f"{cached * 1e3:.2f} ms", f"ps: {ps / cached:.1f}x"))

    holders = _per_call(lambda: sandboxes.scan_vfio_holders(paths), 10)
    sleeper = subprocess.Popen(["sleep", "60"])  # a VMM-sized fd table is a few dozen; sleep has 3
    few = _per_call(lambda: sandboxes.scan_vfio_holders(paths, [sleeper.pid]), 500)
    sleeper.kill()
    sleeper.wait()
    find = _tool(["sh", "-c", "find /proc/[0-9]*/fd -lname '/dev/vfio/*' 2>/dev/null"], 3)
    ROWS.append((f"VFIO holder scan ({nfds} fds)", f"{holders * 1e3:.2f} ms",
                 f"find /proc/*/fd -lname /dev/vfio/*: {find * 1e3:.2f} ms ({find / holders:.1f}x)"))
    ROWS.append(("VFIO holder scan, partial (1 pid, 3 fds)", f"{few * 1e6:.0f} µs",
                 f"full scan ≈ {holders / max(nfds, 1) * 1e6:.1f} µs per fd; partial: shims + VMMs + holders"))

    w = KataWatcher(paths, {"journal": False})
    w.step(time.time_ns(), force=True)
    fp = _per_call(w.config_fingerprint, 200)
    full = _per_call(lambda: discovery.discover(paths), 50)
    state = _per_call(lambda: sandboxes.state_signature(paths), 200)
    ROWS.append(("config round, unchanged (stat fingerprint)", f"{fp * 1e6:.0f} µs", f"{len(w.discovery.watch)} paths"))
    ROWS.append(("config round, changed (full discovery)", f"{full * 1e3:.2f} ms", "containerd + Kata TOML + drop-ins"))
    ROWS.append(("state dirs fingerprint (1 sandbox)", f"{state * 1e6:.0f} µs", "/run/vc, /run/kata"))

    # CPU of the loop at its default intervals, as KataSource.run drives it; then with a
    # /dev/vfio/<group> node present, which turns the holder scans on.
    for label in ("no /dev/vfio node", "with /dev/vfio/42"):
        if label.startswith("with"):
            (root / "dev/vfio").mkdir(parents=True, exist_ok=True)
            (root / "dev/vfio/42").write_text("")
        w = KataWatcher(paths, {"journal": False})
        cpu0, t0 = time.process_time(), time.monotonic()
        first = True
        while time.monotonic() - t0 < 10:
            w.step(time.time_ns(), force=first)
            first = False
            w.step_logs(time.time_ns(), timeout=0.1)
        cpu = time.process_time() - cpu0
        ROWS.append((f"loop CPU over 10 s, {label}", f"{cpu / 10 * 100:.2f} % of a core", f"{cpu * 1e3:.0f} ms CPU"))

    # Latency through the real source thread.
    got: list[tuple[float, ev.Event]] = []
    src = KataSource(SourceContext(paths=paths, options={"journal": False}))
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(lambda e: got.append((time.monotonic(), e)), stop), daemon=True)
    th.start()
    time.sleep(1.5)
    start_lat, cfg_lat = [], []
    for i in range(8):
        sid = f"{i:02d}" + "e" * 62
        t = time.monotonic()
        (root / f"run/vc/sbs/{sid}").mkdir(parents=True)
        while not any(e.kind == "sandbox_started" and e.sandbox_id == sid for _, e in got):
            time.sleep(0.005)
        start_lat.append(next(ts for ts, e in got if e.kind == "sandbox_started" and e.sandbox_id == sid) - t)
        dd = root / "opt/kata/share/defaults/kata-containers/runtimes/qemu/config.d"
        dd.mkdir(exist_ok=True)
        n = len(got)
        t = time.monotonic()
        (dd / "50-bench.toml").write_text(f'[hypervisor.qemu]\npcie_root_port = {i + 3}\n')
        while not any(e.kind == "kata_config_loaded" for _, e in got[n:]):
            time.sleep(0.005)
        cfg_lat.append(next(ts for ts, e in got[n:] if e.kind == "kata_config_loaded") - t)
    stop.set()
    th.join(5)
    ROWS.append(("sandbox start -> SandboxStarted", f"median {statistics.median(start_lat) * 1e3:.0f} ms",
                 f"max {max(start_lat) * 1e3:.0f} ms (interval 0.5 s)"))
    ROWS.append(("drop-in written -> KataConfigLoaded", f"median {statistics.median(cfg_lat) * 1e3:.0f} ms",
                 f"max {max(cfg_lat) * 1e3:.0f} ms (interval 1 s)"))

    print()
    width = max(len(r[0]) for r in ROWS)
    for what, ours, other in ROWS:
        print(f"{what:<{width}}  {ours:>22}  {other}")
    assert len(ROWS) == 11
