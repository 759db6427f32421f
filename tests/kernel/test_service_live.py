"""`vfiowatch run` as a subprocess on this machine: real uevents, veth in a netns, signals, disk full.

Triggers are the safe ones of host-facts.md: synthetic uevents on an existing device (no driver
moves), a veth pair in a namespace this test creates and deletes, a write of a nonexistent BDF
to a driver's `bind` file (ENODEV), and a tiny tmpfs this test mounts and unmounts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from diag import codec
from diag import events as ev
from diag.core.correlator import Correlator
from diag.sinks.journal import journal_records
from tests.agentlog import AgentLog
from tests.conftest import vfiowatch_bin

pytestmark = pytest.mark.usefixtures("require_root")

PCI = Path("/sys/bus/pci/devices")
NONEXISTENT_BDF = "0000:ff:1f.7"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def a_device() -> str:
    """An existing PCI device to send synthetic uevents for (its driver never changes)."""
    return sorted(os.listdir(PCI))[0]


def synth(bdf: str, action: str = "change", count: int = 1) -> None:
    """Make the kernel broadcast `count` synthetic uevents for `bdf` (SYNTH_UUID set)."""
    fd = os.open(PCI / bdf / "uevent", os.O_WRONLY)
    try:
        for _ in range(count):
            os.pwrite(fd, f"{action} {uuid.uuid4()}".encode(), 0)
    finally:
        os.close(fd)


class Agent:
    """`vfiowatch run` in a subprocess, its JSON log lines parsed as they come."""

    def __init__(self, tmp: Path, *args: str, journal: Path | None = None,
                 env: dict[str, str] | None = None, metrics: bool = True,
                 sources: tuple[str, ...] = ("uevent", "links"), log_events: bool = True) -> None:
        self.tmp = tmp
        self.journal = journal if journal is not None else tmp / "journal" / "journal.jsonl"
        self.journal.parent.mkdir(parents=True, exist_ok=True)  # run makes only the default's
        self.port = free_port() if metrics else 0
        self.out = tmp / f"agent-{time.monotonic_ns()}.log"
        cmd = [vfiowatch_bin(), "run", *(["--log-events"] if log_events else []),
               "--journal", str(self.journal), *args]
        if metrics:
            cmd += ["--metrics-addr", f"127.0.0.1:{self.port}"]
        self._fh = open(self.out, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        self.log = AgentLog(self.out, self.proc, dump_stacks=True)
        self.wait_for(lambda d: d["event"] == "agent_started", timeout=30)
        for src in sources:
            self.wait_for(lambda d, s=src: d["event"] == "source_state_changed"
                          and d["source"] == s and d["up"], timeout=30)

    def lines(self) -> list[dict[str, Any]]:
        return self.log.lines()

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        return self.log.wait_for(pred, timeout)

    def metric(self, name: str) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        body = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read()
        out = {}
        for fam in text_string_to_metric_families(body.decode()):
            for s in fam.samples:
                if s.name == name:
                    out[",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))] = s.value
        return out

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self._fh.close()
        return rc, time.monotonic() - t0


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def start(*args: str, **kw: Any) -> Agent:
        a = Agent(tmp_path, *args, **kw)
        started.append(a)
        return a

    yield start
    for a in started:
        if a.proc.poll() is None:
            a.stop(signal.SIGKILL)


@pytest.fixture
def netns_veth() -> Iterator[tuple[str, str, str]]:
    """A namespace with one end of a veth pair in it; removed afterwards."""
    tag = f"{os.getpid() % 100000}"
    ns, host_end, ns_end = f"vwtest{tag}", f"vwh{tag}", f"vwn{tag}"
    yield ns, host_end, ns_end
    subprocess.run(["ip", "link", "del", host_end], capture_output=True)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _parts(journal: Path) -> dict[int, Path]:
    """Rotated parts by number: the .gz, or the plain file while it is still being compressed."""
    out: dict[int, Path] = {}
    for p in journal.parent.glob(journal.name + ".*"):
        m = re.fullmatch(re.escape(journal.name) + r"\.(\d{6})(\.gz)?", p.name)
        if m and (m.group(2) or int(m.group(1)) not in out):
            out[int(m.group(1))] = p
    return out


def _replay(path: Path) -> tuple[list[Any], codec.ReadStats, Correlator]:
    recs, st = journal_records(path)
    c = Correlator(rules=[])
    for r in recs:
        if isinstance(r, ev.Event):
            c.feed(r)
    return recs, st, c


# --------------------------------------------------------------------------------------------


def test_real_events_reach_the_logs_and_the_journal(
    agents: Callable[..., Agent], netns_veth: tuple[str, str, str]
) -> None:
    """A synthetic bind, a veth moved into a netns and an ENODEV bind write are logged and
    journaled; SIGTERM then exits 0 within 2 s."""
    a = agents()
    bdf = a_device()
    synth(bdf, "bind")
    bound = a.wait_for(lambda d: d["event"] == "device_bound" and d.get("bdf") == bdf)
    assert bound["synthetic"] is True and bound["level"] == "info"
    assert bound["timestamp"].endswith("Z") and bound["source"] == "uevent"

    ns, host_end, ns_end = netns_veth
    for cmd in (["ip", "netns", "add", ns],
                ["ip", "link", "add", host_end, "type", "veth", "peer", "name", ns_end],
                ["ip", "link", "set", ns_end, "netns", ns],
                ["ip", "-n", ns, "link", "set", ns_end, "up"]):
        subprocess.run(cmd, check=True, capture_output=True)
    in_ns = a.wait_for(lambda d: d["event"] == "link_changed" and d.get("netdev") == ns_end
                       and d.get("netns") == ns, timeout=15)
    assert in_ns["source"] == "links"
    a.wait_for(lambda d: d["event"] == "link_changed" and d.get("netdev") == host_end)

    from diag.sources import SOURCES

    def harmless_write() -> None:
        with pytest.raises(OSError) as exc, open("/sys/bus/pci/drivers/virtio-pci/bind", "w") as fh:
            fh.write(NONEXISTENT_BDF)
        assert exc.value.errno == 19  # ENODEV: nothing was bound

    harmless_write()
    if "ebpf" in SOURCES.load():  # attribution needs bcc; without it the write is still harmless
        state = a.wait_for(lambda d: d["event"] == "source_state_changed"
                           and d.get("source") == "ebpf", timeout=60)
        if state["up"]:
            # The source says up before its programs are attached (bcc compiles for ~2 s): write
            # again until one write is attributed.
            def mine(d: dict[str, Any]) -> bool:
                return (d["event"] == "sysfs_write_observed" and d.get("actor_pid") == os.getpid()
                        and d.get("path") == "/sys/bus/pci/drivers/virtio-pci/bind")

            end = time.monotonic() + 30
            seen = False
            while not seen and time.monotonic() < end:
                harmless_write()
                time.sleep(0.5)
                seen = any(mine(d) for d in a.lines())
            w = a.wait_for(mine, timeout=1)
            assert w["control"] == "bind" and w["driver"] == "virtio-pci"
            if w["stage"] == "open":  # tracepoint mode's default open-only variant: the open
                assert w["ebpf_mode"] == "tracepoint" and w["result"] >= 0 and "bdf" not in w
            else:  # kprobe mode (or the complete variant): the write, its value and errno
                assert w["stage"] == "write" and w["bdf"] == NONEXISTENT_BDF and w["result"] == -19

    rc, took = a.stop()
    assert rc == 0 and took < 2.0, (rc, took)
    assert a.lines()[-1]["event"] == "agent_stopped"
    recs, st, replayed = _replay(a.journal)
    assert isinstance(recs[0], codec.Header) and recs[0].boot_id
    assert st.bad_lines == 0 and not st.truncated_tail
    assert any(isinstance(r, ev.DeviceBound) and r.bdf == bdf and r.synthetic for r in recs)
    assert any(isinstance(r, ev.LinkChanged) and r.ifname == ns_end and r.netns.name == ns
               for r in recs)
    assert replayed.snapshot().device(bdf) is not None


def test_sigterm_exits_0_within_2_s_and_speaks_sd_notify(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    """Under a notify socket: READY=1, WATCHDOG=1 at half WATCHDOG_USEC, STOPPING=1; exit 0 < 2 s."""
    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(10)
    try:
        a = agents(env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "1000000"})
        got: list[bytes] = []
        end = time.monotonic() + 10
        while time.monotonic() < end and not any(m == b"WATCHDOG=1" for m in got):
            got.append(srv.recv(4096))
        assert got[0].startswith(b"READY=1\nSTATUS=") and b"sources up" in got[0]
        assert b"WATCHDOG=1" in got
        rc, took = a.stop()
        assert rc == 0 and took < 2.0, (rc, took)
        rest = []
        with contextlib.suppress(TimeoutError):
            srv.settimeout(0.5)
            while True:
                rest.append(srv.recv(4096))
        assert any(m.startswith(b"STOPPING=1") for m in rest)
    finally:
        srv.close()


def test_an_idle_agent_stays_healthy_past_the_health_bound_with_a_sleeping_core(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    """Idle past HEALTHY_WITHIN_S (no source runs, so nothing wakes the core thread, which no
    longer flushes on a timer): WATCHDOG=1 keeps coming and /healthz says 200."""
    from diag.commands.run import HEALTHY_WITHIN_S

    sock_path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(sock_path)
    srv.settimeout(10)
    try:
        a = agents("--sources", "uevent", "--disable-source", "uevent", sources=(),
                   env={"NOTIFY_SOCKET": sock_path, "WATCHDOG_USEC": "2000000"})
        time.sleep(HEALTHY_WITHIN_S + 2)
        got: list[bytes] = []
        srv.settimeout(0)
        with contextlib.suppress(BlockingIOError):
            while True:
                got.append(srv.recv(4096))
        srv.settimeout(5)
        assert srv.recv(4096) == b"WATCHDOG=1"  # pinged after the bound, too
        assert got.count(b"WATCHDOG=1") >= HEALTHY_WITHIN_S / 2  # about every second all along
        assert not [d for d in a.lines() if d["event"] == "agent_unhealthy"]
        body = urllib.request.urlopen(f"http://127.0.0.1:{a.port}/healthz", timeout=5).read()
        assert body.startswith(b"ok: core waiting for events")
        rc, _ = a.stop()
        assert rc == 0
    finally:
        srv.close()


def test_kill_9_in_a_storm_leaves_a_journal_that_replays(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    """kill -9 while 20,000 uevents arrive: replay finds no bad line and at most one cut line;
    cutting the last line (power loss) is reported as exactly one truncated tail."""
    a = agents("--journal-fsync-interval", "0.2")
    bdf = a_device()
    storm = subprocess.Popen([
        str(Path(vfiowatch_bin()).parent / "python"), "-c",
        "import os,sys,uuid\n"
        f"fd=os.open('/sys/bus/pci/devices/{bdf}/uevent', os.O_WRONLY)\n"
        "for i in range(20000): os.pwrite(fd, ('change ' + str(uuid.uuid4())).encode(), 0)\n",
    ])
    try:
        a.wait_for(lambda d: d["event"] == "device_changed", timeout=10)
        time.sleep(0.3)
        a.proc.send_signal(signal.SIGKILL)
        a.stop()
    finally:
        storm.wait(60)
    recs, st, replayed = _replay(a.journal)
    assert st.bad_lines == 0
    assert isinstance(recs[0], codec.Header)
    changed = sum(1 for r in recs if isinstance(r, ev.DeviceChanged))
    assert changed > 0
    assert replayed.snapshot().device(bdf) is not None

    data = a.journal.read_bytes()
    cut = tmp_path / "cut.jsonl"
    cut.write_bytes(data[: data.rstrip(b"\n").rfind(b"\n") + 1] + data.rstrip(b"\n").rsplit(b"\n", 1)[1][:9])
    recs2, st2 = journal_records(cut)
    assert st2.truncated_tail and st2.bad_lines == 0
    assert len(recs2) == len(recs) - 1 or (st.truncated_tail and len(recs2) == len(recs))


def test_rotation_gzips_self_contained_parts_and_sighup_reopens(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    """At 16K the journal rotates into .gz parts that each start with header + state; after a
    rename, SIGHUP makes the agent start a new file that holds the next events."""
    a = agents("--journal-max-bytes", "16K", "--journal-keep", "100")
    bdf = a_device()
    synth(bdf, "change", 1500)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        seen = sum(1 for d in a.lines() if d["event"] == "device_changed" and d.get("bdf") == bdf)
        if seen >= 1500 and len(list(a.journal.parent.glob("journal.jsonl.*.gz"))) >= 3:
            break
        time.sleep(0.2)
    parts = sorted(a.journal.parent.glob("journal.jsonl.*.gz"))
    assert len(parts) >= 3
    numbers = []
    for p in parts:
        recs, st = journal_records(p)
        assert st.bad_lines == 0 and not st.truncated_tail
        hdr = recs[0]
        assert isinstance(hdr, codec.Header)
        numbers.append(hdr.part)
        if hdr.part:
            assert hdr.snapshot_records >= 1 and recs[1].kind == "inventory_observed"
    assert numbers == sorted(numbers) and numbers[0] == 0

    moved = tmp_path / "moved.jsonl"
    before = max(_parts(a.journal))
    os.rename(a.journal, moved)
    a.proc.send_signal(signal.SIGHUP)
    a.wait_for(lambda d: d["event"] == "journal_reopened", timeout=5)
    synth(bdf, "bind")
    a.wait_for(lambda d: d["event"] == "device_bound" and d.get("bdf") == bdf)
    rc, took = a.stop()
    assert rc == 0 and took < 2.0
    # Everything written after the reopen: the new file and any part rotated out of it since
    # (other tests on this machine may be making links while this one runs).
    after = [p for seq, p in sorted(_parts(a.journal).items()) if seq > before] + [a.journal]
    first, _ = journal_records(after[0])
    assert isinstance(first[0], codec.Header) and first[1].kind == "inventory_observed"
    recs = [r for p in after for r in journal_records(p)[0]]
    assert any(isinstance(r, ev.DeviceBound) and r.bdf == bdf for r in recs)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_is_reported_and_writing_resumes(
    agents: Callable[..., Agent], tiny_tmpfs: Path
) -> None:
    """ENOSPC on a 64K tmpfs: the agent keeps running, logs journal_write_failed, metrics show
    it; when space returns it notes the loss in-band and writes on."""
    # Only uevents: the links of other tests running on this machine would fill 64K by themselves.
    a = agents("--sources", "uevent", journal=tiny_tmpfs / "journal.jsonl", sources=("uevent",))
    bdf = a_device()
    filler = tiny_tmpfs / "filler"
    with contextlib.suppress(OSError), open(filler, "wb") as fh:
        while True:
            fh.write(b"\0" * 4096)
            fh.flush()
    synth(bdf, "change", 200)
    failed = a.wait_for(lambda d: d["event"] == "journal_write_failed", timeout=15)
    assert failed["errno"] == "ENOSPC" and failed["level"] == "error"
    assert a.metric("vfiowatch_journal_writable") == {"": 0.0}
    assert urllib.request.urlopen(f"http://127.0.0.1:{a.port}/healthz", timeout=5).status == 200
    assert a.proc.poll() is None

    filler.unlink()  # space returns: the next retry (at most every 0.5 s, or the 1 s flush) resumes
    resumed = a.wait_for(lambda d: d["event"] == "journal_write_resumed", timeout=10)
    assert resumed["dropped"] > 0
    synth(bdf, "bind")
    a.wait_for(lambda d: d["event"] == "device_bound" and d.get("bdf") == bdf)
    rc, _ = a.stop()
    assert rc == 0
    recs, st, _ = _replay(a.journal)
    assert st.bad_lines == 0
    lost = [r for r in recs if isinstance(r, ev.EventsLost) and r.lost_source == "journal"]
    assert len(lost) == 1 and lost[0].count == resumed["dropped"]
    assert any(isinstance(r, ev.DeviceBound) and r.bdf == bdf for r in recs[recs.index(lost[0]):])


def test_every_journal_file_has_the_live_files_mode_whatever_the_umask(
    agents: Callable[..., Agent]
) -> None:
    """Under umask 022, the live file, every rotated part and every compressed part (and the
    lock) are 0640: no part of the record is readable by every user on the host."""
    old = os.umask(0o022)
    try:
        a = agents("--sources", "uevent", "--journal-max-bytes", "16K", "--journal-keep", "100",
                   sources=("uevent",))
    finally:
        os.umask(old)
    synth(a_device(), "change", 1500)
    end = time.monotonic() + 30
    while time.monotonic() < end and len(list(a.journal.parent.glob("journal.jsonl.*.gz"))) < 3:
        time.sleep(0.2)
    rc, _ = a.stop()
    assert rc == 0
    files = sorted(p for p in a.journal.parent.iterdir())
    assert len([p for p in files if p.name.endswith(".gz")]) >= 3
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {"0o640"}, modes


def test_a_read_only_journal_says_read_only_and_resumes_when_writable(
    agents: Callable[..., Agent], tmp_path: Path
) -> None:
    """EROFS (a read-only bind mount laid over the journal's directory, then SIGHUP: the file
    is opened again through it): journal_write_failed names EROFS with the read-only fix, not
    "free space"; once the mount is gone, writing resumes."""
    jdir = tmp_path / "ro-journal"
    jdir.mkdir()
    a = agents("--sources", "uevent", journal=jdir / "journal.jsonl", sources=("uevent",))
    subprocess.run(["mount", "--bind", str(jdir), str(jdir)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(jdir)], check=True)
        a.proc.send_signal(signal.SIGHUP)
        synth(a_device(), "change", 5)
        failed = a.wait_for(lambda d: d["event"] == "journal_write_failed", timeout=15)
    finally:
        subprocess.run(["umount", str(jdir)], check=True)
    assert failed["errno"] == "EROFS"
    assert "read-only" in failed["hint"] and "free space" not in failed["hint"]
    synth(a_device(), "change", 5)
    a.wait_for(lambda d: d["event"] == "journal_write_resumed", timeout=10)
    rc, _ = a.stop()
    assert rc == 0


class Prometheus:
    """Debian's prometheus on loopback, scraping the given targets every second; `query` is its HTTP API."""

    def __init__(self, tmp: Path, targets: list[str]) -> None:
        prom = shutil.which("prometheus")
        if prom is None:
            pytest.fail("prometheus missing: deploy/setup-host.sh installs it (make setup)")
        self.port = free_port()
        self.log = tmp / "prometheus.log"
        cfg = tmp / "prometheus.yml"
        cfg.write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            "scrape_configs:\n"
            "  - job_name: vfiowatch\n"
            f"    static_configs: [{{targets: {json.dumps(targets)}}}]\n"
        )
        self.proc = subprocess.Popen(
            [prom, f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115 - closed with the process
        )

    def query(self, q: str) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/query?query={urllib.request.quote(q)}"
        doc = json.loads(urllib.request.urlopen(url, timeout=5).read())
        assert doc["status"] == "success"
        return list(doc["data"]["result"])

    def until(self, q: str, pred: Callable[[list[dict[str, Any]]], bool],
              timeout: float = 60) -> list[dict[str, Any]]:
        """The query's result once `pred` holds (Prometheus starting, scrapes, staleness take seconds)."""
        end = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < end:
            with contextlib.suppress(OSError, ValueError):
                result = self.query(q)
                if pred(result):
                    return result
            time.sleep(0.5)
        raise AssertionError(f"{q}: {result}\n{self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[list[str]], Prometheus]]:
    """Start a real Prometheus scraping the given `host:port` targets; stopped after the test."""
    started: list[Prometheus] = []

    def start(targets: list[str]) -> Prometheus:
        p = Prometheus(tmp_path, targets)
        started.append(p)
        return p

    yield start
    for p in started:
        p.stop()


def test_a_real_prometheus_scrapes_the_agent(agents: Callable[..., Agent],
                                             prometheus: Callable[[list[str]], Prometheus]) -> None:
    """Debian's prometheus, on loopback with a 1 s interval, stores the agent's series."""
    a = agents()
    prom = prometheus([f"127.0.0.1:{a.port}"])
    result = prom.until("vfiowatch_source_up", bool)
    up = {r["metric"]["source"]: r["value"][1] for r in result}
    assert up.get("uevent") == "1" and up.get("links") == "1"
    assert prom.query('up{job="vfiowatch"}')[0]["value"][1] == "1"
    assert prom.query("vfiowatch_build_info")[0]["metric"]["version"]
    assert float(prom.query("sum(vfiowatch_devices)")[0]["value"][1]) == len(os.listdir(PCI))
