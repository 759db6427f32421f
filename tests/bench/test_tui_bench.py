"""Dashboard benchmarks: time to first frame, and key-to-frame latency under a 10,000 events/s
stream. Prints tables; never asserts a time.

- First frame: (a) in-process, the app over the demo journal, from constructing the app to the
  first painted frame with data; (b) a real `vfiowatch tui` (live, this host) and `vfiowatch
  demo` in a tmux terminal, from spawning the process to the device list on screen (what a
  person waits for), side by side with `lspci -k` (the inventory an operator types instead),
  with the CPU the process had used by then (its threads share one interpreter lock: on a
  quiet machine the wall time is about that CPU time; under load the CPU time still compares).
  Target (issue 19): <= 0.5 s.
- Key-to-frame: the real runtime (Pipeline: bounded queue, merge window, core thread, LiveFeed)
  with a source emitting 10,000 events/s; keys are posted to the app and the time until the
  frame showing their effect is painted (`call_after_refresh`) is measured, for a view switch
  (`f`), a cursor move in the device list (`down`, `up`) and opening a device (`enter`) and back
  (`escape`): 100 presses in all, p99 over them. Target (issue 19): p99 <= 50 ms. Beside the
  wall time, the UI thread's CPU from each press to its frame (median, p99, max): on a shared
  machine the wall time is mostly waiting for a CPU, the CPU time is what the press costs. The
  app runs as `vfiowatch tui` runs it (own_gc: the collector tuned after the first frame). Frames under
  the storm: each snapshot the app renders, from taking it to the frame painted with it
  (update, layout, paint), and the interval between painted frames; p99 of both. Also shown:
  snapshots published vs frames rendered (updates are coalesced) and the event log's length
  (bounded).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from textual import events
from textual.widgets import DataTable

from diag import events as ev
from diag.commands.demo import demo_journal_path
from diag.runtime import Pipeline, PipelineOptions
from diag.runtime.playback import ReplayFeed
from diag.sources import Availability
from diag.tui.app import VfioWatchApp
from diag.tui.screens import DeviceScreen
from diag.tui.widgets import EventLog
from tests.conftest import REPO, vfiowatch_bin

pytestmark = pytest.mark.bench

CHARS = {"f": "f", "enter": "\r", "escape": "\x1b"}
RATE = 10_000
TARGET_FIRST_S = 0.5
TARGET_KEY_MS = 50.0
PRESSES = {"f": 20, "down/up": 30, "enter": 25, "escape": 25}
"""100 presses in all (issue 19: p99 over 100 presses)."""


def _table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    cells = [tuple(str(c) for c in r) for r in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    for i, r in enumerate(cells):
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
        if i == 0:
            print("  " + "  ".join("-" * w for w in widths))


# --------------------------------------------------------------------------------------------
# time to first frame
# --------------------------------------------------------------------------------------------


def _first_frame_in_process() -> float:
    async def main() -> float:
        t0 = time.monotonic()
        feed = ReplayFeed.open(demo_journal_path(), autoplay=False, start_at=1 << 30)
        app = VfioWatchApp(feed, hostname="bench", kernel="k", mode="DEMO")
        async with app.run_test(size=(120, 36)) as pilot:
            while not app.first_frame_at:
                await pilot.pause(0.005)
            return app.first_frame_at - t0

    return asyncio.run(main())


def _cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) the process has used, its ended threads included."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tmux_until(command: str, ready: Callable[[str], bool], timeout: float = 20.0
                ) -> tuple[float, float | None] | None:
    """Seconds from starting `command` in a fresh 120x36 tmux terminal until `ready(screen)`,
    and the CPU seconds the command had used by then (None once it has exited: `lspci`)."""
    name = f"vfiowatch-bench-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    # A server of its own (-L): the default server exits when its last session is killed, and
    # a new-session racing that exit fails ("server exited unexpectedly"; seen in make bench).
    tmux = ["tmux", "-L", name]
    pidfile = Path(tempfile.gettempdir()) / f"{name}.pid"
    t0 = time.monotonic()
    subprocess.run([*tmux, "new-session", "-d", "-s", name, "-x", "120", "-y", "36",
                    f"cd {REPO} && TERM=xterm-256color sh -c 'echo $$ > {pidfile}; exec {command}'; "
                    "sleep 30"], check=True, timeout=10)
    try:
        while time.monotonic() - t0 < timeout:
            screen = subprocess.run([*tmux, "capture-pane", "-p", "-t", name],
                                    capture_output=True, text=True, timeout=10).stdout
            if ready(screen):
                wall = time.monotonic() - t0
                return wall, _cpu_s(int(pidfile.read_text()))
            time.sleep(0.01)
        return None
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, timeout=10)
        # kill-server leaves the server's socket file behind
        (Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / name).unlink(
            missing_ok=True)
        pidfile.unlink(missing_ok=True)


def test_time_to_first_frame() -> None:
    """Time to the first frame with data, in-process and as a person sees it in a terminal;
    beside the wall time, the CPU the process had used by then (what the machine's load does
    not change: the process's own threads share one interpreter lock)."""
    runs = 5
    rows: list[tuple[object, ...]] = []
    inproc = sorted(_first_frame_in_process() for _ in range(runs))
    rows.append(("app over the demo journal (in-process, headless)", f"{statistics.median(inproc):.3f}",
                 f"{inproc[-1]:.3f}", "-", f"{TARGET_FIRST_S}"))
    if shutil.which("tmux") and os.geteuid() == 0:
        bdfs = sorted(os.listdir("/sys/bus/pci/devices"))
        exe = vfiowatch_bin()

        def measure(cmd: str, ready: Callable[[str], bool]) -> tuple[str, str, str]:
            got = [t for t in (_tmux_until(cmd, ready) for _ in range(runs)) if t is not None]
            if not got:
                return ("timeout", "timeout", "-")
            walls = sorted(w for w, _ in got)
            cpus = [c for _, c in got if c is not None]
            return (f"{statistics.median(walls):.3f}", f"{walls[-1]:.3f}",
                    f"{statistics.median(cpus):.2f}" if cpus else "-")

        live = measure(f"{exe} tui", lambda s: all(b in s for b in bdfs) and "uevent ✓" in s)
        rows.append(("`vfiowatch tui` live in tmux: every PCI device on screen", *live,
                     f"{TARGET_FIRST_S}"))
        demo = measure(f"{exe} demo --at-end", lambda s: "0000:01:10.2" in s and "Findings" in s)
        rows.append(("`vfiowatch demo` in tmux: devices on screen", *demo, f"{TARGET_FIRST_S}"))
        if shutil.which("lspci"):
            ref = measure("lspci -k", lambda s: "Kernel driver in use" in s)
            rows.append(("`lspci -k` in tmux (reference: the inventory alone)", *ref, "-"))
    else:
        rows.append(("(tmux rows need tmux and root)", "-", "-", "-", "-"))
    rows.append((f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)", "", "", "", ""))
    _table(f"Time to first frame, seconds ({runs} runs each; target <= {TARGET_FIRST_S} s)",
           ("what", "median", "max", "CPU s by then (median)", "target"), rows)


# --------------------------------------------------------------------------------------------
# key-to-frame latency under 10,000 events/s
# --------------------------------------------------------------------------------------------


class RateSource:
    """Emits `rate` events/s (link flaps on 64 interfaces, synthetic binds of 8 VFs)."""

    name: ClassVar[str] = "bench"

    def __init__(self, rate: int = RATE) -> None:
        self.rate = rate
        self.emitted = 0

    def probe(self) -> Availability:
        return Availability(ok=True)

    def run(self, emit: Callable[[ev.Event], None], stop: threading.Event) -> None:
        host = ev.NetnsRef(inode=4026531840, is_host=True)
        start = time.monotonic()
        i = 0
        while not stop.is_set():
            due = int((time.monotonic() - start) * self.rate)
            now = time.time_ns()
            while i < due:
                if i % 10 == 0:
                    emit(ev.DeviceBound(ts_ns=now, source="uevent", synthetic=True,
                                        bdf=f"0000:01:10.{i % 8}", driver="igbvf"))
                else:
                    emit(ev.LinkChanged(ts_ns=now, source="links", ifindex=100 + i % 64,
                                        ifname=f"veth{i % 64}", netns=host,
                                        operstate="UP" if i % 2 else "DOWN"))
                i += 1
            self.emitted = i
            time.sleep(0.005)


def _inventory() -> ev.InventoryObserved:
    devs = [ev.PciDevice(bdf="0000:01:00.0", role="pf", driver="igb", vfs=tuple(f"0000:01:10.{i}" for i in range(8)))]
    devs += [ev.PciDevice(bdf=f"0000:01:10.{i}", role="vf", pf="0000:01:00.0", vf_index=i, driver="igbvf")
             for i in range(8)]
    return ev.InventoryObserved(ts_ns=time.time_ns(), source="sysfs", devices=tuple(devs))


def _pct(xs: list[float], q: float) -> float:
    """The q-quantile by nearest rank (q=0.99 of 100 values: the second slowest)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * len(xs)) - 1))]


def _key_run(rate: int, own_gc: bool = True) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Drive the keys while `rate` events/s stream through the runtime; latencies in ms, and
    the frames painted meanwhile (`frame_ms`: snapshot taken -> painted; `gap_ms`: between
    painted frames)."""
    source = RateSource(rate)
    pipe = Pipeline([source], options=PipelineOptions())
    pipe.emit(_inventory())
    feed = pipe.live_feed()
    # own_gc: as `vfiowatch tui` runs it (the app tunes the process's garbage collector).
    app = VfioWatchApp(feed, hostname="bench", kernel="k", own_gc=own_gc)
    lat: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    info: dict[str, object] = {}
    frame_ms: list[float] = []
    frame_cpu_ms: list[float] = []
    painted_at: list[float] = []
    measuring = [False]
    render_state = app._render_state

    def timed_render(state: object) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        render_state(state)  # type: ignore[arg-type]
        if measuring[0]:
            def painted() -> None:
                t1 = time.perf_counter()
                frame_ms.append((t1 - t0) * 1000)
                # CPU of the UI thread meanwhile: what the frame costs, whatever the machine's
                # load (wall time on a shared 2-CPU VM includes waiting for a CPU).
                frame_cpu_ms.append((time.thread_time() - c0) * 1000)
                painted_at.append(t1)
            app.call_after_refresh(painted)

    app._render_state = timed_render  # type: ignore[method-assign]

    async def main() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause(2.0)  # the stream reaches its pace
            log = app.query_one(EventLog)
            loop = asyncio.get_running_loop()

            async def key(name: str, changed: Callable[[], bool], label: str = "") -> None:
                painted = loop.create_future()
                t0, c0 = time.perf_counter(), time.thread_time()
                app.post_message(events.Key(name, CHARS.get(name)))
                while not changed():
                    if time.perf_counter() - t0 > 5:
                        raise AssertionError(f"key {name!r} had no effect within 5 s")
                    # A short sleep, not sleep(0): spinning would hold the GIL (and a CPU)
                    # against the runtime's threads and count as the press's CPU.
                    await asyncio.sleep(0.0005)
                app.call_after_refresh(
                    lambda: painted.done() or painted.set_result((time.perf_counter(), time.thread_time())))
                t1, c1 = await painted
                lat.setdefault(label or name, []).append((t1 - t0) * 1000)
                # The UI thread's CPU from the press to its frame (the app runs on this thread):
                # the press's own work plus any snapshot frame that came first.
                cpu.setdefault(label or name, []).append((c1 - c0) * 1000)
                await asyncio.sleep(0.05)  # a person does not type at 1 kHz

            frames0, snaps0, emitted0, t_start = app.frames, feed.delivered, source.emitted, time.monotonic()
            measuring[0] = True
            for _ in range(PRESSES["f"]):  # an even number: the full dashboard again at the end
                shown = app.query_one("#devices").display
                await key("f", lambda s=shown: app.query_one("#devices").display != s)
            table = app.query_one("#devices", DataTable)
            table.focus()
            await asyncio.sleep(0.05)
            moves = PRESSES["down/up"]
            for i in range(moves):
                move = "down" if (i // 4) % 2 == 0 else "up"  # 4 down, 4 up, ... (9 rows)
                row = table.cursor_row
                await key(move, lambda r=row: table.cursor_row != r, "down/up")
            for _ in range(PRESSES["enter"]):
                await key("enter", lambda: isinstance(app.screen, DeviceScreen))
                await key("escape", lambda: not isinstance(app.screen, DeviceScreen))
            measuring[0] = False
            took = time.monotonic() - t_start
            info.update(
                rate=(source.emitted - emitted0) / took,
                snapshots=feed.delivered - snaps0,
                frames=app.frames - frames0,
                log_len=len(log.shown),
                lost=app.state.lost_total,
                seconds=took,
                frame_ms=list(frame_ms),
                frame_cpu_ms=list(frame_cpu_ms),
                gap_ms=[(b - a) * 1000 for a, b in itertools.pairwise(painted_at)],
                press_cpu_ms=cpu,
            )

    asyncio.run(main())
    return lat, info


def test_key_to_frame_under_10k_events_per_second() -> None:
    """Keys and frames stay prompt while 10,000 events/s stream through the real runtime: 100
    presses idle, then 100 under the storm, side by side."""
    idle, idle_info = _key_run(0)
    lat, info = _key_run(RATE)
    rows = []
    for name, xs in lat.items():
        base = idle[name]
        rows.append((name, len(xs), f"{statistics.median(base):.1f}", f"{statistics.median(xs):.1f}",
                     f"{_pct(xs, 0.95):.1f}", f"{_pct(xs, 0.99):.1f}", f"{max(xs):.1f}", ""))
    every = [x for xs in lat.values() for x in xs]
    every_idle = [x for xs in idle.values() for x in xs]
    rows.append(("all presses", len(every), f"{statistics.median(every_idle):.1f}",
                 f"{statistics.median(every):.1f}", f"{_pct(every, 0.95):.1f}",
                 f"{_pct(every, 0.99):.1f}", f"{max(every):.1f}", f"p99 <= {TARGET_KEY_MS:.0f}"))
    _table(f"Key-to-frame latency, ms: idle vs while the runtime streams {RATE:,} events/s",
           ("key", "n", "idle median", "median", "p95", "p99", "max", "target"), rows)
    cpu_rows = []
    press_cpu, idle_cpu = info["press_cpu_ms"], idle_info["press_cpu_ms"]
    assert isinstance(press_cpu, dict) and isinstance(idle_cpu, dict)
    for name, xs in [*press_cpu.items(), ("all presses", [x for v in press_cpu.values() for x in v])]:
        base = idle_cpu.get(name) or [x for v in idle_cpu.values() for x in v]
        cpu_rows.append((name, len(xs), f"{statistics.median(base):.1f}", f"{_pct(base, 0.99):.1f}",
                         f"{max(base):.1f}", f"{statistics.median(xs):.1f}", f"{_pct(xs, 0.99):.1f}",
                         f"{max(xs):.1f}"))
    _table("UI-thread CPU from a press to its frame, ms (what the press costs whatever the load; "
           "under the storm it includes a snapshot frame rendered first)",
           ("key", "n", "idle median", "idle p99", "idle max", "median", "p99", "max"), cpu_rows)
    frames = []
    for what, key in (("snapshot taken -> frame painted", "frame_ms"),
                      ("  of which CPU of the UI thread", "frame_cpu_ms"),
                      ("interval between painted frames", "gap_ms")):
        xs, base = list(info[key]), list(idle_info[key])  # type: ignore[call-overload]
        if not xs:
            continue
        frames.append((what, len(xs), f"{statistics.median(base):.1f}" if base else "-",
                       f"{statistics.median(xs):.1f}", f"{_pct(xs, 0.99):.1f}", f"{max(xs):.1f}"))
    _table(f"Frames while the keys are pressed, ms (idle vs {RATE:,} events/s; the app renders "
           "at most every 50 ms)", ("measure", "n (storm)", "idle median", "median", "p99", "max"),
           frames)
    _table("Stream during the key test", ("measure", "value"), [
        ("load average (1 min) at the end", f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"),
        ("events/s emitted (achieved)", f"{info['rate']:,.0f}"),
        ("snapshots published by LiveFeed", info["snapshots"]),
        ("frames rendered (coalesced)", info["frames"]),
        ("event log length (bounded at 2000)", info["log_len"]),
        ("events lost (queue)", info["lost"]),
        ("seconds", f"{info['seconds']:.1f}"),
    ])
