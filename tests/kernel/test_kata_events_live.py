"""The kata source in event mode, live: process events and inotify on a --root, and the fallback.

The root is a copy of the `go-physical` Kata tree with the real /proc bind-mounted into it
(a link to it would lead outside the root). The shim stand-in is tests/kernel/kata/actor.c
installed as `containerd-shim-kata-v2` (real exe, comm and argv). Assertions are on the events,
their order and content; how fast they come is the benchmark's business.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources import SourceContext
from diag.sources.kata.changes import ChangeFeed
from diag.sources.kata.source import KataSource, KataWatcher
from diag.sources.procevents import ProcEventSocket, decode_proc_events, exit_filter, run_filter
from tests.conftest import FIXTURES, REPO, bind_mounts

pytestmark = pytest.mark.usefixtures("require_root")

HERE = Path(__file__).resolve().parent
GO_SID = "3acfa8826f59dcc9bd876fd171a9abd9536433429c0028b1562c9370740b258f"
RS_SID = "7d2e0c4b9a8f1e6d5c4b3a2f1e0d9c8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d"
NEW_GO = "1" * 64
NEW_RS = "2" * 64
SHIM_SID = "5f1c2e8a9b7d4c3e2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f"
QEMU_DIR = "opt/kata/share/defaults/kata-containers/runtimes/qemu"


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    """go-physical + the real /proc + the shim stand-in at kata-deploy's path."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler (gcc is in deploy/packages.txt)")
    r = tmp_path / "root"
    shutil.copytree(FIXTURES / "kata" / "go-physical", r, symlinks=True)
    (r / "opt/kata/bin").mkdir(parents=True)
    subprocess.run([cc, "-O2", "-o", str(r / "opt/kata/bin/containerd-shim-kata-v2"),
                    str(HERE / "kata" / "actor.c")], check=True)
    (r / "proc").mkdir()
    (r / "sys/bus/pci/devices").mkdir(parents=True)  # a host without PCI devices: check runs
    with bind_mounts((Path("/proc"), r / "proc")):
        yield r


class Running:
    """A KataSource.run thread and what it emitted."""

    def __init__(self, root: Path, options: dict[str, object] | None = None) -> None:
        self.got: list[ev.Event] = []
        self.src = KataSource(SourceContext(paths=HostPaths.at(root),
                                            options={"journal": False, **(options or {})}))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.src.run, args=(self.got.append, self.stop), daemon=True)
        self.thread.start()

    def until(self, pred: Callable[[ev.Event], bool], since: int = 0, timeout: float = 10) -> list[ev.Event]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            new = self.got[since:]
            if any(pred(e) for e in new):
                time.sleep(0.05)  # let a batch's other events land
                return self.got[since:]
            time.sleep(0.005)
        raise AssertionError(f"not seen in {timeout}s; got {[e.kind for e in self.got[since:]]}")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def running(root: Path) -> Iterator[Running]:
    r = Running(root)
    try:
        yield r
    finally:
        r.close()


def _started(sid: str) -> Callable[[ev.Event], bool]:
    return lambda e: isinstance(e, ev.SandboxStarted) and e.sandbox_id == sid


def test_process_events_report_an_exec_and_an_exit() -> None:
    """A subscribed ProcEventSocket receives the exec and then the exit of a process we start."""
    sock = ProcEventSocket()
    sock.subscribe()
    try:
        p = subprocess.Popen(["/bin/sleep", "0.05"])
        p.wait()
        seen: list[tuple[str, int]] = []
        end = time.monotonic() + 5
        while time.monotonic() < end and ("exit", p.pid) not in seen:
            evs, lost = sock.read()
            assert not lost
            seen += [(e.kind, e.tgid) for e in evs if e.tgid == p.pid and e.is_process]
            time.sleep(0.01)
        assert seen == [("exec", p.pid), ("exit", p.pid)]
        assert sock.filtered
    finally:
        sock.close()


def _datagrams(sock: ProcEventSocket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.sock.recv(8192))
        except BlockingIOError:
            return out


def test_the_kernel_applies_the_exit_filter_as_run_filter_decides() -> None:
    """Two subscribed sockets, one filtered to the exit of process A: after the filter is
    attached it receives exactly the datagrams of the unfiltered socket that run_filter passes
    (the execs, A's exit; not B's exit nor a thread's exit), so the pure filter is the kernel's."""
    raw, filt = ProcEventSocket(), ProcEventSocket()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        raw.subscribe()
        filt.subscribe()
        a, b = (subprocess.Popen(["/bin/sleep", "30"]) for _ in range(2))
        procs += [a, b]
        filt.watch_exits({a.pid})
        t0 = time.monotonic_ns()
        c = subprocess.Popen([sys.executable, "-c", "import threading; t = threading.Thread(target=int); "
                              "t.start(); t.join()"])
        procs.append(c)
        c.wait()
        for p in (a, b):
            p.kill()
            p.wait()
        ours = {a.pid, b.pid, c.pid}
        seen_raw: list[bytes] = []
        seen_filt: list[bytes] = []
        end = time.monotonic() + 5
        while time.monotonic() < end:
            seen_raw += _datagrams(raw)
            seen_filt += _datagrams(filt)
            kinds = {(e.kind, e.tgid) for d in seen_raw for e in decode_proc_events(d) if e.is_process}
            if {("exit", a.pid), ("exit", b.pid), ("exit", c.pid)} <= kinds:
                break
            time.sleep(0.01)
        time.sleep(0.1)
        seen_filt += _datagrams(filt)

        def mine(data: list[bytes]) -> set[tuple[str, int, int, int]]:
            return {(e.kind, e.pid, e.tgid, e.ts_ns) for d in data for e in decode_proc_events(d)
                    if e.tgid in ours and e.ts_ns > t0}

        prog = exit_filter({a.pid})
        passed = mine([d for d in seen_raw if run_filter(prog, d)])
        assert mine(seen_filt) == passed
        brief = {(k, pid, tgid) for k, pid, tgid, _ in passed}
        assert {("exec", c.pid, c.pid), ("exit", a.pid, a.pid)} <= brief
        assert not {("exit", b.pid, b.pid), ("exit", c.pid, c.pid)} & brief
        threads = {(k, pid) for k, pid, tgid, _ in mine(seen_raw) if pid != tgid}
        assert threads and not {x for x in brief if x[1] != x[2]}  # a thread's exit came, unfiltered only
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        raw.close()
        filt.close()


def test_new_state_files_and_a_drop_in_are_reported_by_inotify(root: Path, running: Running) -> None:
    """Event mode: a Go sandbox's persist.json, a runtime-rs state.json, a config.d drop-in and
    a removed sandbox directory each bring their event, in the order they happened."""
    first = running.until(_started(GO_SID))
    state = first[0]
    assert isinstance(state, ev.SourceStateChanged) and state.mode == "events+no-logs" and state.reason == ""

    # Go: the directory first, then persist.json written in it (Kata's order).
    n = len(running.got)
    (root / f"run/vc/sbs/{NEW_GO}").mkdir()
    text = (root / f"run/vc/sbs/{GO_SID}/persist.json").read_text().replace(GO_SID, NEW_GO)
    (root / f"run/vc/sbs/{NEW_GO}/persist.json").write_text(text)
    got = running.until(lambda e: _started(NEW_GO)(e) and e.state_file is not None, n)
    mine = [e for e in got if _started(NEW_GO)(e)]
    assert mine[-1].state_file == f"/run/vc/sbs/{NEW_GO}/persist.json" and mine[-1].runtime == "go"
    assert all(e.state_file is None for e in mine[:-1])  # the bare directory, if seen alone
    assert [v.bdf for v in mine[-1].vfs] == ["0000:01:10.0"]

    # runtime-rs: /run/kata did not exist: it was watched through /run until it appeared.
    n = len(running.got)
    (root / f"run/kata/{NEW_RS}").mkdir(parents=True)
    rs = (FIXTURES / "kata/rs-state/run/kata" / RS_SID / "state.json").read_text().replace(RS_SID, NEW_RS)
    (root / f"run/kata/{NEW_RS}/state.json").write_text(rs)
    got = running.until(lambda e: _started(NEW_RS)(e) and e.state_file is not None, n)
    last = [e for e in got if _started(NEW_RS)(e)][-1]
    assert (last.state_file, last.runtime) == (f"/run/kata/{NEW_RS}/state.json", "rs")

    # A drop-in beside the handler's file: one reload with the new value and the drop-in named
    # (config.d made first: a directory's creation is read at once, so a file written in the
    # same instant could be read still empty, an honest but transient view).
    dd = root / QEMU_DIR / "config.d"
    dd.mkdir()
    time.sleep(0.2)
    n = len(running.got)
    (dd / "50-ports.toml").write_text('[hypervisor.qemu]\npcie_root_port = 5\n')
    got = running.until(lambda e: isinstance(e, ev.KataConfigLoaded), n)
    loaded = [e for e in got if isinstance(e, ev.KataConfigLoaded)]
    assert len(loaded) == 1 and loaded[0].changed
    assert loaded[0].config.dropins == (f"/{QEMU_DIR}/config.d/50-ports.toml",)
    assert loaded[0].config.pcie_root_port == 5

    # The Go sandbox's directory removed: it stopped.
    n = len(running.got)
    shutil.rmtree(root / f"run/vc/sbs/{NEW_GO}")
    got = running.until(lambda e: isinstance(e, ev.SandboxStopped), n)
    assert [e.sandbox_id for e in got if isinstance(e, ev.SandboxStopped)] == [NEW_GO]


def _shim(root: Path, sid: str) -> list[str]:
    return [str(root / "opt/kata/bin/containerd-shim-kata-v2"), "-namespace", "k8s.io", "-address",
            "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", sid]


@contextlib.contextmanager
def _seeded(root: Path) -> Iterator[tuple[KataWatcher, ChangeFeed]]:
    """A Kata watcher on `root` with its change feed in events mode (the process-events socket
    open), seeded; closed after."""
    w = KataWatcher(HostPaths.at(root), {"journal": False})
    try:
        w.start_feed()
        feed = w.feed
        assert feed is not None and feed.mode == "events" and feed.proc is not None
        w.seed(time.time_ns())
        yield w, feed
    finally:
        w.close()


def _start_actor(argv: list[str], tmp: Path) -> subprocess.Popen[bytes]:
    ready = tmp / f"ready-{time.monotonic_ns()}"
    p = subprocess.Popen(argv, env=dict(os.environ, ACTOR_READY=str(ready)), stdin=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while not (ready.exists() and ready.read_text().strip()):
        assert p.poll() is None and time.monotonic() < end
        time.sleep(0.01)
    return p


def _end(p: subprocess.Popen[bytes]) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        p.wait(5)


def test_a_shim_exec_and_exit_are_seen_by_process_events(root: Path, running: Running, tmp_path: Path) -> None:
    """No state file (a creation in progress): the shim's exec alone brings SandboxStarted with
    its pid, its exit brings SandboxStopped; nothing listed /proc in between (event mode)."""
    running.until(_started(GO_SID))
    assert running.got[0].mode == "events+no-logs"
    scans = running.src.watcher.proc_cache.scans
    n = len(running.got)
    shim = _start_actor(_shim(root, SHIM_SID), tmp_path)
    try:
        got = running.until(_started(SHIM_SID), n)
        (s,) = [e for e in got if _started(SHIM_SID)(e)]
        assert (s.shim_pid, s.state_file, s.handler) == (shim.pid, None, "kata-qemu")
        n = len(running.got)
    finally:
        _end(shim)
    got = running.until(lambda e: isinstance(e, ev.SandboxStopped), n)
    assert [e.sandbox_id for e in got if isinstance(e, ev.SandboxStopped)] == [SHIM_SID]
    assert running.src.watcher.proc_cache.scans == scans  # no /proc listing: events only


def test_a_shim_that_exits_before_the_filter_takes_it_in_is_seen_to_stop(root: Path, tmp_path: Path) -> None:
    """A shim whose exec is read but which exits (a zombie its parent has not reaped) before
    the exit filter takes its pid in: the old filter dropped its exit, yet the same round
    brings SandboxStarted then SandboxStopped, and a later round nothing more."""
    with _seeded(root) as (w, feed):
        shim = _start_actor(_shim(root, SHIM_SID), tmp_path)
        attach = feed.proc.watch_exits

        def exit_first(pids: object) -> None:
            if isinstance(pids, set) and shim.pid in pids:
                os.kill(shim.pid, signal.SIGKILL)  # not waited for: a zombie, /proc/<pid> stays
                end = time.monotonic() + 5
                while Path(f"/proc/{shim.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    assert time.monotonic() < end
                    time.sleep(0.005)
            attach(pids)  # type: ignore[arg-type]

        feed.proc.watch_exits = exit_first  # type: ignore[method-assign]
        time.sleep(0.1)  # the exec's datagram is queued
        got = w.feed_round(time.time_ns(), time.monotonic())
        mine = [type(e).__name__ for e in got if getattr(e, "sandbox_id", None) == SHIM_SID]
        assert mine == ["SandboxStarted", "SandboxStopped"]
        shim.wait(5)
        time.sleep(0.1)
        again = w.feed_round(time.time_ns(), time.monotonic() + 1)
        assert not [e for e in again if getattr(e, "sandbox_id", None) == SHIM_SID]


def test_a_shim_round_reads_no_configuration_again_and_a_later_config_dir_is_still_watched(
        root: Path, tmp_path: Path) -> None:
    """A shim's exec and exit (no KATA_CONF_FILE, the runtime its handler is configured with)
    bring SandboxStarted and SandboxStopped without a rediscovery and without reading the
    configuration's directories again; a config.d made afterwards is still watched (its
    parent's event drops what was kept) and a drop-in written in it is loaded."""
    with _seeded(root) as (w, feed):
        disc, reads = w.discovery, feed.config_wants_read
        shim = _start_actor(_shim(root, SHIM_SID), tmp_path)
        try:
            got = w.feed_round(time.time_ns(), time.monotonic())
            assert [e for e in got if _started(SHIM_SID)(e)]
        finally:
            _end(shim)
        time.sleep(0.1)  # the exit's datagram is queued
        got = w.feed_round(time.time_ns(), time.monotonic())
        assert [e.sandbox_id for e in got if isinstance(e, ev.SandboxStopped)] == [SHIM_SID]
        assert w.discovery is disc and feed.config_wants_read == reads

        dd = root / QEMU_DIR / "config.d"
        dd.mkdir()
        time.sleep(0.05)
        w.feed_round(time.time_ns(), time.monotonic())
        assert feed.config_wants_read == reads + 1
        assert f"/{QEMU_DIR}/config.d" in feed.watches.watched()
        (dd / "50-ports.toml").write_text('[hypervisor.qemu]\npcie_root_port = 5\n')
        time.sleep(0.05)
        got = w.feed_round(time.time_ns(), time.monotonic())
        loaded = [e for e in got if isinstance(e, ev.KataConfigLoaded)]
        assert len(loaded) == 1 and loaded[0].config.pcie_root_port == 5


FALLBACK = """
import json, sys, threading, time
from diag.common.paths import HostPaths
from diag.sources import SourceContext
from diag.sources.kata.source import KataSource, KataWatcher
root = sys.argv[1]
src = KataSource(SourceContext(paths=HostPaths.at(root), options={"journal": False}))
stop = threading.Event()
def emit(e):
    print(json.dumps({"kind": e.kind, "mode": getattr(e, "mode", ""), "reason": getattr(e, "reason", ""),
                      "sid": getattr(e, "sandbox_id", ""), "pid": getattr(e, "shim_pid", None),
                      "dropins": list(getattr(getattr(e, "config", None), "dropins", ()))}), flush=True)
th = threading.Thread(target=src.run, args=(emit, stop), daemon=True)
th.start()
sys.stdin.readline()
stop.set()
th.join(5)
"""


def test_without_process_events_processes_are_polled_and_the_state_says_why(root: Path, tmp_path: Path) -> None:
    """In a new pid namespace the kernel ignores the subscription: the source says
    `inotify+poll` and why, still finds a new shim (by polling /proc) and a drop-in (inotify)."""
    probe = subprocess.run(["unshare", "--pid", "--fork", sys.executable, "-c",
                            "from diag.sources.procevents import ProcEventSocket as S; S().subscribe()"],
                           cwd=REPO, capture_output=True, text=True, timeout=30)
    assert probe.returncode != 0 and "ProcEventsUnavailable" in probe.stderr
    assert "did not acknowledge" in probe.stderr
    p = subprocess.Popen(["unshare", "--pid", "--fork", sys.executable, "-c", FALLBACK, str(root)],
                         cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: list[dict[str, object]] = []
    out: queue.Queue[str] = queue.Queue()
    stdout = p.stdout
    assert stdout is not None

    def pump() -> None:
        """Lines onto `out`, "" at the end: read_until waits with a timeout, never on readline."""
        for text in stdout:
            out.put(text)
        out.put("")

    threading.Thread(target=pump, daemon=True).start()

    def read_until(pred: Callable[[dict[str, object]], bool], timeout: float = 15) -> dict[str, object]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            # a source that says nothing more must fail the test, not hang it on readline
            try:
                line = out.get(timeout=max(0.0, end - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            lines.append(json.loads(line))
            if pred(lines[-1]):
                return lines[-1]
        raise AssertionError(lines)

    shim = None
    try:
        state = read_until(lambda d: d["kind"] == "source_state_changed")
        assert state["mode"] == "inotify+poll+no-logs"
        assert "polling processes: no process events" in str(state["reason"])
        assert "host's pid and user namespaces" in str(state["reason"])
        read_until(lambda d: d["sid"] == GO_SID)
        shim = _start_actor(_shim(root, SHIM_SID), tmp_path)
        got = read_until(lambda d: d["sid"] == SHIM_SID)
        assert (got["kind"], got["pid"]) == ("sandbox_started", shim.pid)
        dd = root / QEMU_DIR / "config.d"
        dd.mkdir()
        (dd / "50-ports.toml").write_text('[hypervisor.qemu]\npcie_root_port = 5\n')
        got = read_until(lambda d: d["kind"] == "kata_config_loaded")
        assert got["dropins"] == [f"/{QEMU_DIR}/config.d/50-ports.toml"]
    finally:
        if shim is not None:
            _end(shim)
        assert p.stdin is not None
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)


def test_check_says_when_processes_would_be_polled(root: Path) -> None:
    """`vfiowatch check`: `kata events` is ok with process events, a warning (`!`: degraded) naming the
    reason and the fix inside a pid namespace where the kernel ignores the subscription."""
    from tests.conftest import vfiowatch_bin

    here = subprocess.run([vfiowatch_bin(), "--root", str(root), "check"], capture_output=True, text=True,
                          timeout=60)
    (line,) = [ln for ln in here.stdout.splitlines() if "kata events" in ln]
    assert line.startswith("✓") and "nothing is polled" in line
    there = subprocess.run(["unshare", "--pid", "--fork", vfiowatch_bin(), "--root", str(root), "check"],
                           capture_output=True, text=True, timeout=60)
    out = there.stdout.splitlines()
    i = next(i for i, ln in enumerate(out) if "kata events" in ln)
    assert out[i].startswith("! kata events") and "polling processes: no process events" in out[i]
    assert "hostPID" in out[i + 1]


def test_a_host_that_execs_all_the_time_wakes_the_source_a_few_times_a_second(running: Running) -> None:
    """200 execs in about 1.5 s (the host's churn, no Kata process): the source reads the
    process-events socket about every 0.25 s once its budget (one second's worth of reads) is
    spent, not once per exec, and none of those reads is a round of the source."""
    running.until(_started(GO_SID))
    feed = running.src.watcher.feed
    w0, p0, r0 = feed.stats["wakeups"], feed.stats["proc_events"], feed.stats["rounds"]
    t0 = time.monotonic()
    subprocess.run(["sh", "-c", "for i in $(seq 200); do /bin/true; done"], check=True)
    time.sleep(max(0.0, 1.5 - (time.monotonic() - t0)))
    took = time.monotonic() - t0
    assert feed.stats["proc_events"] - p0 >= 200  # every exec was read
    assert feed.stats["wakeups"] - w0 <= took / 0.25 + 4 + 3
    assert feed.stats["rounds"] - r0 <= 3


def test_a_shim_exec_after_other_programs_execs_is_read_at_once(root: Path, tmp_path: Path) -> None:
    """Other programs' execs read (a host that execs now and then) do not make the
    process-events socket rest: it is still polled, and a shim's exec that follows is read
    and reported in the next round, without waiting out a rest."""
    with _seeded(root) as (w, feed):
        fd = feed.proc.fileno()
        subprocess.run(["sh", "-c", "/bin/true; /bin/true"], check=True)
        time.sleep(0.05)
        mono = time.monotonic()
        w.feed_round(time.time_ns(), mono, {fd})
        assert feed.stats["proc_events"] >= 3
        assert fd in feed.fds(mono)  # not resting
        shim = _start_actor(_shim(root, SHIM_SID), tmp_path)
        try:
            got = w.feed_round(time.time_ns(), mono + 0.01, {fd})
            assert [e for e in got if _started(SHIM_SID)(e)]
        finally:
            _end(shim)


def test_the_sources_own_listing_of_dev_vfio_is_no_change(root: Path) -> None:
    """A group node appears while nobody holds one: its round lists /dev/vfio (an open of the
    watched directory itself); that open is the agent's own and brings no further round (it
    did: each round's listing woke the next, a busy loop while a VF sat on vfio-pci)."""
    (root / "dev/vfio").mkdir(parents=True, exist_ok=True)
    with _seeded(root) as (w, feed):
        w.feed_round(time.time_ns(), time.monotonic())
        (root / "dev/vfio/42").write_text("")
        time.sleep(0.05)
        first = feed.read(w.holder_pids(), w.procwatch, None, time.monotonic())
        assert first.holders  # the new node
        w.on_change(time.time_ns(), holders=True, holders_full=first.holders_full)
        time.sleep(0.05)
        assert not feed.read(w.holder_pids(), w.procwatch, None, time.monotonic())
