"""Scale benchmarks: a big SR-IOV host (issue 19 item 6), printed as curves, never asserted.

* sysfs: a tree of 4 PFs x 3, 25, 128 and 250 VFs (every VF with its driver, IOMMU group and
  netdev, made from the recorded sriov-lab PF and VF): time to the first complete PCI
  snapshot (`sysfs.scan`, confined under --root) and per device, beside `lspci -D -k` on this
  host per device; then the core's cost per event (a VF moved between drivers 20,000 times)
  with that inventory loaded: it should not grow with the number of VFs.
* network namespaces: 10, 100 and 1,000, each with a veth pair, made by tests/bench/scale_probe.py
  inside a private mount namespace (removed with it): the source's namespace scan beside
  `lsns -t net` and `ip netns list`, the links source's first complete view, idle CPU, new
  namespace -> NetnsAdded latency, CPU per link event, threads; and a whole `vfiowatch run`
  without eBPF: RSS (target <= 100 MB at 1,000), threads (no thread per namespace), idle CPU.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.sources import sysfs
from diag.testing import bound, unbound
from tests.bench.benchtable import table
from tests.conftest import FIXTURES, REPO
from tests.fixtures.bigsysfs import big_tree

pytestmark = pytest.mark.usefixtures("require_root")

LAB = FIXTURES / "sysfs" / "sriov-lab"


def _core_cost(devices: tuple[ev.PciDevice, ...], bdf: str, n: int = 20_000) -> float:
    """CPU seconds per event: `bdf` moved igbvf -> vfio-pci -> igbvf, over and over."""
    core = Correlator()
    t0 = 1_000_000_000_000
    core.feed(ev.InventoryObserved(ts_ns=t0, source="uevent", devices=devices))
    stream: list[ev.Event] = []
    ts = t0
    for i in range(n // 2):
        ts += 50_000_000
        stream.append(unbound(bdf, ts))
        ts += 50_000_000
        stream.append(bound(bdf, "vfio-pci" if i % 2 == 0 else "igbvf", ts))
    c = time.process_time()
    for e in stream:
        core.feed(e)
    return (time.process_time() - c) / len(stream)


def test_scale_sysfs_tree_snapshot_and_core_cost(tmp_path: Path) -> None:
    """Prints the sysfs curve; checks only that each tree scanned to the devices it holds."""
    t = time.perf_counter()
    for _ in range(5):
        subprocess.run(["lspci", "-D", "-k"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    lspci = (time.perf_counter() - t) / 5
    host_devs = len(sysfs.scan(HostPaths(), names=False))
    base = len(sysfs.scan(HostPaths.at(LAB), names=False))
    rows = []
    costs = []
    for vfs in (3, 25, 128, 250):
        root = tmp_path / f"t{vfs}"
        added = big_tree(root, 4, vfs)
        paths = HostPaths.at(root)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            devices = sysfs.scan(paths, names=False)
            times.append(time.perf_counter() - t)
        assert len(devices) == base + added
        snap = statistics.median(times)
        vf = next(d.bdf for d in devices if d.role == "vf" and d.bdf.startswith("0000:21:"))
        cost = statistics.median(_core_cost(tuple(devices), vf) for _ in range(3))
        costs.append(cost)
        rows.append((f"4 PF x {vfs} VF", f"{len(devices)}", f"{snap * 1e3:.1f} ms",
                     f"{snap / len(devices) * 1e6:.0f} µs", f"{lspci / max(host_devs, 1) / (snap / len(devices)):.1f}x",
                     f"{cost * 1e6:.1f} µs", f"{cost / costs[0]:.2f}"))
        shutil.rmtree(root)
    print()
    print(table(f"Scale, sysfs: first complete PCI snapshot (confined, names off, median of 5) and core cost per "
                f"event; lspci -D -k on this host: {lspci * 1e3:.1f} ms for {host_devs} devices",
                ("tree", "devices", "snapshot", "per device", "lspci per device / ours", "core per event",
                 "vs smallest"), rows))


def test_scale_network_namespaces(tmp_path: Path) -> None:
    """Prints the namespace curve; checks only that each size was seen whole."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip (util-linux, iproute2)")
    out = tmp_path / "scale.jsonl"
    sizes = os.environ.get("VFIOWATCH_BENCH_NETNS", "10 100 1000").split()
    res = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f'mount -t tmpfs tmpfs /run/netns\nexec {sys.executable} -m tests.bench.scale_probe "$0" "$@"',
         str(out), *sizes],
        cwd=REPO, capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stderr[-3000:]
    got = [json.loads(line) for line in out.read_text().splitlines()]
    rows = []
    first = got[0]
    for r in got:
        lk, ag = r["links"], r["agent"]
        rows.append((f"{r['n']}", f"{r['create_s']:.1f} s",
                     f"{r['scan_ms']:.1f} ms", f"{r['lsns_ms']:.0f} / {r['ip_netns_list_ms']:.0f} ms",
                     f"{lk['first_view_s'] * 1e3:.0f} ms", f"{lk['idle_cpu_pct']:.3f} %",
                     f"{lk['discovery_ms']:.0f} ms (max {lk['discovery_max_ms']:.0f})",
                     f"{lk['us_per_event']:.0f} µs ({lk['us_per_event'] / first['links']['us_per_event']:.2f})",
                     f"{lk['threads']}",
                     f"{ag['rss_mb']:.0f} MB", f"{ag['threads']}", f"{ag['idle_cpu_pct']:.2f} %"))
        assert lk["watched"] >= r["n"]
    print()
    print(table("Scale, network namespaces (each with a veth pair): the links source's thread, then a whole "
                "`vfiowatch run` without eBPF (targets: per-event cost and idle CPU flat, RSS <= 100 MB at "
                "1,000, no thread per namespace)",
                ("netns", "made in", "full scan (names + /proc)", "lsns -t net / ip netns list", "first view",
                 "links idle CPU", "new netns -> event", "CPU per link event (vs 10)", "threads",
                 "agent RSS", "agent threads", "agent idle CPU"), rows))
