"""Benchmarks of the live kernel sources beside the tools operators use (printed, never asserted).

* uevent burst: 50,000 synthetic uevents at full kernel speed while the agent's uevent source
  (defaults) and `udevadm monitor --kernel` listen: received/sent for each.
* uevent throughput: datagrams/s through decode + driver tracking + Correlator.feed, offline on
  one core, with the full rule set and with the model alone; and end to end through the
  Pipeline during a live burst.
* link storm: 300 veth pairs created and deleted in one namespace while the agent's links
  source, `ip -ts monitor link` and a raw rtnetlink socket listen: counts and the agent's CPU.
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.core.correlator import Correlator
from diag.runtime import Pipeline
from diag.sources import Emit, SourceContext, sysfs
from diag.sources.links import LinksSource
from diag.sources.uevent.decode import DeviceTracker, decode_uevent
from diag.sources.uevent.source import UeventSource
from diag.testing import Collector, wait_for
from tests.kernel.vw_kernel_helpers import (
    RawCounter,
    build_storm_writer,
    cleanup_netns,
    new_uuid,
    prefix,
    sh,
    storm,
    storm_device,
)

ROWS: list[tuple[str, str, str]] = []


def _row(what: str, tool: str, value: str) -> None:
    ROWS.append((what, tool, value))


def _print_table() -> None:
    w1 = max(len(r[0]) for r in ROWS)
    w2 = max(len(r[1]) for r in ROWS)
    print()
    print(f"{'benchmark':<{w1}}  {'listener':<{w2}}  result")
    print(f"{'-' * w1}  {'-' * w2}  {'-' * 30}")
    for a, b, c in ROWS:
        print(f"{a:<{w1}}  {b:<{w2}}  {c}")
    ROWS.clear()


pytestmark = pytest.mark.usefixtures("require_root")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def test_uevent_burst_agent_beside_udevadm(tmp_path: Path) -> None:
    """50,000 synthetic uevents: what the agent and `udevadm monitor --kernel` each received."""
    exe = build_storm_writer(tmp_path)
    bdf = storm_device()
    tag = new_uuid()
    n = 50_000
    out = tmp_path / "udevadm.txt"
    with open(out, "w") as fh:
        # Exactly what an operator runs (one line per event); it cannot tell our burst's UUID,
        # so it counts every bind of the device in the run (nothing else binds it here).
        udev = subprocess.Popen(["udevadm", "monitor", "--kernel", "--subsystem-match=pci"],
                                stdout=fh, stderr=subprocess.DEVNULL)
    src = UeventSource(SourceContext())
    ours = 0
    needle = tag.encode()

    def counting(data: bytes, ts: int, **kw: str) -> ev.Event | None:
        nonlocal ours
        if needle in data:
            ours += 1
        return decode_uevent(data, ts, **kw)

    src.decode = counting
    got = Collector()
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(got, stop), daemon=True)
    t.start()
    try:
        assert wait_for(lambda: bool(got.snapshot()))
        time.sleep(0.5)  # udevadm has opened its socket
        cpu0, t0 = _cpu(), time.monotonic()
        sent, secs = storm(exe, bdf, n, f"bind {tag}")
        wait_for(lambda: ours >= sent, timeout=30)
        drained = time.monotonic() - t0
        cpu = _cpu() - cpu0
        time.sleep(1.0)
    finally:
        stop.set()
        t.join(5)
        udev.terminate()
        udev.wait(5)
    devpath = os.path.realpath(f"/sys/bus/pci/devices/{bdf}").removeprefix("/sys")
    seen_udev = sum(1 for ln in out.read_text(errors="replace").splitlines()
                    if " bind " in ln and ln.rstrip().endswith(f"{devpath} (pci)"))
    lost = [e for e in got.snapshot() if isinstance(e, ev.EventsLost)]
    _row("uevent burst 50,000", "writer (C)", f"sent {sent} in {secs:.3f} s ({sent / secs:,.0f}/s)")
    _row("uevent burst 50,000", "vfiowatch uevent", f"received/sent {ours}/{sent} = {ours / sent:.3f}; "
         f"drained in {drained:.2f} s, {cpu:.2f} CPU s; loss events {len(lost)}")
    _row("uevent burst 50,000", "udevadm monitor --kernel", f"received/sent {seen_udev}/{sent} = {seen_udev / sent:.3f}")
    _print_table()
    assert sent == n


def _datagrams(bdf: str, driver: str, n: int) -> list[bytes]:
    base = (f"bind@/devices/pci0000:00/{bdf}\0ACTION=bind\0DEVPATH=/devices/pci0000:00/{bdf}\0"
            f"SUBSYSTEM=pci\0DRIVER={driver}\0PCI_CLASS=20000\0PCI_ID=1AF4:1000\0"
            f"PCI_SUBSYS_ID=1AF4:0001\0PCI_SLOT_NAME={bdf}\0"
            f"MODALIAS=pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00\0"
            f"SYNTH_UUID=5c0ffee0-0000-4000-8000-000000000001\0")
    return [(base + f"SEQNUM={i}\0").encode() for i in range(n)]


def _rate(n: int, fn: Callable[[], None]) -> str:
    """`fn` timed by wall clock and by this thread's CPU time (the neighbours' load shows in
    the first only)."""
    w0, c0 = time.perf_counter(), time.thread_time()
    fn()
    wall, cpu = time.perf_counter() - w0, time.thread_time() - c0
    return f"{n / wall:,.0f}/s wall, {n / max(cpu, 1e-9):,.0f}/CPU s"


def test_uevent_throughput_decode_track_and_core() -> None:
    """Sustained datagrams/s through decode, tracking and Correlator.feed (one thread)."""
    paths = HostPaths()
    devices = sysfs.scan(paths)
    bdf = storm_device()
    driver = sysfs.read_driver(paths, bdf) or "virtio-pci"
    n = 100_000
    data = _datagrams(bdf, driver, n)
    inv = ev.InventoryObserved(ts_ns=0, source="uevent", devices=tuple(devices))

    def decode() -> None:
        for i, d in enumerate(data):
            decode_uevent(d, i)

    def track() -> None:
        tr = DeviceTracker(devices)
        for i, d in enumerate(data):
            tr.apply(decode_uevent(d, i))  # type: ignore[arg-type]

    def core_with(rules: list[object] | None) -> Callable[[], None]:
        def run() -> None:
            core = Correlator(rules=rules)  # type: ignore[arg-type]
            core.feed(inv)
            tr = DeviceTracker(devices)
            for i, d in enumerate(data, 1):
                core.feed(tr.apply(decode_uevent(d, i)))  # type: ignore[arg-type]
        return run

    _row("uevent decode (1 thread)", "vfiowatch", _rate(n, decode))
    _row("uevent decode + track", "vfiowatch", _rate(n, track))
    _row("uevent -> Correlator.feed, all rules", "vfiowatch", _rate(n, core_with(None)))
    _row("uevent -> Correlator.feed, model only", "vfiowatch", _rate(n, core_with([])))
    _print_table()


class _Preloaded(UeventSource):
    """The real decode loop fed from memory instead of the socket (the kernel is not measured)."""

    def __init__(self, datagrams: list[bytes]) -> None:
        super().__init__(SourceContext())
        self.datagrams = datagrams

    def run(self, emit: Emit, stop: threading.Event) -> None:
        from collections import deque

        devices = sysfs.scan(self.paths)
        self.tracker.reset(devices)
        emit(ev.InventoryObserved(ts_ns=time.time_ns(), source=self.name, devices=tuple(devices)))

        class Reader:
            q: deque[tuple[int, bytes | None]] = deque()
            wake = threading.Event()
            space = threading.Event()
            drained = True
            error = None

        now = time.time_ns()
        Reader.q.extend((now + i, d) for i, d in enumerate(self.datagrams))
        # What run()'s StopRelay does: wake the decoder when the pipeline stops.
        threading.Thread(target=lambda: (stop.wait(), Reader.wake.set()), daemon=True).start()
        self._loop(emit, stop, Reader)  # type: ignore[arg-type]


def _sustained(datagrams: list[bytes], rules: list[object] | None) -> tuple[float, float, int]:
    """(events/s at the core, CPU seconds, dropped) for one run of the preloaded pipeline."""
    n = len(datagrams)
    src = _Preloaded(datagrams)
    p = Pipeline([src], correlator=Correlator(rules=rules))  # type: ignore[arg-type]
    done = threading.Event()
    seen = {"count": 0, "first": 0.0, "last": 0.0}

    def on_item(item: ev.Event) -> None:
        if isinstance(item, ev.DeviceBound):
            seen["count"] += 1
            if seen["count"] == 1:
                seen["first"] = time.monotonic()
            if seen["count"] == n:
                seen["last"] = time.monotonic()
                done.set()

    p.on_item(on_item)
    cpu0 = _cpu()
    p.start()
    done.wait(120)
    cpu = _cpu() - cpu0
    p.stop()
    span = max(seen["last"] - seen["first"], 1e-9)
    return (n / span if done.is_set() else 0.0), cpu, p.stats.dropped


def test_uevent_sustained_through_the_whole_agent_pipeline() -> None:
    """100,000 datagrams through the source loop, queue, merge window and Correlator (threads as
    in `vfiowatch run`), from memory: the agent's sustained events/s, kernel excluded."""
    paths = HostPaths()
    bdf = storm_device()
    driver = sysfs.read_driver(paths, bdf) or "virtio-pci"
    data = _datagrams(bdf, driver, 100_000)
    rows = []
    for label, rules in (("all rules", None), ("model only", [])):
        rate, cpu, dropped = _sustained(data, rules)
        # Per CPU second too: on a shared 2-core machine the wall rate depends on the neighbours.
        rows.append(f"{label}: {rate:,.0f}/s wall, {len(data) / max(cpu, 1e-9):,.0f}/CPU s "
                    f"(dropped {dropped})")
    _row("uevent sustained -> core (pipeline)", "vfiowatch run", "; ".join(rows) + " (target >= 100,000/s)")
    _print_table()


def test_uevent_end_to_end_through_the_pipeline(tmp_path: Path) -> None:
    """A live 50,000 burst through source, queue, merge window and core: events/s at the core."""
    exe = build_storm_writer(tmp_path)
    bdf = storm_device()
    tag = new_uuid()
    src = UeventSource(SourceContext())
    p = Pipeline([src])
    count = 0
    first = last = 0.0

    def on_item(item: ev.Event) -> None:
        nonlocal count, first, last
        if isinstance(item, ev.DeviceBound) and item.synthetic and item.bdf == bdf:
            count += 1
            last = time.monotonic()
            if count == 1:
                first = last

    p.on_item(on_item)
    p.start()
    try:
        assert wait_for(lambda: p.stats.released > 0)
        cpu0 = _cpu()
        sent, _ = storm(exe, bdf, 50_000, f"bind {tag}")
        wait_for(lambda: count >= sent, timeout=60)
        cpu = _cpu() - cpu0
    finally:
        p.stop()
    span = max(last - first, 1e-9)
    _row("uevent burst -> core (pipeline)", "vfiowatch run", f"{count}/{sent} at the core, "
         f"{count / span:,.0f} events/s, {cpu:.2f} CPU s, queue max {p.stats.max_queue_depth}, "
         f"dropped {p.stats.dropped}")
    _print_table()


def test_link_storm_agent_beside_ip_monitor_and_a_raw_socket() -> None:
    """300 veth pairs created and deleted in one namespace: counts from the agent, `ip -ts
    monitor link` and a raw rtnetlink socket, and the agent's CPU seconds."""
    pfx = prefix()
    ns = f"{pfx}m"
    with cleanup_netns(pfx):
        sh(f"ip netns add {ns}")
        src = LinksSource(SourceContext())
        got = Collector()
        stop = threading.Event()
        t = threading.Thread(target=src.run, args=(got, stop), daemon=True)
        t.start()
        mon_out = Path(f"/tmp/{pfx}-ipmon.txt")
        cleanup: list[Callable[[], object]] = []
        try:
            assert wait_for(lambda: any(isinstance(e, ev.LinkChanged) and e.netns.name == ns
                                        for e in got.snapshot()), timeout=3)
            mark = len(got.snapshot())
            raw = RawCounter(ns)
            cleanup.append(raw.close)
            with open(mon_out, "w") as fh:
                mon = subprocess.Popen(["ip", "-n", ns, "-ts", "monitor", "link"], stdout=fh)
            cleanup.append(lambda: (mon.kill(), mon.wait(5)) if mon.poll() is None else None)
            time.sleep(0.3)
            cpu0, t0 = _cpu(), time.monotonic()
            add = "".join(f"link add {pfx}a{i} type veth peer name {pfx}b{i}\n" for i in range(300))
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input=add, text=True, check=True)
            dele = "".join(f"link del {pfx}a{i}\n" for i in range(300))
            subprocess.run(["ip", "-n", ns, "-batch", "-"], input=dele, text=True, check=True)

            def agent() -> tuple[int, int]:
                evs = [e for e in got.snapshot()[mark:] if getattr(e, "netns", None) is not None
                       and e.netns.name == ns]  # type: ignore[attr-defined]
                return (sum(isinstance(e, ev.LinkChanged) for e in evs),
                        sum(isinstance(e, ev.LinkRemoved) for e in evs))

            wait_for(lambda: agent()[1] >= 600, timeout=30)
            wall = time.monotonic() - t0
            cpu = _cpu() - cpu0
            time.sleep(0.5)
            new, dl, enobufs = raw.stop()
            mon.terminate()
            mon.wait(5)
        finally:
            stop.set()
            t.join(5)
            for fn in cleanup:
                fn()
        text = mon_out.read_text(errors="replace")
        mon_out.unlink()
        lines = [ln for ln in text.splitlines() if ln.startswith("[")]
        mon_del = sum("Deleted" in ln for ln in lines)
        a_new, a_del = agent()
    _row("link storm 300 veth pairs", "raw rtnetlink socket", f"NEWLINK {new}, DELLINK {dl} (ENOBUFS {enobufs})")
    _row("link storm 300 veth pairs", "vfiowatch links", f"NEWLINK {a_new}, DELLINK {a_del}; "
         f"{cpu:.2f} CPU s over {wall:.2f} s; ENOBUFS {src.stats.enobufs}")
    _row("link storm 300 veth pairs", "ip -ts monitor link", f"NEWLINK {len(lines) - mon_del}, DELLINK {mon_del}")
    _print_table()
