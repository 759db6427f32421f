"""Provides process identity from /proc: comm, exe, argv, ancestry, cgroup -> container/pod, Kata shim.

Shared by the eBPF source (who wrote to sysfs) and the Kata source (shims, VMMs, VFIO holders).
Everything is read under the injectable root (`--root /host` with hostPID works). Pure parsers
(`parse_stat`, `parse_cgroup`, `kata_shim_identity`) are separate from the readers.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from diag import events as ev
from diag.common.paths import HostPaths

KATA_SHIM_NAMES = ("containerd-shim-kata-v2",)
KATA_SHIM_COMM = "containerd-shim"  # /proc/<pid>/comm is truncated to 15 characters
VMM_COMMS = ("qemu-system-x86", "qemu-system-aar", "qemu-kvm", "cloud-hyperviso")

_CONTAINER_ID = re.compile(r"(?:cri-containerd-|crio-|docker-|containerd-)?([0-9a-f]{64})(?:\.scope)?$")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")


@dataclass(frozen=True, slots=True)
class CgroupIdentity:
    """What a cgroup path says about a process's container."""

    path: str = ""
    container_id: str | None = None
    pod_uid: str | None = None


def parse_stat(text: str) -> tuple[str, int | None]:
    """(comm, ppid) from /proc/<pid>/stat; comm may hold spaces and parentheses."""
    lpar, rpar = text.find("("), text.rfind(")")
    if lpar < 0 or rpar < lpar:
        return "", None
    comm = text[lpar + 1 : rpar]
    rest = text[rpar + 2 :].split()
    try:
        return comm, int(rest[1])
    except (IndexError, ValueError):
        return comm, None


def parse_state(text: str) -> str:
    """The state letter of /proc/<pid>/stat (R, S, D, Z, X, ...); empty when unparsable."""
    rpar = text.rfind(")")
    return text[rpar + 2 : rpar + 3] if rpar >= 0 else ""


def has_exited(paths: HostPaths, pid: int) -> bool:
    """True when `pid` is gone or a zombie (it exited; its parent has not reaped it yet, so
    /proc/<pid> is still there)."""
    raw = _read(paths, f"/proc/{pid}/stat", 4096)
    return raw is None or parse_state(raw.decode("utf-8", "replace")) in ("Z", "X", "")


def parse_cgroup(text: str) -> CgroupIdentity:
    """Container id and pod uid from /proc/<pid>/cgroup (v2 `0::/path`, or v1 lines)."""
    path = ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and (parts[0] == "0" or "pids" in parts[1] or not path):
            path = parts[2]
            if parts[0] == "0":
                break
    container = None
    pod = None
    for seg in reversed(path.split("/")):
        if container is None:
            m = _CONTAINER_ID.search(seg)
            if m:
                container = m.group(1)
        m2 = _POD_UID.search(seg)
        if m2:
            pod = m2.group(1).replace("_", "-")
            break
    return CgroupIdentity(path=path, container_id=container, pod_uid=pod)


def kata_shim_identity(argv: list[str], exe: str, comm: str) -> tuple[str | None, str | None]:
    """(sandbox_id, runtime) when the process is a Kata shim, else (None, None).

    The shim is started as `containerd-shim-kata-v2 -namespace k8s.io -address ... -id <sid>`;
    runtime-rs has the same executable name and is told apart by its install path (kata-facts §5).
    """
    base = os.path.basename(exe) if exe else (os.path.basename(argv[0]) if argv else "")
    if base not in KATA_SHIM_NAMES and not (comm == KATA_SHIM_COMM and argv and
                                            os.path.basename(argv[0]) in KATA_SHIM_NAMES):
        return None, None
    sid = None
    for i, a in enumerate(argv):
        if a in ("-id", "--id") and i + 1 < len(argv):
            sid = argv[i + 1]
        elif a.startswith(("-id=", "--id=")):
            sid = a.split("=", 1)[1]
    runtime = "rs" if "runtime-rs" in (exe or (argv[0] if argv else "")) else "go"
    return sid, runtime


def vmm_sandbox(argv: list[str]) -> str | None:
    """Sandbox id from a Kata VMM's `-name sandbox-<id>` argument."""
    for i, a in enumerate(argv):
        if a == "-name" and i + 1 < len(argv):
            name = argv[i + 1].split(",", 1)[0]
            if name.startswith("guest="):
                name = name[6:]
            if name.startswith("sandbox-"):
                return name[len("sandbox-"):]
    return None


def _read(paths: HostPaths, host_path: str, limit: int = 65536) -> bytes | None:
    try:
        return paths.read_bytes(host_path, limit)
    except OSError:  # exited, or refused (noted in paths.refusals for the source to report)
        return None


def read_comm(paths: HostPaths, pid: int) -> str | None:
    """`/proc/<pid>/comm` (one small read; the cheapest per-process look); None when it exited."""
    raw = _read(paths, f"/proc/{pid}/comm", 64)
    return raw.decode("utf-8", "replace").rstrip("\n") if raw is not None else None


def read_link(paths: HostPaths, pid: int, name: str) -> str:
    """Target of `/proc/<pid>/<name>` (`exe`, `cwd`, `root`): a magic link's name, read as a
    link, never followed; empty when unreadable."""
    try:
        return paths.readlink(f"/proc/{pid}/{name}")
    except OSError:
        return ""


def read_argv(paths: HostPaths, pid: int) -> list[str]:
    raw = _read(paths, f"/proc/{pid}/cmdline")
    if not raw:
        return []
    return [a.decode("utf-8", "replace") for a in raw.rstrip(b"\0").split(b"\0")]


def read_environ(paths: HostPaths, pid: int) -> dict[str, str]:
    raw = _read(paths, f"/proc/{pid}/environ", 1 << 20)
    out: dict[str, str] = {}
    if raw:
        for item in raw.split(b"\0"):
            k, sep, v = item.partition(b"=")
            if sep:
                out[k.decode("utf-8", "replace")] = v.decode("utf-8", "replace")
    return out


def ns_inode(paths: HostPaths, host_path: str) -> int | None:
    """The namespace inode of `/proc/<pid>/ns/net` (its magic link's text, `net:[4026531833]`:
    cheaper than a stat on a busy /proc) or of a bind-mounted `/run/netns/<name>` (its inode)."""
    try:
        link = paths.readlink(host_path)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: no link, a bind mount
            return None
        try:
            return paths.stat(host_path).st_ino
        except OSError:
            return None
    if link.startswith("net:[") and link.endswith("]"):
        try:
            return int(link[5:-1])
        except ValueError:
            return None
    return None


def netns_inode(paths: HostPaths, pid: int) -> int | None:
    return ns_inode(paths, f"/proc/{pid}/ns/net")


def iter_pids(paths: HostPaths) -> Iterator[int]:
    try:
        names = paths.listdir("/proc")
    except OSError:
        return
    for n in names:
        if n.isdigit():
            yield int(n)


def read_process(paths: HostPaths, pid: int, *, with_ancestry: bool = True) -> ev.Process | None:
    """Everything /proc says about `pid`; None when it has exited."""
    stat = _read(paths, f"/proc/{pid}/stat")
    if stat is None:
        return None
    comm, ppid = parse_stat(stat.decode("utf-8", "replace"))
    exe = read_link(paths, pid, "exe")
    argv = read_argv(paths, pid)
    cg_raw = _read(paths, f"/proc/{pid}/cgroup")
    cg = parse_cgroup(cg_raw.decode("utf-8", "replace")) if cg_raw else CgroupIdentity()
    sid, runtime = kata_shim_identity(argv, exe, comm)
    if sid is None and comm in VMM_COMMS:
        sid = vmm_sandbox(argv)
    ancestry: tuple[str, ...] = ()
    if with_ancestry:
        chain = []
        cur = ppid
        for _ in range(8):
            if not cur or cur <= 1:
                if cur == 1:
                    st = _read(paths, "/proc/1/stat")
                    chain.append(parse_stat(st.decode("utf-8", "replace"))[0] if st else "init")
                break
            st = _read(paths, f"/proc/{cur}/stat")
            if st is None:
                break
            c, cur = parse_stat(st.decode("utf-8", "replace"))
            chain.append(c)
        ancestry = tuple(chain)
    return ev.Process(
        pid=pid, ppid=ppid, comm=comm, exe=exe, cmdline=" ".join(argv)[:512],
        cgroup=cg.path, container_id=cg.container_id, pod=None,
        sandbox_id=sid, kata_runtime=runtime, ancestry=ancestry,
    )


class ProcessTable:
    """A cache of process identities, seeded from /proc at start so earlier processes are known.

    Short-lived writers (an `echo` from a shell) may exit before we look: `remember` keeps what
    the probe saw (pid, comm) and fills the rest from the parent, which usually still lives.
    """

    def __init__(self, paths: HostPaths, limit: int = 65536) -> None:
        self.paths = paths
        self.limit = limit
        self._by_pid: dict[int, ev.Process] = {}

    def seed(self) -> int:
        for pid in iter_pids(self.paths):
            p = read_process(self.paths, pid, with_ancestry=False)
            if p is not None:
                self._by_pid[pid] = p
        return len(self._by_pid)

    def lookup(self, pid: int, *, comm: str = "", refresh: bool = False) -> ev.Process:
        """Best identity for `pid`; reads /proc when not cached (or on refresh)."""
        cached = self._by_pid.get(pid)
        if cached is not None and not refresh and (not comm or cached.comm == comm):
            return cached
        p = read_process(self.paths, pid)
        if p is None:
            p = cached or ev.Process(pid=pid, comm=comm)
        if len(self._by_pid) >= self.limit:
            self._by_pid.pop(next(iter(self._by_pid)))
        self._by_pid[pid] = p
        return p

    def forget(self, pid: int) -> None:
        self._by_pid.pop(pid, None)

    def sandbox_of(self, pid: int) -> str | None:
        """The Kata sandbox a process belongs to: itself or its nearest shim/VMM ancestor."""
        seen = 0
        cur: int | None = pid
        while cur and cur > 1 and seen < 16:
            p = self._by_pid.get(cur) or read_process(self.paths, cur, with_ancestry=False)
            if p is None:
                return None
            if p.sandbox_id:
                return p.sandbox_id
            cur = p.ppid
            seen += 1
        return None
