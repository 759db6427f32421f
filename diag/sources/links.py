"""Provides the `links` source: RTM_NEWLINK/RTM_DELLINK in every network namespace of the host.

* Decoding is pure (`diag.sources.rtnl.decode_rtnl`): one raw datagram to LinkChanged /
  LinkRemoved events. The PCI address comes from IFLA_PARENT_DEV_NAME when the kernel sends it
  (>= 5.16); only when a kernel lacks it does the source fall back to
  `/sys/class/net/<if>/device`, and only for the host namespace (another namespace's netdevs
  are not in the host's sysfs).
* Namespaces (`diag.sources.netns`): the host's, the named ones and every one only held by a
  process. Named ones (`/run/netns`, where `ip netns add` and containerd's CNI put pods') are
  seen at once through inotify on that directory (a name waits up to a second for its bind
  mount); held ones by a scan of /proc, which re-reads the names only when inotify said they
  changed (and on full scans), so its cost does not grow with the number of namespaces. Each
  gets its own socket, then an RTM_GETLINK dump gives its current links.
* When scans run: with the kernel's process events (`diag.sources.procevents`; the host's pid
  namespace, --root /) a scan runs when a process execs in a namespace the source does not
  watch (one readlink of that process's ns/net per exec), when the process a held namespace
  was found by exits (the kernel sends only those exits), and every `event_scan_interval_s`
  (10 s) for what no exec shows (a process that unshare()s or setns()es and never execs). The
  socket is read at most every EXEC_REST_S (its events wait in the kernel's buffer), so a host
  that execs all the time wakes the source a few times a second, a quiet one at once. Without
  process events (another pid namespace, an older kernel without CAP_NET_ADMIN, a --root
  tree), /proc is scanned every `scan_interval_s` (0.5 s), as the log says at start.
* Reading: one thread waits on every socket with epoll (a wait costs what is ready, not the
  number of namespaces) and drains each ready one until EAGAIN, so nothing stays buffered out
  of sight (the failure of pyroute2's sync API under select(), host-facts.md).
  Every message gives exactly one event: counts equal a raw socket's.
* Loss: ENOBUFS on a socket -> `EventsLost` for that namespace, a re-dump, the difference from
  the source's view emitted as `resync=True` events, then `Resynced(changes=N)`.
* Cost of holding a socket: it keeps its namespace alive, so a deleted namespace lives on (with
  its virtual links) until the next scan sees it gone and closes the socket: at most
  `scan_interval_s`. Physical netdevs (VFs) return to the host namespace then, as the kernel
  always does when a namespace dies.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from dataclasses import dataclass, field

from diag import events as ev
from diag.common import caps
from diag.common.bdf import is_bdf
from diag.events import replace
from diag.sources import (
    Availability,
    Emit,
    SocketCounters,
    SourceContext,
    check_options,
    proc,
    refusal_events,
    register,
)
from diag.sources._wake import StopRelay
from diag.sources.inotify import Inotify, Want, WatchSet
from diag.sources.netns import (
    DEFAULT_RCVBUF,
    NETNS_DIR,
    NetnsCandidate,
    host_netns,
    nsfs_dev,
    open_rtnl_in,
    scan_named,
    scan_netns,
)
from diag.sources.procevents import ProcEventSocket, ProcEventsUnavailable
from diag.sources.rtnl import (
    NETLINK_ROUTE,
    NLMSG_DONE,
    NLMSG_ERROR,
    RTM_DELLINK,
    RTM_NEWLINK,
    SOURCE,
    LinkMsg,
    MalformedRtnl,
    dump_request,
    iter_messages,
    link_event,
    link_key,
    parse_link,
)
from diag.sources.watermark import Watermark

log = logging.getLogger("vfiowatch.sources.links")

_RECV_SIZE = 1 << 16

# --------------------------------------------------------------------------------------------
# The source
# --------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Ns:
    """One watched namespace: its socket and the source's view of its links."""

    cand: NetnsCandidate
    ref: ev.NetnsRef
    sock: socket.socket
    links: dict[int, ev.LinkChanged] = field(default_factory=dict)
    dump_seq: int = 0
    dumping: bool = False
    dump: dict[int, ev.LinkChanged] = field(default_factory=dict)
    order: int = 0
    """Link messages received in this namespace (orders dump replies against live messages)."""
    dump_at: dict[int, int] = field(default_factory=dict)
    live_at: dict[int, int] = field(default_factory=dict)
    """ifindex -> order of its newest live message since the running dump started."""
    redump: bool = False
    resync_reason: str = ""
    initial: bool = True
    enobufs: int = 0
    messages: int = 0


@dataclass(slots=True)
class LinksStats(SocketCounters):
    """Counters of one run (read from any thread)."""

    messages: int = 0
    """RTM_NEWLINK/RTM_DELLINK messages received live (not from dumps)."""
    dumped: int = 0
    """Link messages received as replies to RTM_GETLINK dumps."""
    netns_opened: int = 0
    netns_closed: int = 0
    netns_failed: int = 0
    """Times a namespace could not be entered (gone since the scan, or not enterable; retried
    about 10 s later)."""
    proc_events: int = 0
    """Process events read (exec of any process, exit of a namespace's holder)."""
    scans: int = 0
    """Namespace scans of /proc."""


NAME_RETRY_S = 0.02
"""While a new /run/netns name waits for its mount, scans come this often."""
NAME_MOUNT_WAIT_S = 1.0
"""How long a name may stay unmounted before it is tried as it is (and fails, said once)."""

EXEC_REST_S = 0.25
"""After reading the process-events socket, the source reads it again only this much later."""

OPTIONS = ("rcvbuf", "scan_interval_s", "netns", "full_scan_every", "process_events", "event_scan_interval_s")
"""The options this source takes (`[sources.links]` in the configuration file)."""


@register
class LinksSource:
    """Link state in every network namespace, by one rtnetlink socket per namespace.

    Options: `rcvbuf` (bytes per socket, default 32 MiB), `scan_interval_s` (namespace
    discovery, default 0.5), `netns` (`all` default, or `host` to watch the host's only).
    """

    name = SOURCE

    def __init__(self, ctx: SourceContext | None = None) -> None:
        ctx = ctx or SourceContext()
        self.paths = ctx.paths
        opts = ctx.options
        check_options(self.name, opts, OPTIONS)
        self.rcvbuf = int(opts.get("rcvbuf", DEFAULT_RCVBUF))
        self.scan_interval_s = float(opts.get("scan_interval_s", 0.5))
        self.want_all = str(opts.get("netns", "all")) != "host"
        # Entering another namespace needs CAP_SYS_ADMIN (whatever the uid): without it, watch
        # the host's only (probe() says so) rather than fail to enter every namespace each scan.
        self._no_setns = [m for m in caps.missing(SOURCE, caps.effective()) if m[0] == "SYS_ADMIN"]
        self.only_host = not self.want_all or bool(self._no_setns)
        self.stats = LinksStats()
        self._ns: dict[int, _Ns] = {}
        self._by_fd: dict[int, _Ns] = {}
        self._seq = 1000
        self._resync_reason: str | None = None
        self._lock = threading.Lock()
        self._sysfs_bdf: dict[str, str | None] = {}
        self._pid_cache: dict[int, tuple[int | None, int]] = {}
        self._scans = 0
        self._failed: dict[int, tuple[int, str]] = {}
        self._previous: dict[int, tuple[ev.NetnsRef, dict[int, ev.LinkChanged]]] = {}
        """Views of the last run (a restart after a crash): its first dumps diff against them."""
        """Namespace inode -> scan number before which it is not tried again."""
        self.full_scan_every = int(opts.get("full_scan_every", 20))
        """Every Nth scan re-reads every process's namespace (default: every 10 s)."""
        self.use_process_events = bool(opts.get("process_events", True))
        self.event_scan_interval_s = float(opts.get("event_scan_interval_s", 10.0))
        self._proc: ProcEventSocket | None = None
        """Process events (None: /proc is scanned every scan_interval_s)."""
        self._holders: set[int] = set()
        """The pids whose exit matters (held namespaces' holders): the socket's filter lets
        through only these (unless it could not be attached: then every exit comes)."""
        self._filter_error = ""
        self._filter_set = False
        self.mode = ""
        """`events` or `scan` (and why), once running."""
        self.watermark = Watermark()
        """How far this source's stream is complete (the runtime's merge reads it)."""
        self._names: Inotify | None = None
        self._name_watch: WatchSet | None = None
        """inotify on /run/netns (or its nearest existing parent): a name added or removed
        brings a scan at once, and names are re-read only then (and on full scans)."""
        self._named: dict[int, NetnsCandidate] | None = None
        self._named_stale = True
        self._unmounted: dict[str, float] = {}
        """Named files not bind-mounted yet (`ip netns add` and CNI plugins create the file,
        then mount the namespace on it) -> monotonic time first seen: looked at again shortly."""
        self._nsfs_dev: int | None = None
        self._never_mounted: set[tuple[str, int]] = set()

    def probe(self) -> Availability:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.close()
        except OSError as exc:
            return Availability(False, reason=f"cannot open an rtnetlink socket: {exc}",
                                hint="run on Linux with AF_NETLINK")
        if self.want_all and self.only_host:
            return Availability(True, mode="host-only",
                                reason="missing CAP_SYS_ADMIN: other network namespaces cannot be "
                                       "entered (setns), only the host's links are followed",
                                hint=caps.grant_hint(self._no_setns))
        return Availability(True, mode="all-netns" if not self.only_host else "host-only")

    def request_resync(self, reason: str) -> None:
        """Ask the running loop to re-dump every namespace and emit the difference."""
        self._resync_reason = reason

    def namespaces(self) -> list[ev.NetnsRef]:
        """The namespaces watched right now (any thread)."""
        with self._lock:
            return [n.ref for n in self._ns.values()]

    # ---- loop -----------------------------------------------------------------------------------

    def run(self, emit: Emit, stop: threading.Event) -> None:
        self.stats = LinksStats()
        # epoll: a wait costs what is ready, not what is registered (1,000 namespaces' sockets
        # made every poll() of a burst cost 1,000 descriptors).
        poller = select.epoll()
        relay = StopRelay(stop)
        poller.register(relay.fd, select.EPOLLIN)
        self._start_name_watch(poller)
        self._start_proc_events()
        interval = self.scan_interval_s if self._proc is None else max(self.scan_interval_s,
                                                                       self.event_scan_interval_s)
        proc_fd = self._proc.fileno() if self._proc is not None else -1
        armed = False  # the process-events socket is in the poller (else it rests until proc_resume)
        proc_resume = 0.0
        buf = bytearray(_RECV_SIZE)
        next_scan = 0.0
        wm = self.watermark
        try:
            while not stop.is_set():
                mono = time.monotonic()
                if self._proc is not None and not armed and mono >= proc_resume:
                    # The rest is over: what came meanwhile, then rest again, or (nothing came)
                    # wait for the next event in the poller.
                    seen, scan = self._proc_read()
                    if scan:
                        next_scan = mono
                    if seen:
                        proc_resume = mono + EXEC_REST_S
                    else:
                        poller.register(proc_fd, select.EPOLLIN)
                        armed = True
                if mono >= next_scan:
                    self._rescan(emit, poller)
                    next_scan = mono + (NAME_RETRY_S if self._unmounted else interval)
                    if self._proc is not None and self._watch_holders():
                        next_scan = mono  # a holder exited before the filter took it in
                if self._resync_reason is not None:
                    reason, self._resync_reason = self._resync_reason, None
                    for ns in list(self._ns.values()):
                        self._start_dump(ns, reason)
                # Sleeps until the next namespace scan; the stop relay's fd wakes it at once.
                # Messages are stamped when read, after the wake: while it sleeps, this source
                # is complete up to the clock.
                wake = next_scan if armed or self._proc is None else min(next_scan, proc_resume)
                timeout = max(0.0, wake - time.monotonic())
                wm.waiting()
                ready = poller.poll(timeout)  # epoll: seconds
                wm.working()
                for fd, _mask in ready:
                    ns = self._by_fd.get(fd)
                    if ns is not None:
                        self._drain(ns, buf, emit)
                    elif self._names is not None and fd == self._names.fileno():
                        self._names_changed()
                        next_scan = min(next_scan, time.monotonic())
                    elif fd == proc_fd and armed:
                        if self._proc_read()[1]:
                            next_scan = min(next_scan, time.monotonic())
                        poller.unregister(proc_fd)
                        armed = False
                        proc_resume = time.monotonic() + EXEC_REST_S
        finally:
            relay.close()
            if self._proc is not None:
                self._proc.close()
                self._proc = None
            for ino, ns in self._ns.items():
                self._previous[ino] = (ns.ref, ns.links)
            for ns in list(self._ns.values()):
                ns.sock.close()
            with self._lock:
                self._ns.clear()
            self._by_fd.clear()
            if self._names is not None:
                self._names.close()
                self._names = self._name_watch = None
            poller.close()

    def _start_name_watch(self, poller: select.epoll) -> None:
        """inotify on /run/netns; without it (no inotify, host-only) names are read every scan."""
        self._named, self._named_stale, self._unmounted = None, True, {}
        self._never_mounted = set()
        self._nsfs_dev = nsfs_dev()
        if self.only_host:
            return
        try:
            names = Inotify()
        except OSError as exc:
            log.warning("no inotify for %s (%s): named namespaces are read on every scan", NETNS_DIR, exc)
            return
        self._names, self._name_watch = names, WatchSet(names, self.paths)
        self._name_watch.sync([Want(NETNS_DIR, None, "netns")])
        poller.register(names.fileno(), select.EPOLLIN)

    def _start_proc_events(self) -> None:
        """Process events when this host allows them (else scans on a timer, said in the log)."""
        self._proc, self._holders, self._filter_error, self._filter_set = None, set(), "", False
        if self.only_host:
            self.mode = "host-only"
            return
        why = ("process_events = false in [sources.links]" if not self.use_process_events else
               "a --root tree (its /proc is not the kernel's pids)" if self.paths.confined else "")
        if not why:
            try:
                sock = ProcEventSocket(rcvbuf=1 << 20)
                sock.subscribe()
                self._proc = sock
                self._watch_holders()  # no exits at all until a held namespace is watched
            except ProcEventsUnavailable as exc:
                why = f"no process events: {exc.strerror}"
        if self._proc is not None:
            self.mode = "events"
            return
        self.mode = f"scan: {why}"
        log.info("network namespaces held by processes are looked for every %g s (%s)",
                 self.scan_interval_s, why)

    def _proc_read(self) -> tuple[bool, bool]:
        """Drain the process-events socket: (anything read, a scan is needed). An exec into a
        namespace not watched, the exit of a namespace's holder and lost events need one."""
        assert self._proc is not None
        events, lost = self._proc.read()
        self.stats.proc_events += len(events)
        scan = lost
        for e in events:
            if scan:
                break
            if not e.is_process:
                continue
            if e.kind == "exec":
                ino = proc.ns_inode(self.paths, f"/proc/{e.tgid}/ns/net")
                scan = ino is not None and ino not in self._ns and ino not in self._failed
            elif e.kind == "exit":
                scan = e.tgid in self._holders
        return bool(events) or lost, scan

    def _watch_holders(self) -> bool:
        """Let through the exits of the processes the held namespaces were found by, and no
        other. True when one of them already exited (its exit may have been filtered out)."""
        assert self._proc is not None
        pids = {ns.cand.pid for ns in self._ns.values() if ns.cand.pid is not None and ns.cand.name is None}
        if pids == self._holders and self._filter_set:
            return False
        new = pids - self._holders
        self._holders = pids
        self._filter_set = True
        if not self._filter_error:
            try:
                self._proc.watch_exits(pids)
            except OSError as exc:  # every exit comes then (and is looked up in _holders)
                self._filter_error = f"{exc.strerror or exc}"
                log.warning("process-events filter not attached: %s", self._filter_error)
        return any(proc.has_exited(self.paths, pid) for pid in new)

    def _names_changed(self) -> None:
        """Any event counts: `ip netns add` creates the file read-only (no IN_CLOSE_WRITE
        follows its IN_CREATE, which WatchSet.tags would wait for)."""
        assert self._names is not None and self._name_watch is not None
        events = self._names.read()
        self._name_watch.tags(events)  # overflow and vanished watches: placed again below
        self._name_watch.sync([Want(NETNS_DIR, None, "netns")])  # /run/netns made or remade
        self._named_stale |= bool(events)

    def _named_now(self, full: bool) -> dict[int, NetnsCandidate] | None:
        """The named namespaces for this scan: re-read when /run/netns changed, a name is
        still waiting for its mount, or on a full scan; else the last reading. None: no
        inotify, scan_netns reads them itself."""
        if self._name_watch is None:
            return None
        if self._named is None or self._named_stale or self._unmounted or full:
            named = scan_named(self.paths)
            now = time.monotonic()
            waiting: dict[str, float] = {}
            for ino, cand in list(named.items()):
                if (self._nsfs_dev is None or cand.dev == self._nsfs_dev or cand.name is None
                        or (cand.name, ino) in self._never_mounted):
                    continue
                first = self._unmounted.get(cand.name, now)
                if now - first < NAME_MOUNT_WAIT_S:
                    waiting[cand.name] = first
                    del named[ino]  # not a namespace yet: its mount follows
                else:
                    self._never_mounted.add((cand.name, ino))  # tried as it is, from now on
            self._named, self._named_stale, self._unmounted = named, False, waiting
        return self._named

    def _rescan(self, emit: Emit, poller: select.epoll) -> None:
        """Find the namespaces now: close the gone ones, rename the known ones, open the new."""
        if self.only_host:
            host = host_netns(self.paths)
            found = {host.inode: host} if host else {}
        else:
            full = self._scans % max(1, self.full_scan_every) == 0
            found = scan_netns(self.paths, self._pid_cache, full=full, named=self._named_now(full))
        self._scans += 1
        self.stats.scans += 1
        for gone in [i for i in self._failed if i not in found]:
            del self._failed[gone]
        now = time.time_ns()
        for e in refusal_events(self.paths, self.name, now):  # paths leading outside --root
            emit(e)
        for ino in [i for i in self._previous if i not in found]:
            ref, _ = self._previous.pop(ino)  # gone while the source was down
            emit(ev.NetnsRemoved(ts_ns=now, source=self.name, netns=ref, resync=True))
        for ino in [i for i in self._ns if i not in found]:
            self._close(ino, poller, emit, now)
        for ino, cand in found.items():
            ns = self._ns.get(ino)
            if ns is not None:
                self._known(ns, ino, cand, emit, now)
            elif cand.pid is not None and cand.name is None and self._unmounted:
                # A name waits for its mount, maybe of this very namespace (held meanwhile by
                # the `ip netns add` or CNI process making it): opened by its name once mounted.
                continue
            elif self._failed.get(ino, (0, ""))[0] <= self._scans or self._failed[ino][1] != cand.path:
                # Tried again at once when found by another path: `ip netns add`'s own process
                # holds the namespace a moment before its name is mounted, then exits.
                self._open(ino, cand, poller, emit, now)

    def _close(self, ino: int, poller: select.epoll, emit: Emit, now: int) -> None:
        ns = self._ns[ino]
        poller.unregister(ns.sock.fileno())
        del self._by_fd[ns.sock.fileno()]
        ns.sock.close()
        with self._lock:
            del self._ns[ino]
        self.stats.netns_closed += 1
        emit(ev.NetnsRemoved(ts_ns=now, source=self.name, netns=ns.ref))

    def _known(self, ns: _Ns, ino: int, cand: NetnsCandidate, emit: Emit, now: int) -> None:
        """A namespace already watched: a redump due, or a better name for it."""
        if ns.redump and not ns.dumping:
            ns.redump = False
            self._start_dump(ns, ns.resync_reason)
        if cand.name and ns.ref.name != cand.name:  # a held namespace got a name
            ns.cand, ns.ref = cand, cand.ref()
            emit(ev.NetnsAdded(ts_ns=now, source=self.name, netns=ns.ref))
        elif (not ns.ref.name and ns.ref.pid is not None and cand.pid is not None
              and (self._pid_cache.get(ns.ref.pid) or (None, 0))[0] != ino):
            # The process we named it by is gone (or left it); another holds it now.
            ns.cand, ns.ref = cand, cand.ref()
            emit(ev.NetnsAdded(ts_ns=now, source=self.name, netns=ns.ref))

    def _open(self, ino: int, cand: NetnsCandidate, poller: select.epoll, emit: Emit,
              now: int) -> None:
        """A new namespace: its socket, then a dump of its links."""
        try:
            sock = open_rtnl_in(cand.path, rcvbuf=self.rcvbuf, expect_inode=ino,
                                opener=self.paths.open_nsfs)
        except OSError as exc:
            # Gone between scan and open (then it vanishes from the scan), or not enterable:
            # try again in about 10 s rather than on every scan.
            self.stats.netns_failed += 1
            self._failed[ino] = (self._scans + 20, cand.path)
            log.warning("cannot watch netns %s (%s): %s", ino, cand.path, exc)
            return
        self._failed.pop(ino, None)
        ns = _Ns(cand=cand, ref=cand.ref(), sock=sock)
        prev = self._previous.pop(ino, None)
        if prev is not None:  # seen by the last run: its dump is a resync against that view
            ns.links, ns.initial = prev[1], False
        with self._lock:
            self._ns[ino] = ns
        self._by_fd[sock.fileno()] = ns
        poller.register(sock.fileno(), select.EPOLLIN)
        self.stats.netns_opened += 1
        emit(ev.NetnsAdded(ts_ns=now, source=self.name, netns=ns.ref))
        self._start_dump(ns, "source restarted" if prev is not None else "")

    def _start_dump(self, ns: _Ns, reason: str) -> None:
        if ns.dumping:
            ns.redump = True
            ns.resync_reason = reason or ns.resync_reason
            return
        self._seq += 1
        ns.dump_seq = self._seq
        ns.dumping = True
        ns.dump, ns.dump_at, ns.live_at = {}, {}, {}
        ns.resync_reason = reason
        try:
            ns.sock.send(dump_request(ns.dump_seq))
        except OSError as exc:
            ns.dumping = False
            log.warning("link dump in %s failed: %s", ns.ref.label, exc)

    def _drain(self, ns: _Ns, buf: bytearray, emit: Emit) -> None:
        recv_into = ns.sock.recv_into
        while True:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                return
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    ns.enobufs += 1
                    self.stats.enobufs += 1
                    if ns.dumping and ns.redump:
                        continue  # this gap is already reported and a re-dump is queued
                    emit(ev.EventsLost(
                        ts_ns=time.time_ns(), source=self.name, lost_source=self.name, count=None,
                        reason=f"ENOBUFS in netns {ns.ref.label}: the kernel dropped link messages",
                    ))
                    self._start_dump(ns, "ENOBUFS")
                    continue
                raise
            ts = time.time_ns()
            self._handle(ns, bytes(buf[:n]), ts, emit)

    def _handle(self, ns: _Ns, data: bytes, ts: int, emit: Emit) -> None:
        try:
            msgs = list(iter_messages(data))
        except MalformedRtnl as exc:
            self.stats.malformed += 1
            if self.stats.malformed == 1:
                emit(ev.DecodeFailed(ts_ns=ts, source=self.name, failed_source=self.name,
                                     reason=str(exc), sample_hex=data[:64].hex()))
            return
        for mtype, _flags, seq, _pid, _off, payload in msgs:
            is_dump = ns.dumping and seq == ns.dump_seq and seq != 0
            if mtype in (RTM_NEWLINK, RTM_DELLINK):
                try:
                    m = parse_link(mtype, payload, seq)
                except (MalformedRtnl, struct.error) as exc:
                    self.stats.malformed += 1
                    if self.stats.malformed == 1:
                        emit(ev.DecodeFailed(ts_ns=ts, source=self.name, failed_source=self.name,
                                             reason=str(exc), sample_hex=bytes(payload[:64]).hex()))
                    continue
                e = link_event(m, ts, ns.ref, source=self.name,
                               bdf=self._host_bdf(ns, m) if m.parent_bus is None else None)
                ns.order += 1
                if is_dump:
                    self.stats.dumped += 1
                    if isinstance(e, ev.LinkChanged):
                        ns.dump[e.ifindex] = e
                        ns.dump_at[e.ifindex] = ns.order
                    continue
                self.stats.messages += 1
                ns.messages += 1
                if ns.dumping:
                    ns.live_at[e.ifindex] = ns.order
                if isinstance(e, ev.LinkChanged):
                    ns.links[e.ifindex] = e
                else:
                    ns.links.pop(e.ifindex, None)
                emit(e)
            elif mtype in (NLMSG_DONE, NLMSG_ERROR) and is_dump:
                err = struct.unpack_from("=i", payload)[0] if len(payload) >= 4 else 0
                err = -err if err < 0 else 0
                if err == errno.ENOBUFS and mtype == NLMSG_ERROR:
                    # The socket was full when the dump began: the kernel keeps the dump
                    # running and resumes it as we read (netlink_recvmsg); DONE still comes.
                    continue
                self._finish_dump(ns, ts, emit, error=err)

    def _finish_dump(self, ns: _Ns, ts: int, emit: Emit, *, error: int) -> None:
        ns.dumping = False
        if error:
            # A partial dump must not be diffed (links it misses would look removed): dump
            # again on the next scan tick.
            log.info("link dump in %s failed (%s); dumping again", ns.ref.label,
                     errno.errorcode.get(error, error))
            ns.dump, ns.dump_at, ns.live_at = {}, {}, {}
            ns.redump = True
            ns.resync_reason = ns.resync_reason or "dump failed"
            return
        resync = not ns.initial
        changes: list[ev.Event] = []
        # A live message newer than the dump's entry for a link wins; a link with live news
        # during the dump is never removed by it (it may have been created after the dump
        # passed its place).
        for ifindex in sorted(ns.links.keys() - ns.dump.keys()):
            if ifindex in ns.live_at:
                continue
            old = ns.links.pop(ifindex)
            changes.append(ev.LinkRemoved(ts_ns=ts, source=self.name, resync=resync,
                                          ifindex=ifindex, ifname=old.ifname, netns=ns.ref, bdf=old.bdf))
        for ifindex in sorted(ns.dump):
            if ns.live_at.get(ifindex, 0) > ns.dump_at[ifindex]:
                continue
            new = ns.dump[ifindex]
            old_link = ns.links.get(ifindex)
            if old_link is None or link_key(old_link) != link_key(new):
                if resync:
                    new = replace(new, resync=True)
                changes.append(new)
            ns.links[ifindex] = new
        for e in changes:
            emit(e)
        if resync:
            self.stats.resyncs += 1
            emit(ev.Resynced(ts_ns=ts, source=self.name, resynced_source=self.name,
                             changes=len(changes),
                             reason=f"{ns.resync_reason or 'resync'} in netns {ns.ref.label}"))
        ns.initial = False
        ns.dump, ns.dump_at, ns.live_at = {}, {}, {}
        if ns.redump:
            ns.redump = False
            self._start_dump(ns, ns.resync_reason)

    def _host_bdf(self, ns: _Ns, m: LinkMsg) -> str | None:
        # Kernels without IFLA_PARENT_DEV_*: the host's sysfs knows its own netdevs only.
        if not ns.cand.is_host or not m.ifname or m.link_kind:
            return None
        if m.ifname in self._sysfs_bdf and m.type == RTM_NEWLINK:
            return self._sysfs_bdf[m.ifname]
        try:
            target = self.paths.readlink(f"/sys/class/net/{m.ifname}/device")
            bdf: str | None = os.path.basename(target)
        except OSError:
            bdf = None
        if bdf is not None and not is_bdf(bdf):
            bdf = None
        self._sysfs_bdf[m.ifname] = bdf
        return bdf


