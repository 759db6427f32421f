"""The links source on the real kernel: veth in network namespaces, identities, storms, resync."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
import time
from collections import Counter

import pytest

from diag import events as ev
from diag.core.correlator import Correlator
from diag.runtime import Pipeline, PipelineOptions
from diag.sources import SourceContext
from diag.sources.links import LinksSource
from diag.testing import Collector, wait_for
from tests.kernel.vw_kernel_helpers import RawCounter, cleanup_netns, prefix, sh

pytestmark = pytest.mark.usefixtures("require_root")


class Running:
    """A LinksSource on its own thread."""

    def __init__(self, **options: object) -> None:
        self.src = LinksSource(SourceContext(options=options))
        self.out = Collector()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.src.run, args=(self.out, self.stop), daemon=True)

    def __enter__(self) -> Running:
        self.thread.start()
        ok = wait_for(lambda: any(isinstance(e, ev.LinkChanged) and e.netns.is_host
                                    for e in self.out.snapshot()))
        if not ok:  # never leave the source thread running behind a failed test
            self.__exit__()
            raise AssertionError("the source did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)

    def events(self) -> list[ev.Event]:
        return self.out.snapshot()  # type: ignore[return-value]

    def watching(self, name: str) -> bool:
        """The namespace is open and its initial dump (lo) is in."""
        return any(isinstance(e, ev.LinkChanged) and e.netns.name == name and e.ifname == "lo"
                   for e in self.events())


def _inode(name: str) -> int:
    return os.stat(f"/run/netns/{name}").st_ino


def _story(events: list[ev.Event], pfx: str) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, ev.LinkChanged) and e.ifname.startswith(pfx):
            out.append(("new", e.netns.label, e.ifname, e.admin_up))
        elif isinstance(e, ev.LinkRemoved) and e.ifname.startswith(pfx):
            out.append(("del", e.netns.label, e.ifname))
    return out


def test_veth_create_up_down_rename_move_delete_each_seen_in_the_right_namespace() -> None:
    """Every step of a veth's life is reported once per namespace it touches, with that
    namespace's name and inode; a deleted namespace is reported gone within a second."""
    pfx = prefix()
    a, b = f"{pfx}a", f"{pfx}b"
    with cleanup_netns(pfx), Running() as run:
        sh(f"ip netns add {a} && ip netns add {b}")
        assert wait_for(lambda: run.watching(a) and run.watching(b), timeout=3)
        sh(f"ip link add {pfx}h type veth peer name {pfx}p")
        sh(f"ip link set {pfx}p netns {a}")
        sh(f"ip -n {a} link set {pfx}p up")
        sh(f"ip -n {a} link set {pfx}p down")
        sh(f"ip -n {a} link set {pfx}p name {pfx}r")
        sh(f"ip -n {a} link set {pfx}r netns {b}")
        sh(f"ip -n {b} link del {pfx}r")
        assert wait_for(lambda: ("del", "host", f"{pfx}h") in _story(run.events(), pfx))
        story = _story(run.events(), pfx)
        by_ns = {ns: [s for s in story if s[1] == ns] for ns in ("host", a, b)}
        # host: both ends created, the peer leaves for a, the other end dies with the pair
        assert by_ns["host"][0][:3] in {("new", "host", f"{pfx}h"), ("new", "host", f"{pfx}p")}
        assert ("del", "host", f"{pfx}p") in by_ns["host"]
        assert by_ns["host"][-1] == ("del", "host", f"{pfx}h")
        # a: arrives, goes up, goes down, renamed, leaves under its new name
        seq_a = by_ns[a]
        assert seq_a[0] == ("new", a, f"{pfx}p", False)
        assert ("new", a, f"{pfx}p", True) in seq_a
        up_at = seq_a.index(("new", a, f"{pfx}p", True))
        assert ("new", a, f"{pfx}p", False) in seq_a[up_at + 1 :]
        assert ("new", a, f"{pfx}r", False) in seq_a
        assert seq_a[-1] == ("del", a, f"{pfx}r")
        # b: arrives renamed, is deleted
        assert by_ns[b] == [("new", b, f"{pfx}r", False), ("del", b, f"{pfx}r")]
        refs = {e.netns.name: e.netns for e in run.events() if isinstance(e, ev.LinkChanged)}
        assert refs[a].inode == _inode(a) and refs[b].inode == _inode(b)
        assert not refs[a].is_host and refs[None].is_host
        sh(f"ip netns del {a}")
        assert wait_for(lambda: any(isinstance(e, ev.NetnsRemoved) and e.netns.name == a
                                    for e in run.events()), timeout=1.5)


def test_named_namespaces_are_found_by_inotify_without_waiting_for_a_scan() -> None:
    """scan_interval_s = 60, so only inotify on /run/netns can tell: five `ip netns add` are
    each watched under their name (their lo dumped as theirs, never as the pid of the `ip`
    process holding it before the mount), and an `ip netns del` is reported, within 2 s."""
    pfx = prefix()
    names = [f"{pfx}{i}" for i in range(5)]
    with cleanup_netns(pfx), Running(scan_interval_s=60) as run:
        for n in names:
            sh(f"ip netns add {n}")
        assert wait_for(lambda: all(run.watching(n) for n in names), timeout=2)
        lo = [e for e in run.events() if isinstance(e, ev.LinkChanged) and e.ifname == "lo"]
        assert all(e.netns.name in names for e in lo if not e.netns.is_host)
        sh(f"ip netns del {names[0]}")
        assert wait_for(lambda: any(isinstance(e, ev.NetnsRemoved) and e.netns.name == names[0]
                                    for e in run.events()), timeout=2)
        assert run.src.stats.netns_failed == 0


def _found_holding(run: Running, pid: int) -> int:
    """Waits (1.5 s) until the source reports the namespace `pid` holds; its inode."""
    assert wait_for(lambda: any(isinstance(e, ev.NetnsAdded) and e.netns.pid == pid
                                for e in run.events()), timeout=1.5)
    return int(os.readlink(f"/proc/{pid}/ns/net")[5:-1])


def _gone_when_killed(run: Running, proc: subprocess.Popen[bytes], inode: int) -> None:
    """The holder killed: the source reports its namespace removed within 1.5 s."""
    proc.kill()
    proc.wait()
    assert wait_for(lambda: any(isinstance(e, ev.NetnsRemoved) and e.netns.inode == inode
                                for e in run.events()), timeout=1.5)


@pytest.mark.parametrize("process_events", [True, False])
def test_a_namespace_held_only_by_a_process_is_found_by_pid_within_a_second(process_events: bool) -> None:
    """`unshare -n sleep`: no name anywhere; the source finds it through /proc, names it by the
    pid and inode, reports its links, and reports it gone when the process exits (by process
    events, and by the 0.5 s scans without them)."""
    pfx = prefix()
    proc = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    try:
        with Running(process_events=process_events) as run:
            assert run.src.mode == ("events" if process_events else
                                    "scan: process_events = false in [sources.links]")
            inode = _found_holding(run, proc.pid)
            sh(f"nsenter -t {proc.pid} -n ip link add {pfx}x type veth peer name {pfx}y")
            assert wait_for(lambda: any(isinstance(e, ev.LinkChanged) and e.ifname == f"{pfx}x"
                                        for e in run.events()))
            (x,) = [e for e in run.events() if isinstance(e, ev.LinkChanged) and e.ifname == f"{pfx}x"]
            assert (x.netns.inode, x.netns.pid, x.netns.name, x.netns.label) == (
                inode, proc.pid, None, f"pid:{proc.pid}")
            assert x.link_kind == "veth" and x.bdf is None
            _gone_when_killed(run, proc, inode)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_by_process_events_a_new_holder_is_found_at_its_exec_and_gone_at_its_exit() -> None:
    """Scans every 60 s only, so process events alone can tell: a process exec'ing in a new
    namespace (`unshare -n sleep`) is watched within 1.5 s, and its exit (the filter lets the
    holder's exit through) closes it within 1.5 s; an exec elsewhere brings no scan."""
    with Running(scan_interval_s=60, event_scan_interval_s=60) as run:
        assert run.src.mode == "events"
        scans = run.src.stats.scans
        sh("for i in $(seq 20); do /bin/true; done")  # execs in a watched namespace: no scan
        time.sleep(0.6)  # past the socket's rest: those execs are read
        assert run.src.stats.scans <= scans + 1  # (another test's new namespace may bring one)
        scans = run.src.stats.scans
        proc = subprocess.Popen(["unshare", "-n", "sleep", "60"])
        try:
            inode = _found_holding(run, proc.pid)
            assert run.src.stats.scans <= scans + 2  # `unshare` itself may exec before its unshare
            _gone_when_killed(run, proc, inode)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_300_veth_pairs_across_10_namespaces_match_a_raw_socket_count_exactly() -> None:
    """Created and deleted in bursts: per namespace, the agent's live LinkChanged/LinkRemoved
    counts equal what a plain rtnetlink socket in that namespace counted."""
    pfx = prefix()
    names = [f"{pfx}{i}" for i in range(10)]
    with contextlib.ExitStack() as stack, cleanup_netns(pfx), Running() as run:
        for n in names:
            sh(f"ip netns add {n}")
        assert wait_for(lambda: all(run.watching(n) for n in names), timeout=5)
        mark = len(run.events())
        counters: dict[str, RawCounter] = {}
        stack.callback(lambda: [c.close() for c in counters.values()])
        for n in names:
            counters[n] = RawCounter(n)
        for n in names:
            batch = "".join(f"link add {pfx}a{i} type veth peer name {pfx}b{i}\n" for i in range(30))
            subprocess.run(["ip", "-n", n, "-batch", "-"], input=batch, text=True, check=True)
        for n in names:
            batch = "".join(f"link del {pfx}a{i}\n" for i in range(30))
            subprocess.run(["ip", "-n", n, "-batch", "-"], input=batch, text=True, check=True)

        def agent_counts() -> dict[str, tuple[int, int]]:
            c: Counter[tuple[str, str]] = Counter()
            for e in run.events()[mark:]:
                if isinstance(e, (ev.LinkChanged, ev.LinkRemoved)) and e.netns.name in counters:
                    c[(e.netns.name, e.kind)] += 1
            return {n: (c[(n, "link_changed")], c[(n, "link_removed")]) for n in names}

        assert wait_for(lambda: all(v[1] >= 60 for v in agent_counts().values()), timeout=20)
        raw = {n: counters[n].stop() for n in names}
        agent = agent_counts()
    assert all(r[2] == 0 for r in raw.values()), "the raw counters themselves lost messages"
    assert agent == {n: (r[0], r[1]) for n, r in raw.items()}
    assert sum(v[0] for v in agent.values()) >= 600 and sum(v[1] for v in agent.values()) == 600
    assert run.src.stats.enobufs == 0
    assert not [e for e in run.events() if isinstance(e, ev.EventsLost)]


def test_with_a_tiny_buffer_link_loss_is_reported_and_the_redump_matches_the_kernel() -> None:
    """rcvbuf=4 KiB and a burst of 150 veth pairs: ENOBUFS -> EventsLost, a re-dump, Resynced;
    the core's links in that namespace then equal `ip link` there."""
    pfx = prefix()
    n = f"{pfx}s"
    with cleanup_netns(pfx):
        sh(f"ip netns add {n}")
        src = LinksSource(SourceContext(options={"rcvbuf": 4096}))
        # A reader that keeps up would see no loss: hold the source's reads while the burst is
        # written (as a busy agent would), so the 4 KiB buffer overflows every time, not only
        # when the machine happens to be loaded.
        hold = threading.Event()
        hold.set()
        drain = src._drain

        def held_drain(*args: object) -> None:
            hold.wait(30)
            drain(*args)  # type: ignore[arg-type]

        src._drain = held_drain  # type: ignore[method-assign]
        core = Correlator(rules=[])  # the model alone: rules belong to the core's tests
        p = Pipeline([src], correlator=core, options=PipelineOptions(merge_window_ns=10_000_000))
        items = Collector()
        p.on_item(items)
        p.start()
        try:
            assert wait_for(lambda: any(isinstance(e, ev.LinkChanged) and e.netns.name == n
                                        for e in items.snapshot()), timeout=3)
            batch = "".join(f"link add {pfx}a{i} type veth peer name {pfx}b{i}\n" for i in range(150))
            batch += "".join(f"link set {pfx}a{i} up\n" for i in range(0, 150, 2))
            batch += "".join(f"link del {pfx}a{i}\n" for i in range(0, 150, 3))
            hold.clear()
            try:
                subprocess.run(["ip", "-n", n, "-batch", "-"], input=batch, text=True, check=True)
            finally:
                hold.set()
            assert wait_for(lambda: any(isinstance(e, ev.Resynced) for e in items.snapshot()), timeout=10)
            assert p.wait_idle(5)
            kernel = json.loads(sh(f"ip -n {n} -j link show").stdout)
            inode = os.stat(f"/run/netns/{n}").st_ino

            def ours() -> dict[int, tuple[str, bool]]:
                state = p.state()
                assert state is not None
                return {v.ifindex: (v.ifname, v.admin_up) for v in state.links if v.netns.inode == inode}

            want = {k["ifindex"]: (k["ifname"], "UP" in k["flags"]) for k in kernel}
            assert wait_for(lambda: ours() == want, timeout=3), (ours(), want)
        finally:
            p.stop()
    got = items.snapshot()
    lost = [e for e in got if isinstance(e, ev.EventsLost) and e.lost_source == "links"]
    assert lost and "ENOBUFS" in lost[0].reason
    res = [e for e in got if isinstance(e, ev.Resynced) and e.resynced_source == "links"]
    assert res and all(e.changes >= 0 for e in res)


def test_a_held_namespace_is_renamed_to_another_holder_when_its_process_exits() -> None:
    """Two processes hold one unnamed namespace; when the one it is known by exits, the source
    re-announces it under the other pid (same inode) instead of losing it."""
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", "sleep 60 & exec sleep 61"])
    others: list[int] = []
    try:
        with Running() as run:
            inode = _found_holding(run, proc.pid)
            kids = sh(f"pgrep -P {proc.pid}", check=False).stdout.split()
            others[:] = [int(k) for k in kids] or [
                int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) != proc.pid
                and os.readlink(f"/proc/{p}/ns/net") == f"net:[{inode}]"]
            proc.kill()
            proc.wait()
            assert wait_for(lambda: any(isinstance(e, ev.NetnsAdded) and e.netns.inode == inode
                                        and e.netns.pid in others for e in run.events()), timeout=1.5)
            assert not any(isinstance(e, ev.NetnsRemoved) and e.netns.inode == inode
                           for e in run.events())
            for pid in others:
                os.kill(pid, 9)
            assert wait_for(lambda: any(isinstance(e, ev.NetnsRemoved) and e.netns.inode == inode
                                        for e in run.events()), timeout=1.5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in others:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)


def test_a_restarted_source_resyncs_against_what_it_saw_before() -> None:
    """What changed while the source was down (a crash, then the runtime's restart) comes out
    as resync events: a deleted veth as LinkRemoved, a deleted namespace as NetnsRemoved."""
    pfx = prefix()
    a, b = f"{pfx}a", f"{pfx}b"
    with cleanup_netns(pfx):
        sh(f"ip netns add {a} && ip netns add {b}")
        sh(f"ip -n {a} link add {pfx}x type veth peer name {pfx}y")
        src = LinksSource(SourceContext())
        first, second = Collector(), Collector()
        for out, between in ((first, f"ip -n {a} link del {pfx}x && ip netns del {b}"), (second, "")):
            stop = threading.Event()
            t = threading.Thread(target=src.run, args=(out, stop), daemon=True)
            t.start()
            try:
                if out is first:
                    assert wait_for(lambda: any(isinstance(e, ev.LinkChanged) and e.netns.name == a
                                                and e.ifname == f"{pfx}y" for e in first.snapshot()),
                                    timeout=3)
                else:
                    assert wait_for(lambda: any(isinstance(e, ev.Resynced) and a in e.reason
                                                for e in second.snapshot()), timeout=3)
            finally:
                stop.set()
                t.join(5)
            if between:
                sh(between)
    got = second.snapshot()
    removed = [e for e in got if isinstance(e, ev.LinkRemoved) and e.netns.name == a]
    assert {e.ifname for e in removed} == {f"{pfx}x", f"{pfx}y"} and all(e.resync for e in removed)
    assert any(isinstance(e, ev.NetnsRemoved) and e.netns.name == b and e.resync for e in got)
    (res,) = [e for e in got if isinstance(e, ev.Resynced) and a in e.reason]
    assert res.changes == 2 and "restarted" in res.reason
    assert not [e for e in got if isinstance(e, ev.LinkChanged) and e.netns.name == a
                and e.ifname == "lo"]  # unchanged links are not repeated
