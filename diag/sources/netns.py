"""Provides the network namespaces of the host and a rtnetlink socket inside each one.

Namespaces: the host's (`/proc/1/ns/net`, else the agent's own), the named ones (`/run/netns/*`)
and every namespace only held by a process (`/proc/<pid>/ns/net`), found by `scan_netns`.
NETLINK_LISTEN_ALL_NSID is not used: it misses namespaces without an id (anchors.md). Each
namespace gets its own raw socket (`open_rtnl_in`), created by a short helper thread that
`setns()`s into it (a socket stays in the namespace it was created in); the caller's own
namespace never changes.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.proc import ns_inode
from diag.sources.rtnl import NETLINK_ROUTE, RTMGRP_LINK

CLONE_NEWNET = 0x40000000
SO_RCVBUFFORCE = 33
DEFAULT_RCVBUF = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NetnsCandidate:
    """A namespace found by a scan, and a path to open it by."""

    inode: int
    path: str
    """Host path (`/proc/<pid>/ns/net`, `/run/netns/<name>`), opened with HostPaths.open_nsfs."""
    name: str | None = None
    pid: int | None = None
    is_host: bool = False
    dev: int = 0
    """A named one's st_dev (0: not read)."""

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
    full: bool = True, named: dict[int, NetnsCandidate] | None = None,
) -> dict[int, NetnsCandidate]:
    """Every network namespace visible under `paths`: host, named, held by processes.

    `pid_cache` (pid -> (namespace inode, times read)) makes a scan cost one readlink per young
    process only (a host with 2,000 processes would otherwise pay 2,000 readlinks a scan): a
    process is re-read for its first PID_SETTLE_READS scans, then trusted. `full=True` re-reads
    every process, catching the rare old one that changed namespace itself (setns, unshare).
    `named`: the named namespaces as the caller last read them (`scan_named`; it re-reads them
    when /run/netns changes), instead of a stat of every name on every scan.
    """
    found: dict[int, NetnsCandidate] = {}
    host = host_netns(paths)
    if host is not None:
        found[host.inode] = host
    for ino, cand in (scan_named(paths) if named is None else named).items():
        if ino not in found or (not found[ino].is_host and found[ino].name is None):
            found[ino] = cand
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


NETNS_DIR = "/run/netns"


def scan_named(paths: HostPaths) -> dict[int, NetnsCandidate]:
    """The named namespaces (`/run/netns/<name>`), the first name of each; `dev` is the
    device of each file (nsfs once `ip netns add` or a CNI plugin has bind-mounted it)."""
    found: dict[int, NetnsCandidate] = {}
    try:
        names = sorted(paths.listdir(NETNS_DIR))
    except OSError:
        names = []
    for name in names:
        p = f"{NETNS_DIR}/{name}"
        try:
            st = paths.stat(p)
        except OSError:
            continue
        if st.st_ino not in found:
            found[st.st_ino] = NetnsCandidate(inode=st.st_ino, path=p, name=name, dev=st.st_dev)
    return found


def nsfs_dev() -> int | None:
    """The device of the kernel's namespace filesystem (one for every namespace), from the
    agent's own /proc; None when unreadable."""
    try:
        return os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return None


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
