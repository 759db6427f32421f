"""Scale benchmark probe: network namespaces 10 -> 100 -> 1,000, run inside a private mount namespace.

Run by tests/bench/test_scale_bench.py as
`unshare --mount --propagation private sh -c 'mount -t tmpfs tmpfs /run/netns; python -m
tests.bench.scale_probe OUT N...'`: the named namespaces it makes live under that private
/run/netns only (no other process on the machine sees them, and no process holds them), so
they all die with the probe's mount namespace, whatever happens. Prints nothing; writes one
JSON object per size to OUT.

Per size: how long `ip netns add` + a veth pair inside took, the links source's own namespace
scan beside `lsns -t net` and `ip netns list`, then a real `LinksSource.run` thread: time to the
first complete view (every namespace open, every dump done), its idle CPU, the latency of a new
namespace to its NetnsAdded, its CPU per link event in a burst, the process's threads; then a
whole `vfiowatch run` without eBPF: RSS, threads, idle CPU.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import SourceContext
from diag.sources.links import LinksSource
from diag.sources.netns import scan_netns

PREFIX = f"vws{os.getpid()}-"
IDLE_S = 5.0


def _ip_batch(lines: list[str], *args: str) -> float:
    t = time.perf_counter()
    subprocess.run(["ip", *args, "-batch", "-"], input="\n".join(lines) + "\n", text=True, check=True)
    return time.perf_counter() - t


def _grow(have: int, want: int) -> float:
    """Namespaces have..want-1, each with a veth pair inside it; seconds taken."""
    names = [f"{PREFIX}{i}" for i in range(have, want)]
    t = _ip_batch([f"netns add {n}" for n in names])
    t += _ip_batch([f"link add a{i} netns {PREFIX}{i} type veth peer name b{i} netns {PREFIX}{i}"
                    for i in range(have, want)])
    return t


def _tool(argv: list[str], n: int = 3) -> float:
    t = time.perf_counter()
    for _ in range(n):
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return (time.perf_counter() - t) / n


def _thread_cpu(th: threading.Thread) -> float:
    assert th.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(th.ident))


def _ticks(pid: int) -> float:
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def _status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def _links(n: int) -> dict[str, Any]:
    """The links source at `n` namespaces (+ the host's), through its real run thread."""
    got: list[tuple[float, ev.Event]] = []
    src = LinksSource(SourceContext(paths=HostPaths()))
    stop = threading.Event()
    th = threading.Thread(target=src.run, args=(lambda e: got.append((time.monotonic(), e)), stop), daemon=True)
    out: dict[str, Any] = {}
    t0 = time.monotonic()
    th.start()
    try:
        end = t0 + 300
        while time.monotonic() < end:
            with src._lock:
                nss = list(src._ns.values())
            mine = [s for s in nss if (s.ref.name or "").startswith(PREFIX)]
            if len(mine) >= n and not any(s.dumping for s in nss):
                break
            time.sleep(0.005)
        out["first_view_s"] = time.monotonic() - t0
        out["watched"] = len(nss)
        out["threads"] = threading.active_count()
        c0 = _thread_cpu(th)
        time.sleep(IDLE_S)
        out["idle_cpu_pct"] = (_thread_cpu(th) - c0) / IDLE_S * 100
        lat = []
        for k in range(5):
            name = f"{PREFIX}new{k}"
            m, t = len(got), time.monotonic()
            subprocess.run(["ip", "netns", "add", name], check=True)
            while not any(isinstance(e, ev.NetnsAdded) and e.netns.name == name for _, e in got[m:]):
                assert time.monotonic() - t < 30
                time.sleep(0.002)
            lat.append(next(ts for ts, e in got[m:] if isinstance(e, ev.NetnsAdded) and e.netns.name == name) - t)
        out["discovery_ms"] = statistics.median(lat) * 1e3
        out["discovery_max_ms"] = max(lat) * 1e3
        time.sleep(1)
        # Per-event cost: 400 link changes in one namespace (a0 up/down: a0 and its peer b0 change).
        ns0 = f"{PREFIX}0"
        m = len(got)
        c0 = _thread_cpu(th)
        _ip_batch([f"link set a0 {'up' if j % 2 == 0 else 'down'}" for j in range(400)], "-n", ns0)
        time.sleep(1.0)
        changes = sum(1 for _, e in got[m:] if isinstance(e, ev.LinkChanged))
        out["burst_events"] = changes
        out["us_per_event"] = (_thread_cpu(th) - c0) / max(changes, 1) * 1e6
    finally:
        stop.set()
        th.join(30)
    return out


def _agent(n: int, tmp: Path) -> dict[str, Any]:
    """A whole `vfiowatch run` without eBPF at `n` namespaces: RSS, threads, idle CPU."""
    exe = Path(sys.executable).parent / "vfiowatch"
    log = tmp / f"agent-{n}.log"
    (tmp / f"j{n}").mkdir(exist_ok=True)  # `run` refuses a journal directory that does not exist
    with open(log, "wb") as fh:
        p = subprocess.Popen([str(exe), "run", "--disable-source", "ebpf", "--journal", str(tmp / f"j{n}" / "j.jsonl")],
                             stdout=fh, stderr=subprocess.STDOUT)
    try:
        end = time.monotonic() + 120
        while b"agent_started" not in log.read_bytes():
            assert p.poll() is None and time.monotonic() < end, log.read_text()[-2000:]
            time.sleep(0.1)
        time.sleep(3 + n / 200)  # every namespace opened and dumped
        c0 = _ticks(p.pid)
        time.sleep(IDLE_S * 2)
        return {"rss_mb": _status(p.pid, "VmRSS") / 1024, "threads": _status(p.pid, "Threads"),
                "idle_cpu_pct": (_ticks(p.pid) - c0) / (IDLE_S * 2) * 100}
    finally:
        p.terminate()
        p.wait(30)


def main() -> None:
    out_path = Path(sys.argv[1])
    sizes = [int(a) for a in sys.argv[2:]]
    tmp = Path(tempfile.mkdtemp(prefix="vw-scale-"))
    have = 0
    with open(out_path, "w") as out:
        for n in sizes:
            row: dict[str, Any] = {"n": n, "create_s": _grow(have, n)}
            have = n
            t = time.perf_counter()
            for _ in range(5):
                found = scan_netns(HostPaths(), {}, full=True)
            row["scan_ms"] = (time.perf_counter() - t) / 5 * 1e3
            row["scan_found"] = len(found)
            row["lsns_ms"] = _tool(["lsns", "-t", "net"]) * 1e3
            row["ip_netns_list_ms"] = _tool(["ip", "netns", "list"]) * 1e3
            row["links"] = _links(n)
            for k in range(5):
                subprocess.run(["ip", "netns", "del", f"{PREFIX}new{k}"], check=False)
            row["agent"] = _agent(n, tmp)
            out.write(json.dumps(row) + "\n")
            out.flush()
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


if __name__ == "__main__":
    main()
