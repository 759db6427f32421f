"""Provides inotify for the sources: directories watched under --root, and the pure event decoder.

* `decode_inotify(data)` is pure: the bytes of one read() of an inotify descriptor to
  InotifyEvents (`struct inotify_event`: wd, mask, cookie, len, name); tested on events
  recorded on this machine kind (tests/fixtures/inotify).
* `Inotify` is thin: a non-blocking inotify descriptor (libc's inotify_init1/add_watch through
  ctypes; Python has no binding). A directory is added by a descriptor, never by a path the
  kernel would resolve itself: HostPaths opens it inside --root (the confined walk), then the
  watch is placed on `/proc/self/fd/<fd>`, the agent's own handle of exactly that directory.
  So a tree under --root cannot point a watch outside it.
* `WatchSet` keeps a set of wanted directories watched: each one itself when it exists, or
  else its nearest existing parent (to see it appear), and follows them as they come and go.

Cost: nothing while nothing changes (the descriptor is polled with the source's others); one
watch per directory (kernel memory, about 1 KiB each), bounded by `fs.inotify.max_user_watches`.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import posixpath
import stat
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from diag.common.paths import HostPaths, OutsideRoot

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_CLOSE_NOWRITE = 0x00000010
IN_OPEN = 0x00000020
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

CHANGES = (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
           | IN_DELETE_SELF | IN_MOVE_SELF)
"""What a directory of files written whole needs: never IN_MODIFY (a file half written is
read when its writer closes it) and never IN_OPEN/IN_ACCESS (the agent's own reads)."""
OPENS = IN_OPEN | IN_CLOSE_WRITE | IN_CLOSE_NOWRITE
"""Opens and last closes of a directory's entries (/dev/vfio/<group>: a holder comes or goes)."""

_NAMES = {
    IN_ACCESS: "ACCESS", IN_MODIFY: "MODIFY", IN_ATTRIB: "ATTRIB", IN_CLOSE_WRITE: "CLOSE_WRITE",
    IN_CLOSE_NOWRITE: "CLOSE_NOWRITE", IN_OPEN: "OPEN", IN_MOVED_FROM: "MOVED_FROM",
    IN_MOVED_TO: "MOVED_TO", IN_CREATE: "CREATE", IN_DELETE: "DELETE", IN_DELETE_SELF: "DELETE_SELF",
    IN_MOVE_SELF: "MOVE_SELF", IN_UNMOUNT: "UNMOUNT", IN_Q_OVERFLOW: "Q_OVERFLOW",
    IN_IGNORED: "IGNORED", IN_ISDIR: "ISDIR",
}

_EVENT = struct.Struct("=iIII")


class MalformedInotify(ValueError):
    """Bytes that are not a sequence of whole inotify events."""


@dataclass(frozen=True, slots=True)
class InotifyEvent:
    """One inotify event: on watch `wd`, about entry `name` of its directory ("" = the
    directory itself)."""

    wd: int
    mask: int
    cookie: int
    name: str

    @property
    def flags(self) -> tuple[str, ...]:
        """The mask's bits by name (for messages and tests)."""
        return tuple(n for bit, n in _NAMES.items() if self.mask & bit)

    @property
    def is_dir(self) -> bool:
        return bool(self.mask & IN_ISDIR)


def decode_inotify(data: bytes) -> list[InotifyEvent]:
    """Pure: the events in the bytes of one read() (names are NUL-padded to `len`)."""
    out: list[InotifyEvent] = []
    off, n = 0, len(data)
    while off < n:
        if off + _EVENT.size > n:
            raise MalformedInotify(f"{n - off} bytes at {off}: shorter than an event header")
        wd, mask, cookie, length = _EVENT.unpack_from(data, off)
        off += _EVENT.size
        if off + length > n:
            raise MalformedInotify(f"event at {off - _EVENT.size}: name of {length} bytes runs past {n}")
        raw = data[off:off + length]
        out.append(InotifyEvent(wd, mask, cookie, raw.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")))
        off += length
    return out


# ---- I/O --------------------------------------------------------------------------------------

_libc_handle: ctypes.CDLL | None = None


def _libc() -> ctypes.CDLL:
    global _libc_handle
    if _libc_handle is None:
        _libc_handle = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        _libc_handle.inotify_add_watch.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32)
        _libc_handle.inotify_rm_watch.argtypes = (ctypes.c_int, ctypes.c_int)
    return _libc_handle


class Inotify:
    """A non-blocking inotify descriptor (poll `fileno()`, then `read()`)."""

    def __init__(self) -> None:
        fd = _libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            e = ctypes.get_errno()
            raise OSError(e, f"inotify_init1: {os.strerror(e)}")
        self.fd: int = fd
        self.overflows = 0
        self.malformed = 0

    def fileno(self) -> int:
        return self.fd

    def add_fd(self, dir_fd: int, mask: int) -> int:
        """Watch the directory open at `dir_fd` (any kind of descriptor, O_PATH included)."""
        wd = _libc().inotify_add_watch(self.fd, f"/proc/self/fd/{dir_fd}".encode(), mask | IN_ONLYDIR)
        if wd < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        return int(wd)

    def add(self, paths: HostPaths, host_dir: str, mask: int) -> tuple[int, str]:
        """Watch directory `host_dir` under the root; returns (wd, its resolved host path).
        OSError when it does not exist or is refused (OutsideRoot, noted by `paths`)."""
        with paths.opendir(host_dir) as d:
            return self.add_fd(d.fd, mask), d.host_path

    def remove(self, wd: int) -> None:
        _libc().inotify_rm_watch(self.fd, wd)  # a watch already gone (IN_IGNORED) answers EINVAL

    def read(self) -> list[InotifyEvent]:
        """Every event queued now (IN_Q_OVERFLOW is counted in `overflows` and returned)."""
        out: list[InotifyEvent] = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return out
            except InterruptedError:
                continue
            if not data:
                return out
            try:
                evs = decode_inotify(data)
            except MalformedInotify:
                self.malformed += 1
                continue
            for e in evs:
                if e.mask & IN_Q_OVERFLOW:
                    self.overflows += 1
            out.extend(evs)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


@dataclass(frozen=True, slots=True)
class Want:
    """A directory a source wants to hear about, and the entries that matter (None: all)."""

    dir: str
    names: frozenset[str] | None = None
    tag: str = ""
    """What a change there means to the source (`config`, `state`, `holders`, ...)."""
    mask: int = CHANGES


@dataclass(slots=True)
class _Watch:
    wd: int
    host_dir: str
    """Resolved host path of the watched directory."""
    mask: int
    relevant: dict[str, frozenset[str] | None] = field(default_factory=dict)
    """tag -> names that matter there (None: every name)."""


class WatchSet:
    """Directories watched for a source: each wanted one, or its nearest existing parent.

    `sync(wants)` places the wants not placed yet, those watched through a parent so far (the
    wanted directory may exist now) and those whose watch went away, and drops the watches
    nobody wants any more: a sync with nothing new costs a set difference. `tags(events)` says
    which kinds of change a batch of events carries. Call `sync` after every batch of events,
    before reading what they announced.
    """

    def __init__(self, inotify: Inotify, paths: HostPaths) -> None:
        self.inotify = inotify
        self.paths = paths
        self.by_wd: dict[int, _Watch] = {}
        self._placed: dict[Want, tuple[int, frozenset[str] | None, bool]] = {}
        """want -> (wd, names that matter in that directory, watched as itself)."""
        self._stale = False
        self._retry: set[int] = set()
        """Watches that reported a relevant change since the last sync."""
        self._dropped = False
        """The kernel dropped a watch since the last sync (IN_IGNORED)."""
        self.errors: dict[Want, str] = {}
        """Why a wanted directory could not be watched at all (refused, watch limit)."""
        self.moved_tags: set[str] = set()
        """The tags of the wants the last `sync` placed or moved (what the caller reads again)."""

    def _place(self, want: Want) -> tuple[int, frozenset[str] | None, bool] | None:
        """Watch `want.dir` or its nearest existing parent: (wd, names that matter, exact)."""
        d = posixpath.normpath(want.dir)
        child = ""
        mask = want.mask | CHANGES
        while True:
            try:
                wd, real = self.inotify.add(self.paths, d, mask)
            except OutsideRoot as exc:
                self.errors[want] = str(exc)
                return None
            except (FileNotFoundError, NotADirectoryError):
                if d == "/":
                    return None
                child = posixpath.basename(d)
                d = posixpath.dirname(d)
                mask = CHANGES  # a parent only tells that the wanted directory appeared
                continue
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    self.errors[want] = f"{d}: inotify watch limit reached (fs.inotify.max_user_watches)"
                elif exc.errno in (errno.EACCES, errno.EPERM, errno.ELOOP):
                    self.errors[want] = f"{d}: {exc.strerror or exc}"
                else:
                    raise
                return None
            w = self.by_wd.get(wd)
            if w is None:
                self.by_wd[wd] = _Watch(wd, real, mask)
            elif mask & ~w.mask:
                # The same directory reached by two paths: the kernel replaces a watch's mask,
                # so ask again with the union.
                w.mask |= mask
                self.inotify.add(self.paths, d, w.mask)
            if child and self.paths.is_dir(posixpath.join(d, child)):
                # Made between the failed add and this watch: no event will tell; go down.
                d = posixpath.normpath(want.dir)
                child = ""
                mask = want.mask | CHANGES
                continue
            self.errors.pop(want, None)
            return wd, (frozenset({child}) if child else want.names), not child

    def sync(self, wants: Iterable[Want]) -> bool:
        """Watch every wanted directory (or its nearest parent); unwatch what nobody wants.
        True when a watch was placed or moved (the caller reads again: what changed before
        the new watch existed is only in what it reads now)."""
        wanted = set(wants)
        placed = self._placed
        # A want watched through a parent is placed again only when that parent said
        # something relevant (the next level may exist now): retrying every such want at
        # each round cost a walk up the tree per want (half of a Kata round in the lab).
        retry = self._retry
        todo = [w for w in wanted if w not in placed or placed[w][0] not in self.by_wd
                or (not placed[w][2] and placed[w][0] in retry) or self._stale]
        self._retry = set()
        self._dropped = False
        self.moved_tags = set()
        gone = [w for w in placed if w not in wanted]
        if not todo and not gone:
            return False
        self._stale = False
        moved = False
        for w in gone:
            del placed[w]
        for want in sorted(todo, key=lambda w: (w.dir, w.tag)):
            before = placed.pop(want, None)
            now = self._place(want)
            if now is not None:
                placed[want] = now
            if now is not None and (before is None or before[0] != now[0] or before[2] != now[2]):
                moved = True
                self.moved_tags.add(want.tag)
        for w in self.by_wd.values():
            w.relevant = {}
        for want, (wd, names, _exact) in placed.items():
            rel = self.by_wd[wd].relevant
            prev = rel.get(want.tag, frozenset())
            rel[want.tag] = None if prev is None or names is None else prev | names
        for wd in [wd for wd, w in self.by_wd.items() if not w.relevant]:
            self.inotify.remove(wd)
            del self.by_wd[wd]
        return moved

    @property
    def idle(self) -> bool:
        """Nothing happened since the last sync that a sync of the same wants would act on."""
        return not (self._retry or self._stale or self._dropped)

    def invalidate(self) -> None:
        """Place every watch again on the next sync (after an overflow)."""
        self._stale = True

    def tags(self, events: Iterable[InotifyEvent]) -> dict[str, list[InotifyEvent]]:
        """The events that matter, by tag. An overflow counts for every tag (anything may have
        changed) and marks the set for a full sync; a watched directory that vanished or
        moved counts for its tags."""
        out: dict[str, list[InotifyEvent]] = {}
        for e in events:
            if e.mask & IN_Q_OVERFLOW:
                self._stale = True
                for w in self.by_wd.values():
                    for tag in w.relevant:
                        out.setdefault(tag, []).append(e)
                continue
            w = self.by_wd.get(e.wd)
            if w is None:
                continue
            if e.mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT):
                if e.mask & IN_IGNORED:  # the kernel dropped the watch: place it again
                    del self.by_wd[e.wd]
                    self._dropped = True
                else:
                    self._stale = True
                for tag in w.relevant:
                    out.setdefault(tag, []).append(e)
                continue
            hit = [tag for tag, names in w.relevant.items() if names is None or e.name in names]
            if not hit:
                continue
            self._retry.add(e.wd)
            if e.mask & IN_CREATE and not e.is_dir and self._regular(w.host_dir, e.name):
                continue  # a regular file just created is still empty: its IN_CLOSE_WRITE follows
            for tag in hit:
                out.setdefault(tag, []).append(e)
        return out

    def _regular(self, host_dir: str, name: str) -> bool:
        try:
            return stat.S_ISREG(self.paths.stat(posixpath.join(host_dir, name), follow=False).st_mode)
        except OSError:
            return False

    def watched(self) -> Mapping[str, tuple[str, ...]]:
        """Resolved host directory -> its tags (for `check` and tests)."""
        return {w.host_dir: tuple(sorted(w.relevant)) for w in self.by_wd.values()}
