"""Provides HostPaths: every host path the agent reads, taken under one injectable root, confined.

Like node_exporter's `--path.rootfs`: with `--root /host` the agent reads `/host/sys`,
`/host/proc`, ... so fixture trees work in tests and a container can watch its host. Readers
name host paths (`"/sys/bus/pci/devices"`) and read them only through HostPaths' helpers
(`read_bytes`, `read_text`, `readlink`, `listdir`, `stat`, `is_dir`, `opendir`, `open_nsfs`...),
so no reader can step outside the root.

Confinement (a root other than `/`; `--root` is a trust boundary: users run it on copies of
other people's hosts). A path is walked one component at a time from the root, on directory
descriptors (`openat` with O_NOFOLLOW), reading each symlink met (at most 40, like ELOOP):

* a relative link target continues from the link's directory; an absolute one starts again at
  the root, as in a chroot (a host's `/var/run -> /run` or kata-deploy's links into /opt/kata
  mean that host's paths);
* a `..` that would climb above the root is refused (a chroot would stay at the root; no
  faithful copy of a host needs it, a hostile tree uses it to read the agent's own files);
* inside `/sys` and `/proc` an absolute link target is refused: the kernel only makes relative
  links there, and procfs's absolute-looking links (`exe`, `cwd`, `fd/N`, `ns/net`) are magic
  links whose text is a name, read with `readlink`, never followed as a path;
* what confined reads open must be a regular file (no FIFO, no device node of the agent's host);
  only `open` (for /dev/kmsg) opens another kind; /proc namespace links are opened as links
  only when their directory is a real procfs (`open_nsfs`).

A refusal raises OutsideRoot (an OSError, so no reader can crash on it) and is noted in
`refusals`, which each consumer reports where the user looks: a device's `errors` and the
`refused` list of `snapshot`, a `check` line, `record`'s summary, an in-band DecodeFailed of the
live source that met it.

With root `/` nothing can escape: every helper is the plain system call, no walk, no check.

What is not closed: `real()` hands out a resolved path string for the two readers that need one
(`os.walk` of the cgroup tree and `journalctl -D`); between that walk and their use, whoever can
write the tree could swap a directory for a link. A regular-file check runs on the entry (no
device node is ever opened), then on the opened descriptor; a swap in between opens that node
without reading it. A mount inside the root that shows outside files is the operator's own doing.
"""

from __future__ import annotations

import ctypes
import errno
import os
import posixpath
import stat
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, TypeVar

from diag.common.errors import RootError
from diag.common.text import safe

T = TypeVar("T")

MAX_LINKS = 40
"""Symlinks followed in one resolution, like the kernel's ELOOP limit."""
KERNEL_TREES = frozenset({"sys", "proc"})
"""Top-level trees where the kernel makes only relative links: an absolute one is refused."""
PROC_SUPER_MAGIC = 0x9FA0
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class OutsideRoot(OSError):
    """A path under --root that would resolve outside it: refused, never followed."""

    def __init__(self, host_path: str, why: str) -> None:
        super().__init__(errno.EXDEV, why, host_path)
        self.host_path = host_path
        self.why = why

    def __str__(self) -> str:
        return f"refused: {self.why}"


class Refusals:
    """The distinct paths refused under one HostPaths, for its consumer to report (thread-safe)."""

    LIMIT = 256
    """Distinct refusals kept; beyond it they are only counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, str] = {}
        self._new: list[str] = []
        self.total = 0

    def note(self, exc: OutsideRoot) -> None:
        with self._lock:
            self.total += 1
            if exc.host_path in self._seen or len(self._seen) >= self.LIMIT:
                return
            text = exc.why if exc.why.startswith(exc.host_path) else f"{exc.host_path}: {exc.why}"
            self._seen[exc.host_path] = text
            self._new.append(text)

    def take(self) -> list[str]:
        """Refusals noted since the last take (each distinct path once)."""
        with self._lock:
            out, self._new = self._new, []
        return out

    def all(self) -> list[str]:
        """Every distinct refusal noted so far (at most LIMIT)."""
        with self._lock:
            return list(self._seen.values())


class _Link(Exception):
    """Raised by a final operation that met a symlink the walk should follow."""


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def _procfs(fd: int) -> bool:
    """Whether `fd` is on a procfs (fstatfs f_type), so its links are the kernel's magic links."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
    if _libc().fstatfs(fd, buf) != 0:
        return False
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], "little") == PROC_SUPER_MAGIC


_LIBC: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _regular(fd: int, host_path: str) -> None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"is {kind}", host_path)


def _read_fd(fd: int, limit: int) -> bytes:
    chunks: list[bytes] = []
    left = limit
    while left > 0:
        b = os.read(fd, min(left, 1 << 20))
        if not b:
            break
        chunks.append(b)
        left -= len(b)
    return b"".join(chunks)


@dataclass(frozen=True, slots=True)
class HostPaths:
    """Host directories under `root`, and the only way readers reach them (see module docstring)."""

    root: Path = Path("/")
    refusals: Refusals = field(default_factory=Refusals, compare=False, repr=False)
    """Paths refused so far; each consumer reports them (see module docstring)."""
    base: str = field(init=False, compare=False, repr=False)
    """The root as a real directory of the agent's file system."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", os.path.realpath(self.root))

    @classmethod
    def at(cls, root: str | Path) -> HostPaths:
        return cls(Path(root))

    def fresh(self) -> HostPaths:
        """The same root with its own Refusals (one per consumer that reports them)."""
        return HostPaths(self.root)

    @property
    def confined(self) -> bool:
        """Whether reads are walked and checked (any root but `/`)."""
        return self.base != "/"

    # ---- names (for messages and for the few callers that build paths; never read through) --

    def host(self, path: str) -> Path:
        """The agent-side name of host path `path` under the root (lexical: for messages only)."""
        return self.root / path.lstrip("/")

    @property
    def sys(self) -> Path:
        return self.root / "sys"

    @property
    def proc(self) -> Path:
        return self.root / "proc"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def etc(self) -> Path:
        return self.root / "etc"

    @property
    def dev(self) -> Path:
        return self.root / "dev"

    @property
    def pci_devices(self) -> Path:
        return self.sys / "bus" / "pci" / "devices"

    # ---- the confined walk -------------------------------------------------------------------

    def refuse(self, host_path: str, why: str) -> OutsideRoot:
        """Note a refusal a reader found itself; returns the error to raise or report."""
        exc = OutsideRoot(safe(host_path), safe(why))
        self.refusals.note(exc)
        return exc

    def _walk(self, host_path: str, op: Callable[[int, str, list[str]], T]) -> T:
        """Resolve all but the last component of `host_path` inside the root, then return
        `op(dirfd, name, parts)` (`parts`: the host path of `dirfd`). When `op` raises _Link,
        the last component is a symlink to follow: its target is walked in turn."""
        todo = _parts(host_path)[::-1]
        root_fd = os.open(self.base, _DIR)
        stack = [root_fd]
        parts: list[str] = []
        links = 0
        last = rerooted = ""
        try:
            while True:
                if not todo:
                    return op(stack[-1], ".", parts)
                name = todo.pop()
                if name == "..":
                    if len(stack) == 1:
                        raise self.refuse(host_path, f"{last}: climbs above --root" if last
                                           else "`..` climbs above --root")
                    os.close(stack.pop())
                    parts.pop()
                    continue
                if not todo:
                    try:
                        return op(stack[-1], name, parts)
                    except _Link:
                        pass
                else:
                    try:
                        fd = os.open(name, _DIR, dir_fd=stack[-1])
                    except OSError as exc:
                        if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                            raise OSError(exc.errno, exc.strerror, host_path) from None
                        if not stat.S_ISLNK(os.stat(name, dir_fd=stack[-1], follow_symlinks=False).st_mode):
                            raise NotADirectoryError(errno.ENOTDIR, "Not a directory",
                                                     "/" + "/".join([*parts, name])) from None
                    else:
                        stack.append(fd)
                        parts.append(name)
                        continue
                links += 1
                if links > MAX_LINKS:
                    raise OSError(errno.ELOOP, "Too many levels of symbolic links", host_path)
                target = os.readlink(name, dir_fd=stack[-1])
                last = f"{'/' + '/'.join([*parts, name])} -> {target}"
                if target.startswith("/"):
                    top = parts[0] if parts else name
                    if top in KERNEL_TREES:
                        raise self.refuse(host_path, f"{last}: an absolute link in /{top}, "
                                                      "where kernel links are relative")
                    for fd in stack[1:]:
                        os.close(fd)
                    del stack[1:]
                    parts = []
                    rerooted = last
                todo.extend(_parts(target)[::-1])
        except FileNotFoundError:
            if rerooted:  # say why a link that exists on its host is not found here
                raise FileNotFoundError(errno.ENOENT, f"No such file or directory (through {safe(rerooted)}, "
                                        "taken under --root)", host_path) from None
            raise
        finally:
            for fd in stack:
                os.close(fd)

    # ---- resolution ------------------------------------------------------------------------

    def resolve(self, host_path: str, *, strict: bool = True) -> str:
        """`host_path` with every symlink resolved inside the root (a host path, `/`-based).

        Strict: every component must exist (FileNotFoundError otherwise). Not strict (like
        `os.path.realpath`): from the first missing component on, the rest is joined as written.
        Raises OutsideRoot when a link leads outside.
        """
        if not self.confined:
            return os.path.realpath(host_path, strict=strict)

        def op(dirfd: int, name: str, parts: list[str]) -> str:
            if name != ".":
                try:
                    st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    if strict:
                        raise FileNotFoundError(errno.ENOENT, "No such file or directory", host_path) from None
                    return "/" + "/".join([*parts, name])
                if stat.S_ISLNK(st.st_mode):
                    raise _Link
                return "/" + "/".join([*parts, name])
            return "/" + "/".join(parts)

        if strict:
            return self._walk(host_path, op)
        # Not strict: resolve the longest existing prefix, then add the rest lexically.
        comps = _parts(host_path)
        for cut in range(len(comps), -1, -1):
            head = "/" + "/".join(comps[:cut])
            try:
                real = self._walk(head, op)
            except (FileNotFoundError, NotADirectoryError):
                continue
            rest = comps[cut:]
            return posixpath.normpath(posixpath.join(real, *rest)) if rest else real
        return posixpath.normpath(host_path)

    def real(self, host_path: str) -> str:
        """The agent-side path of `host_path`, symlinks resolved inside the root (for the few
        callers that must hand a path to someone else; see the module docstring's window)."""
        if not self.confined:
            return host_path
        return self.base.rstrip("/") + self.resolve(host_path)

    # ---- reads -----------------------------------------------------------------------------

    def open(self, host_path: str, flags: int = os.O_RDONLY) -> int:
        """A descriptor of `host_path` opened with `flags` (the caller closes it). Confined, the
        resolved entry is opened with O_NOFOLLOW and no type check: for files use read_bytes,
        which refuses anything but a regular file; this is for /dev/kmsg."""
        if not self.confined:
            return os.open(host_path, flags | os.O_CLOEXEC)

        def op(dirfd: int, name: str, parts: list[str]) -> int:
            try:
                return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise _Link from None
                raise OSError(exc.errno, exc.strerror, host_path) from None

        return self._walk(host_path, op)

    def read_bytes(self, host_path: str, limit: int = 1 << 20, *, regular: bool = False) -> bytes:
        """At most `limit` bytes of a file. Confined (or with `regular`), it must be a regular
        file: a FIFO or device is refused with EINVAL, never blocked on or read."""
        if not self.confined:
            fd = os.open(host_path, os.O_RDONLY | os.O_CLOEXEC | (os.O_NONBLOCK if regular else 0))
            try:
                if regular:
                    _regular(fd, host_path)
                return _read_fd(fd, limit)
            finally:
                os.close(fd)

        def op(dirfd: int, name: str, parts: list[str]) -> bytes:
            return _read_entry(dirfd, name, host_path, limit)

        return self._walk(host_path, op)

    def open_file(self, host_path: str) -> BinaryIO:
        """A regular file opened for reading (FIFOs and devices refused), for streaming."""
        if not self.confined:
            fd = os.open(host_path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                _regular(fd, host_path)
            except OSError:
                os.close(fd)
                raise
        else:
            def op(dirfd: int, name: str, parts: list[str]) -> int:
                return _open_entry(dirfd, name, host_path)

            fd = self._walk(host_path, op)
        return open(fd, "rb")

    def read_text(self, host_path: str, limit: int = 1 << 20, *, regular: bool = False) -> str:
        """`read_bytes` decoded as UTF-8, invalid bytes replaced."""
        return self.read_bytes(host_path, limit, regular=regular).decode("utf-8", "replace")

    def readlink(self, host_path: str) -> str:
        """The text of the link `host_path` itself (its directory resolved inside the root).
        procfs's magic links (`/proc/<pid>/exe`, `cwd`, `fd/N`, `ns/net`) read so: a name."""
        if not self.confined:
            return os.readlink(host_path)

        def op(dirfd: int, name: str, parts: list[str]) -> str:
            return os.readlink(name, dir_fd=dirfd)

        return self._walk(host_path, op)

    def stat(self, host_path: str, *, follow: bool = True) -> os.stat_result:
        """stat (or lstat with follow=False) of `host_path`, links followed inside the root."""
        if not self.confined:
            return os.stat(host_path, follow_symlinks=follow)

        def op(dirfd: int, name: str, parts: list[str]) -> os.stat_result:
            try:
                st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            except OSError as exc:
                raise OSError(exc.errno, exc.strerror, host_path) from None
            if follow and stat.S_ISLNK(st.st_mode):
                raise _Link
            return st

        return self._walk(host_path, op)

    def exists(self, host_path: str) -> bool:
        try:
            self.stat(host_path)
        except OSError:
            return False
        return True

    def lexists(self, host_path: str) -> bool:
        try:
            self.stat(host_path, follow=False)
        except OSError:
            return False
        return True

    def is_dir(self, host_path: str) -> bool:
        try:
            return stat.S_ISDIR(self.stat(host_path).st_mode)
        except OSError:
            return False

    def is_file(self, host_path: str) -> bool:
        try:
            return stat.S_ISREG(self.stat(host_path).st_mode)
        except OSError:
            return False

    def is_link(self, host_path: str) -> bool:
        try:
            return stat.S_ISLNK(self.stat(host_path, follow=False).st_mode)
        except OSError:
            return False

    def listdir(self, host_path: str) -> list[str]:
        """Names in the directory `host_path` (unsorted, like os.listdir)."""
        if not self.confined:
            return os.listdir(host_path)
        with self.opendir(host_path) as d:
            return d.listdir()

    def opendir(self, host_path: str) -> HostDir:
        """An open directory: reads of its entries cost one openat each (use as a context)."""
        if not self.confined:
            return HostDir(self, host_path, os.open(host_path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))

        def op(dirfd: int, name: str, parts: list[str]) -> HostDir:
            try:
                fd = os.open(name, _DIR, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno in (errno.ENOTDIR, errno.ELOOP) and name != "." and stat.S_ISLNK(
                        os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                    raise _Link from None
                raise OSError(exc.errno, exc.strerror, host_path) from None
            return HostDir(self, "/" + "/".join(parts if name == "." else [*parts, name]), fd)

        return self._walk(host_path, op)

    def open_nsfs(self, host_path: str) -> int:
        """A descriptor of a namespace: `/proc/<pid>/ns/net` (a magic link, opened as one only
        when its directory is a real procfs) or a bind-mounted `/run/netns/<name>`."""
        if not self.confined:
            return os.open(host_path, os.O_RDONLY | os.O_CLOEXEC)

        def op(dirfd: int, name: str, parts: list[str]) -> int:
            try:
                return os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dirfd)
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise OSError(exc.errno, exc.strerror, host_path) from None
            if _procfs(dirfd):
                return os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dirfd)
            raise _Link

        return self._walk(host_path, op)

    def glob(self, pattern: str) -> list[str]:
        """Host paths matching `pattern` (`*`, `?`, `[...]` in any component), sorted."""
        import fnmatch

        found = ["/"]
        for comp in _parts(pattern):
            nxt: list[str] = []
            for base in found:
                if comp == ".." or not any(c in comp for c in "*?["):
                    nxt.append(posixpath.join(base, comp))
                    continue
                try:
                    names = self.listdir(base)
                except OSError:
                    continue
                nxt += [posixpath.join(base, n) for n in sorted(names)
                        if fnmatch.fnmatchcase(n, comp) and (comp.startswith(".") or not n.startswith("."))]
            found = nxt
        return sorted(p for p in found if self.lexists(p))

    # ---- checks ----------------------------------------------------------------------------

    def require_sysfs(self) -> None:
        """Raise RootError unless the root holds a PCI sysfs."""
        if not self.root.is_dir():
            raise RootError(
                f"{self.root} is not a directory",
                hint="pass --root a directory holding the host's file system (default /)",
            )
        if not self.is_dir("/sys/bus/pci/devices"):
            raise RootError(
                f"{self.pci_devices} does not exist: {self.root} holds no sysfs",
                hint="mount sysfs there (mount -t sysfs sysfs <root>/sys) or pass the right --root",
            )


def _open_entry(dirfd: int, name: str, host_path: str) -> int:
    """Open the regular file `name` of `dirfd` for reading (raise _Link when it is a symlink).
    Its type is checked before the open, so no device node or FIFO is ever opened."""
    try:
        st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, host_path) from None
    if stat.S_ISLNK(st.st_mode):
        raise _Link
    if not stat.S_ISREG(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
        raise OSError(errno.EINVAL, f"is {kind}", host_path)
    try:
        fd = os.open(name, _READ, dir_fd=dirfd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _Link from None
        raise OSError(exc.errno, exc.strerror, host_path) from None
    try:
        _regular(fd, host_path)  # swapped between the check and the open: refused unread
    except OSError:
        os.close(fd)
        raise
    return fd


def _read_entry(dirfd: int, name: str, host_path: str, limit: int) -> bytes:
    fd = _open_entry(dirfd, name, host_path)
    try:
        return _read_fd(fd, limit)
    finally:
        os.close(fd)


class HostDir:
    """An open directory under the root; its entries are read relative to it (one openat each).

    An entry that is a symlink is resolved by the root's walk, so the same confinement holds.
    """

    __slots__ = ("fd", "host_path", "paths")

    def __init__(self, paths: HostPaths, host_path: str, fd: int) -> None:
        self.paths = paths
        self.host_path = host_path
        self.fd = fd

    def __enter__(self) -> HostDir:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def path(self, name: str) -> str:
        return posixpath.join(self.host_path, name)

    def read_bytes(self, name: str, limit: int = 4096) -> bytes:
        """At most `limit` bytes of entry `name` (a regular file, when confined)."""
        if not self.paths.confined:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=self.fd)
            try:
                return _read_fd(fd, limit)
            finally:
                os.close(fd)
        try:
            return _read_entry(self.fd, name, self.path(name), limit)
        except _Link:
            return self.paths.read_bytes(self.path(name), limit)

    def read_text(self, name: str, limit: int = 4096) -> str:
        return self.read_bytes(name, limit).decode("utf-8", "replace")

    def readlink(self, name: str) -> str:
        """The text of the link `name` (EINVAL when it is no link)."""
        return os.readlink(name, dir_fd=self.fd)

    def link_name(self, name: str) -> str:
        """The last component of what the link `name` points at (`driver` -> `igb`), from its
        text alone: nothing is followed. Confined, a link that would lead outside the root is
        refused (OutsideRoot), as a walk through it would be."""
        target = self.readlink(name)
        if self.paths.confined:
            target = self._inside(name, target)
        return posixpath.basename(target.rstrip("/"))

    def _inside(self, name: str, target: str) -> str:
        where = self.path(name)
        parts = _parts(self.host_path)
        if target.startswith("/"):
            if parts and parts[0] in KERNEL_TREES:
                raise self.paths.refuse(where, f"{where} -> {target}: an absolute link in /{parts[0]}, "
                                                "where kernel links are relative")
            parts = []
        for p in _parts(target):
            if p == "..":
                if not parts:
                    raise self.paths.refuse(where, f"{where} -> {target}: climbs above --root")
                parts.pop()
            else:
                parts.append(p)
        return "/" + "/".join(parts)

    def listdir(self, name: str = ".") -> list[str]:
        if name == ".":
            fd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=self.fd)
        else:
            try:
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self.is_link(name):
                    return self.paths.listdir(self.path(name))
                raise OSError(exc.errno, exc.strerror, self.path(name)) from None
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def opendir(self, name: str) -> HostDir:
        try:
            fd = os.open(name, _DIR, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR) and self.is_link(name):
                return self.paths.opendir(self.path(name))
            raise OSError(exc.errno, exc.strerror, self.path(name)) from None
        return HostDir(self.paths, self.path(name), fd)

    def is_link(self, name: str) -> bool:
        try:
            return stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode)
        except OSError:
            return False

    def exists(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            return self.paths.exists(self.path(name))
        return True

    def is_dir(self, name: str) -> bool:
        try:
            st = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except OSError:
            return False
        if stat.S_ISLNK(st.st_mode):
            return self.paths.is_dir(self.path(name))
        return stat.S_ISDIR(st.st_mode)

    def entries(self) -> Iterator[str]:
        yield from self.listdir()
