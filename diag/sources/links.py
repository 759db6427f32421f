"""Provides the `links` source: RTM_NEWLINK/RTM_DELLINK in every network namespace of the host.

* `decode_rtnl(data, ts_ns, netns)` is pure: one raw NETLINK_ROUTE datagram (one or more
  `nlmsghdr` + `ifinfomsg` + attributes) to LinkChanged / LinkRemoved events. It is a minimal
  parser of just the attributes we need (name, MAC, operstate, carrier, kind, parent device),
  about ten times faster than a general marshal; tests check it against pyroute2's marshal on
  the recorded lab messages. The PCI address comes from IFLA_PARENT_DEV_NAME when
  IFLA_PARENT_DEV_BUS_NAME is `pci` (kernel >= 5.16), which works in every namespace; only when
  a kernel lacks them does the source fall back to `/sys/class/net/<if>/device`, and only for
  the host namespace (another namespace's netdevs are not in the host's sysfs).
* Namespaces: the host's (`/proc/1/ns/net`, else the agent's own), the named ones
  (`/run/netns/*`) and every namespace only held by a process (`/proc/<pid>/ns/net`), found by
  a scan every `scan_interval_s` (default 0.5 s, so within a second). NETLINK_LISTEN_ALL_NSID is
  not used: it misses namespaces without an id (anchors.md). Each namespace gets its own raw
  socket, created by a short helper thread that `setns()`s into it (a socket stays in the
  namespace it was created in), then an RTM_GETLINK dump gives its current links.
* Reading: one thread polls every socket and drains each ready one until EAGAIN, so nothing stays
  buffered out of sight (the failure of pyroute2's sync API under select(), host-facts.md).
  Every message gives exactly one event: counts equal a raw socket's.
* Loss: ENOBUFS on a socket -> `EventsLost` for that namespace, a re-dump, the difference from
  the source's view emitted as `resync=True` events, then `Resynced(changes=N)`.
* Cost of holding a socket: it keeps its namespace alive, so a deleted namespace lives on (with
  its virtual links) until the next scan sees it gone and closes the socket: at most
  `scan_interval_s`. Physical netdevs (VFs) return to the host namespace then, as the kernel
  always does when a namespace dies.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from diag import events as ev
from diag.paths import HostPaths
from diag.sources import Availability, Emit, SourceContext, check_options, refusal_events, register
from diag.sources._wake import StopRelay
from diag.sources.proc import ns_inode
from diag.sources.sysfs import is_bdf

log = logging.getLogger("vfiowatch.sources.links")

SOURCE = "links"
NETLINK_ROUTE = 0
RTMGRP_LINK = 1
RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33
DEFAULT_RCVBUF = 32 * 1024 * 1024
_RECV_SIZE = 1 << 16

IFLA_ADDRESS = 1
IFLA_IFNAME = 3
IFLA_OPERSTATE = 16
IFLA_LINKINFO = 18
IFLA_INFO_KIND = 1
IFLA_CARRIER = 33
IFLA_PARENT_DEV_NAME = 56
IFLA_PARENT_DEV_BUS_NAME = 57
IFF_UP = 0x1
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_RTA = struct.Struct("=HH")


class MalformedRtnl(ValueError):
    """A NETLINK_ROUTE datagram that cannot be parsed."""


@dataclass(frozen=True, slots=True)
class LinkMsg:
    """One parsed RTM_NEWLINK/RTM_DELLINK (what decode_rtnl turns into events)."""

    type: int
    ifindex: int
    flags: int
    ifname: str = ""
    mac: str = ""
    operstate: str = ""
    carrier: bool | None = None
    link_kind: str = ""
    parent: str | None = None
    parent_bus: str | None = None
    seq: int = 0
    pid: int = 0

    @property
    def bdf(self) -> str | None:
        return self.parent if self.parent_bus == "pci" else None


def _cstr(b: bytes | memoryview) -> str:
    raw = bytes(b)
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "replace")


def iter_messages(data: bytes) -> Iterator[tuple[int, int, int, int, int, memoryview]]:
    """(type, flags, seq, pid, offset, payload) for each nlmsghdr in a datagram.

    Raises MalformedRtnl on a header that runs past the datagram or is shorter than itself.
    """
    mv = memoryview(data)
    off, n = 0, len(data)
    while off + 16 <= n:
        length, mtype, flags, seq, pid = _NLMSGHDR.unpack_from(data, off)
        if length < 16 or off + length > n:
            raise MalformedRtnl(f"nlmsghdr at {off}: length {length} does not fit {n} bytes")
        yield mtype, flags, seq, pid, off, mv[off + 16 : off + length]
        off += (length + 3) & ~3
    if off < n and n - off >= 4:
        raise MalformedRtnl(f"{n - off} trailing bytes after the last message")


def parse_link(mtype: int, payload: memoryview | bytes, seq: int = 0, pid: int = 0) -> LinkMsg:
    """Parse one ifinfomsg + attributes (the payload after the nlmsghdr)."""
    if len(payload) < 16:
        raise MalformedRtnl(f"ifinfomsg needs 16 bytes, got {len(payload)}")
    _family, _type, ifindex, flags, _change = _IFINFOMSG.unpack_from(payload, 0)
    ifname = mac = operstate = kind = ""
    carrier: bool | None = None
    parent = parent_bus = None
    off, n = 16, len(payload)
    while off + 4 <= n:
        alen, atype = _RTA.unpack_from(payload, off)
        if alen < 4 or off + alen > n:
            raise MalformedRtnl(f"rtattr at {off}: length {alen} does not fit {n} bytes")
        atype &= NLA_TYPE_MASK
        val = payload[off + 4 : off + alen]
        if atype == IFLA_IFNAME:
            ifname = _cstr(val)
        elif atype == IFLA_ADDRESS:
            mac = bytes(val).hex(":")
        elif atype == IFLA_OPERSTATE and len(val) >= 1:
            v = val[0]
            operstate = OPERSTATES[v] if v < len(OPERSTATES) else str(v)
        elif atype == IFLA_CARRIER and len(val) >= 1:
            carrier = bool(val[0])
        elif atype == IFLA_PARENT_DEV_NAME:
            parent = _cstr(val)
        elif atype == IFLA_PARENT_DEV_BUS_NAME:
            parent_bus = _cstr(val)
        elif atype == IFLA_LINKINFO:
            ioff = 0
            while ioff + 4 <= len(val):
                ilen, itype = _RTA.unpack_from(val, ioff)
                if ilen < 4:
                    break
                if itype & NLA_TYPE_MASK == IFLA_INFO_KIND:
                    kind = _cstr(val[ioff + 4 : ioff + ilen])
                ioff += (ilen + 3) & ~3
        off += (alen + 3) & ~3
    return LinkMsg(type=mtype, ifindex=ifindex, flags=flags, ifname=ifname, mac=mac,
                   operstate=operstate, carrier=carrier, link_kind=kind, parent=parent,
                   parent_bus=parent_bus, seq=seq, pid=pid)


def parse_rtnl(data: bytes) -> list[LinkMsg]:
    """Every RTM_NEWLINK/RTM_DELLINK in a datagram (other message types are skipped)."""
    out = []
    for mtype, _flags, seq, pid, _off, payload in iter_messages(data):
        if mtype in (RTM_NEWLINK, RTM_DELLINK):
            out.append(parse_link(mtype, payload, seq, pid))
    return out


def link_event(m: LinkMsg, ts_ns: int, netns: ev.NetnsRef, *, source: str = SOURCE,
               resync: bool = False, bdf: str | None = None) -> ev.Event:
    """The event for one parsed message."""
    if m.type == RTM_DELLINK:
        return ev.LinkRemoved(ts_ns=ts_ns, source=source, resync=resync, ifindex=m.ifindex,
                              ifname=m.ifname, netns=netns, bdf=bdf or m.bdf)
    return ev.LinkChanged(
        ts_ns=ts_ns, source=source, resync=resync, ifindex=m.ifindex, ifname=m.ifname,
        netns=netns, operstate=m.operstate, carrier=m.carrier, admin_up=bool(m.flags & IFF_UP),
        mac=m.mac, bdf=bdf or m.bdf, link_kind=m.link_kind,
    )


def decode_rtnl(data: bytes, ts_ns: int, netns: ev.NetnsRef, *, source: str = SOURCE) -> list[ev.Event]:
    """Pure: one raw NETLINK_ROUTE datagram to its link events (raises MalformedRtnl)."""
    return [link_event(m, ts_ns, netns, source=source) for m in parse_rtnl(data)]


def link_key(e: ev.LinkChanged) -> tuple[object, ...]:
    """What a re-dump compares to decide that a link changed."""
    return (e.ifname, e.operstate, e.carrier, e.admin_up, e.mac, e.bdf, e.link_kind)


# --------------------------------------------------------------------------------------------
# Namespaces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetnsCandidate:
    """A namespace found by a scan, and a path to open it by."""

    inode: int
    path: str
    """Host path (`/proc/<pid>/ns/net`, `/run/netns/<name>`), opened with HostPaths.open_nsfs."""
    name: str | None = None
    pid: int | None = None
    is_host: bool = False

    def ref(self) -> ev.NetnsRef:
        return ev.NetnsRef(inode=self.inode, name=self.name,
                           pid=None if self.name or self.is_host else self.pid, is_host=self.is_host)


def host_netns(paths: HostPaths) -> NetnsCandidate | None:
    """The host's namespace: pid 1's, or the agent's own when pid 1's is unreadable (another
    user namespace, as in some sandboxes; the agent then runs with hostNetwork)."""
    for path in ("/proc/1/ns/net", "/proc/self/ns/net"):
        ino = ns_inode(paths, path)
        if ino is not None:
            return NetnsCandidate(inode=ino, path=path, is_host=True)
    return None


PID_SETTLE_READS = 10
"""A process's namespace is re-read on this many scans before the cache is trusted: container
runtimes start a process and then unshare() it into its new namespace."""


def scan_netns(
    paths: HostPaths, pid_cache: dict[int, tuple[int | None, int]] | None = None, *,
    full: bool = True,
) -> dict[int, NetnsCandidate]:
    """Every network namespace visible under `paths`: host, named, held by processes.

    `pid_cache` (pid -> (namespace inode, times read)) makes a scan cost one readlink per young
    process only (a host with 2,000 processes would otherwise pay 2,000 readlinks a scan): a
    process is re-read for its first PID_SETTLE_READS scans, then trusted. `full=True` re-reads
    every process, catching the rare old one that changed namespace itself (setns, unshare).
    """
    found: dict[int, NetnsCandidate] = {}
    host = host_netns(paths)
    if host is not None:
        found[host.inode] = host
    netns_dir = "/run/netns"
    try:
        names = sorted(paths.listdir(netns_dir))
    except OSError:
        names = []
    for name in names:
        p = f"{netns_dir}/{name}"
        try:
            ino = paths.stat(p).st_ino
        except OSError:
            continue
        if ino not in found or (not found[ino].is_host and found[ino].name is None):
            found[ino] = NetnsCandidate(inode=ino, path=p, name=name)
    try:
        pids = paths.listdir("/proc")
    except OSError:
        pids = []
    live: set[int] = set()
    for entry in pids:
        if not entry.isdigit():
            continue
        pid = int(entry)
        live.add(pid)
        p = f"/proc/{entry}/ns/net"
        cached = pid_cache.get(pid) if pid_cache is not None else None
        if cached is not None and not full and cached[1] >= PID_SETTLE_READS:
            ino = cached[0]
        else:
            ino = ns_inode(paths, p)
            if pid_cache is not None:
                pid_cache[pid] = (ino, (cached[1] if cached else 0) + 1)
        if ino is None or ino in found:
            continue
        found[ino] = NetnsCandidate(inode=ino, path=p, pid=pid)
    if pid_cache is not None:
        for gone in pid_cache.keys() - live:
            del pid_cache[gone]
    return found


_libc: ctypes.CDLL | None = None


def _setns(fd: int, nstype: int) -> None:
    fn = getattr(os, "setns", None)
    if fn is not None:  # Python >= 3.12
        fn(fd, nstype)
        return
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    if _libc.setns(fd, nstype) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _new_rtnl_socket(rcvbuf: int) -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
    try:
        if rcvbuf > 0:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((0, RTMGRP_LINK))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def open_rtnl_in(path: str, *, rcvbuf: int = DEFAULT_RCVBUF, expect_inode: int | None = None,
                 opener: Callable[[str], int] | None = None) -> socket.socket:
    """A non-blocking NETLINK_ROUTE socket subscribed to RTMGRP_LINK inside the namespace at
    `path`, made by a helper thread that setns()es (the caller's namespace never changes).
    `opener` opens `path` (HostPaths.open_nsfs: inside --root); with `expect_inode`, fails
    (ESTALE) if the path now names another namespace (pid reuse)."""
    fd = opener(path) if opener is not None else os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if expect_inode is not None and os.fstat(fd).st_ino != expect_inode:
            raise OSError(errno.ESTALE, f"{path} is no longer namespace {expect_inode}")
        if os.fstat(fd).st_ino == os.stat("/proc/thread-self/ns/net").st_ino:
            return _new_rtnl_socket(rcvbuf)
        box: dict[str, object] = {}

        def work() -> None:
            try:
                _setns(fd, CLONE_NEWNET)
                box["sock"] = _new_rtnl_socket(rcvbuf)
            except BaseException as exc:
                box["err"] = exc

        t = threading.Thread(target=work, name="vfiowatch-setns", daemon=True)
        t.start()
        t.join()
        if "err" in box:
            raise box["err"]  # type: ignore[misc]
        return box["sock"]  # type: ignore[return-value]
    finally:
        os.close(fd)


def dump_request(seq: int) -> bytes:
    """RTM_GETLINK with NLM_F_DUMP: every link of the socket's namespace."""
    body = _IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return _NLMSGHDR.pack(16 + len(body), RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body


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
class LinksStats:
    """Counters of one run (read from any thread)."""

    messages: int = 0
    """RTM_NEWLINK/RTM_DELLINK messages received live (not from dumps)."""
    dumped: int = 0
    enobufs: int = 0
    malformed: int = 0
    resyncs: int = 0
    netns_opened: int = 0
    netns_closed: int = 0
    netns_failed: int = 0


OPTIONS = ("rcvbuf", "scan_interval_s", "netns", "full_scan_every")
"""The options this source takes (`[sources.links]` in the configuration file)."""


@register("links")
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
        # Entering another namespace needs CAP_SYS_ADMIN: without root, watch the host's only
        # (probe() says so) rather than fail to open every namespace on every scan.
        self.only_host = not self.want_all or os.geteuid() != 0
        self.stats = LinksStats()
        self._ns: dict[int, _Ns] = {}
        self._by_fd: dict[int, _Ns] = {}
        self._seq = 1000
        self._resync_reason: str | None = None
        self._lock = threading.Lock()
        self._sysfs_bdf: dict[str, str | None] = {}
        self._pid_cache: dict[int, tuple[int | None, int]] = {}
        self._scans = 0
        self._failed: dict[int, int] = {}
        self._previous: dict[int, tuple[ev.NetnsRef, dict[int, ev.LinkChanged]]] = {}
        """Views of the last run (a restart after a crash): its first dumps diff against them."""
        """Namespace inode -> scan number before which it is not tried again."""
        self.full_scan_every = int(opts.get("full_scan_every", 20))
        """Every Nth scan re-reads every process's namespace (default: every 10 s)."""

    def probe(self) -> Availability:
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.close()
        except OSError as exc:
            return Availability(False, reason=f"cannot open an rtnetlink socket: {exc}",
                                hint="run on Linux with AF_NETLINK")
        if self.want_all and self.only_host:
            return Availability(True, mode="host-only",
                                reason="not root: other network namespaces cannot be entered",
                                hint="run as root (CAP_SYS_ADMIN for setns) to watch pod namespaces")
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
        poller = select.poll()
        relay = StopRelay(stop)
        poller.register(relay.fd, select.POLLIN)
        buf = bytearray(_RECV_SIZE)
        next_scan = 0.0
        try:
            while not stop.is_set():
                mono = time.monotonic()
                if mono >= next_scan:
                    self._rescan(emit, poller)
                    next_scan = mono + self.scan_interval_s
                if self._resync_reason is not None:
                    reason, self._resync_reason = self._resync_reason, None
                    for ns in list(self._ns.values()):
                        self._start_dump(ns, reason)
                # Sleeps until the next namespace scan; the stop relay's fd wakes it at once.
                timeout = max(0.0, next_scan - time.monotonic())
                for fd, _mask in poller.poll(timeout * 1000):
                    ns = self._by_fd.get(fd)
                    if ns is not None:
                        self._drain(ns, buf, emit)
        finally:
            relay.close()
            for ino, ns in self._ns.items():
                self._previous[ino] = (ns.ref, ns.links)
            for ns in list(self._ns.values()):
                ns.sock.close()
            with self._lock:
                self._ns.clear()
            self._by_fd.clear()

    def _rescan(self, emit: Emit, poller: select.poll) -> None:
        if self.only_host:
            host = host_netns(self.paths)
            found = {host.inode: host} if host else {}
        else:
            full = self._scans % max(1, self.full_scan_every) == 0
            found = scan_netns(self.paths, self._pid_cache, full=full)
        self._scans += 1
        for gone in [i for i in self._failed if i not in found]:
            del self._failed[gone]
        now = time.time_ns()
        for e in refusal_events(self.paths, self.name, now):  # paths leading outside --root
            emit(e)
        for ino in [i for i in self._previous if i not in found]:
            ref, _ = self._previous.pop(ino)  # gone while the source was down
            emit(ev.NetnsRemoved(ts_ns=now, source=self.name, netns=ref, resync=True))
        for ino in [i for i in self._ns if i not in found]:
            ns = self._ns[ino]
            poller.unregister(ns.sock.fileno())
            del self._by_fd[ns.sock.fileno()]
            ns.sock.close()
            with self._lock:
                del self._ns[ino]
            self.stats.netns_closed += 1
            emit(ev.NetnsRemoved(ts_ns=now, source=self.name, netns=ns.ref))
        for ino, cand in found.items():
            ns = self._ns.get(ino)
            if ns is not None:
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
                continue
            if self._failed.get(ino, 0) > self._scans:
                continue
            try:
                sock = open_rtnl_in(cand.path, rcvbuf=self.rcvbuf, expect_inode=ino,
                                    opener=self.paths.open_nsfs)
            except OSError as exc:
                # Gone between scan and open (then it vanishes from the scan), or not enterable:
                # try again in about 10 s rather than on every scan.
                self.stats.netns_failed += 1
                self._failed[ino] = self._scans + 20
                log.warning("cannot watch netns %s (%s): %s", ino, cand.path, exc)
                continue
            self._failed.pop(ino, None)
            ns = _Ns(cand=cand, ref=cand.ref(), sock=sock)
            prev = self._previous.pop(ino, None)
            if prev is not None:  # seen by the last run: its dump is a resync against that view
                ns.links, ns.initial = prev[1], False
            with self._lock:
                self._ns[ino] = ns
            self._by_fd[sock.fileno()] = ns
            poller.register(sock.fileno(), select.POLLIN)
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

