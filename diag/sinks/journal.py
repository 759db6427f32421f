"""Provides the journal sink: a durable, rotating, self-contained JSON Lines record for replay.

Every file (the live one and each rotated part) starts with a `Header` line and a state
snapshot (`state_records`: the inventory with current drivers, Kata configs, namespaces, links,
sandboxes, source health and active findings), so each part replays on its own, like `rtmon`.
Then every event and finding follows, one `diag.codec` line each.

Durability, and what it costs:

* Each record is one whole line written with one `os.write` on an `O_APPEND` descriptor, so a
  kill -9 loses nothing written (it is in the page cache) and a crash can cut at most the
  last line, which replay reports as a truncated tail. A short write (disk full in the middle
  of a line) is undone with `ftruncate` so no half line is ever followed by another record.
  With `batch=True` (the agent) the lines of one batch of the core thread go out in one
  `os.write` at `end_batch()`, before the core thread waits again (a system call per event
  cost more than the core under a storm): a kill -9 then loses at most the batch in hand, as
  it loses the events still queued.
* `fdatasync` runs on a syncer thread (a slow disk never stalls the core), on a duplicate of the
  descriptor, `fsync_interval_s` (default 1 s) after a write left unsynced data, on every
  flush (a second after writes, from the runtime) and when a file is rotated or closed; so
  power loss costs about the last second. With everything synced the syncer sleeps until a
  write (no idle wake-ups). Compressed parts are synced before they replace their
  plain file. `fsync_interval_s=0` syncs every record inline (slow disks: ~ms each).
* Rotation by size (`max_bytes`, and at least a quarter of it beyond the opening snapshot, so
  a state larger than `max_bytes` cannot rotate on every record): the file is renamed to
  `<path>.<NNNNNN>` and gzip-compressed to `<path>.<NNNNNN>.gz` on a background thread; the
  newest `keep`
  parts are kept. A part left uncompressed by a crash or a stop is compressed at the next start.
  A journal left by an earlier run is rotated away at start, so every run begins a new file.
* Disk full (ENOSPC, EDQUOT): the agent keeps running; records are counted as dropped, one
  warning is logged (`journal_write_failed`), the metrics show it, and writes are retried at
  most every `retry_interval_s`. When space returns, an in-band
  `EventsLost(lost_source="journal")` and a fresh state snapshot go first, then writing resumes
  (`journal_write_resumed` is logged).
* SIGHUP (`reopen()`): the file is closed and the path opened again (after logrotate moved it,
  a new file starts with a header and a snapshot). It happens on the core thread at the next
  write or flush, within about a second.
* One writer: `<path>.lock` is flock()ed for the sink's life, with the writer's pid in it. A
  second agent on the same path is refused (JournalInUse, naming that pid) before it writes,
  rotates or deletes anything; otherwise it would rotate the first one's file away while the
  first kept writing to the deleted file. The kernel drops the lock with the process, kill -9
  included. Readers (postmortem, replay) take no lock.
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import fcntl
import gzip
import os
import queue
import re
import shutil
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from diag import codec
from diag import events as ev
from diag.common.errors import DiagError
from diag.common.faults import NO_FAULTS, Countdown, Faults
from diag.core.state import HostState

if TYPE_CHECKING:
    from diag.common.paths import HostPaths

BATCH_LINES = 4096
"""Lines a batching journal keeps at most before writing them (about 1 MB)."""

GZIP_LEVEL = 3
"""Rotated parts are compressed at this level: on journal lines it does 19x at about 1/3 of
level 6's CPU (which does 22x); under a storm, level 6 cost the agent more than the core's
rules on the other thread's core (make bench: the whole agent under a storm)."""

Report = Callable[..., None]
"""`report(level, event, **fields)`: how the sink tells the agent's log about its trouble."""

_SPACE_ERRNOS = {errno_mod.ENOSPC, errno_mod.EDQUOT, errno_mod.EFBIG}
_ARM = -2
"""On the syncer's queue: a write made the file dirty (descriptors are >= 0, -1 stops it)."""
MODE = 0o640
"""Every journal file (the live one, rotated and compressed parts, the lock) is created with
this mode, less the umask; a compressed part then takes its plain part's exact mode."""
_KEEPS_RUNNING = ("the agent keeps running, counts what it could not write and resumes by "
                  "itself")
ERRNO_HINTS: dict[int, str] = {
    errno_mod.ENOSPC: "free space on the journal's file system",
    errno_mod.EDQUOT: "raise the disk quota of the agent's user on the journal's file system, "
                      "or free space in it",
    errno_mod.EFBIG: "the file outgrew a file-size limit (ulimit -f, or the file system's): "
                     "lower --journal-max-bytes",
    errno_mod.EROFS: "the journal's file system is read-only: remount it read-write, or point "
                     "--journal at a writable directory",
    errno_mod.EACCES: "the agent may not write there: give its user write access to the "
                      "journal's directory and file, or point --journal elsewhere",
    errno_mod.EPERM: "the file refuses writes (immutable or append-only attribute, a security "
                     "module): lsattr it, or point --journal elsewhere",
    errno_mod.EIO: "the disk reported an I/O error: check the kernel log (dmesg) and the device; "
                   "the file is reopened on each retry",
    errno_mod.ENOENT: "the journal's directory is gone: recreate it (the file is reopened on "
                      "each retry)",
    errno_mod.ENOTDIR: "a component of the journal's path is not a directory: fix --journal",
    errno_mod.EISDIR: "--journal names a directory: give it a file name inside it",
    errno_mod.ESTALE: "the network file system lost the file: check the mount",
}
"""The fix for a failed journal write or open, by errno (`errno_hint`)."""


def errno_hint(code: int) -> str:
    """The one-line fix for a journal write that failed with `code`, and what the agent does."""
    fix = ERRNO_HINTS.get(code, f"{os.strerror(code)}: check the journal's path and file system")
    return f"{fix}; {_KEEPS_RUNNING}"
_PART = re.compile(r"^\.(\d{6})(\.gz)?$")


def state_records(state: HostState, ts_ns: int) -> list[ev.Event]:
    """The records that restate `state`, so a file replays on its own from its first lines.

    Each record keeps the `source` that normally produces its kind, so a replayed dashboard
    shows the same sources. Active findings are included as they stand (the core recomputes its
    own; readers of one part still see what was open).
    """
    out: list[ev.Event] = []
    if state.devices:
        out.append(ev.InventoryObserved(
            ts_ns=ts_ns, source="sysfs",
            devices=tuple(ev.replace(d.device, driver=d.driver, driver_override=d.driver_override)
                          for d in state.devices),
        ))
    out.extend(ev.KataConfigLoaded(ts_ns=ts_ns, source="kata", config=c) for c in state.kata_configs)
    out.extend(ev.KataFactsObserved(ts_ns=ts_ns, source="kata", facts=f) for f in state.kata_facts)
    out.extend(ev.NetnsAdded(ts_ns=ts_ns, source="links", netns=n) for n in state.netns)
    out.extend(
        ev.LinkChanged(ts_ns=ts_ns, source="links", ifindex=lk.ifindex, ifname=lk.ifname,
                       netns=lk.netns, operstate=lk.operstate, carrier=lk.carrier,
                       admin_up=lk.admin_up, mac=lk.mac, bdf=lk.bdf)
        for lk in state.links
    )
    out.extend(state.sandboxes)
    out.extend(
        ev.SourceStateChanged(ts_ns=ts_ns, source=s.name, name=s.name, up=s.up, mode=s.mode,
                              reason=s.reason, hint=s.hint)
        for s in state.sources
    )
    out.extend(state.active_findings)
    return out


def default_header(part: int, *, root: str = "/", started_ns: int | None = None,
                   paths: HostPaths | None = None) -> codec.Header:
    """A header for this host: agent version, hostname (or $NODE_NAME), kernel, boot id."""
    import socket

    from diag import __version__
    from diag.common.paths import HostPaths

    boot_id = ""
    with contextlib.suppress(OSError):  # under --root, confined (`paths` keeps the refusal)
        boot_id = (paths or HostPaths.at(root)).read_text("/proc/sys/kernel/random/boot_id", 256).strip()
    return codec.Header(
        agent_version=__version__,
        hostname=os.environ.get("NODE_NAME") or socket.gethostname(),
        kernel=os.uname().release,
        boot_id=boot_id,
        started_ns=started_ns if started_ns is not None else time.time_ns(),
        part=part,
    )


class JournalInUse(DiagError):
    """Another agent holds this journal's lock: a second writer would rotate its file away."""

    title = "Journal in use"


def lock_path(journal: Path) -> Path:
    """The lock file beside a journal: `<journal>.lock`."""
    return journal.with_name(journal.name + ".lock")


def lock_journal(journal: Path) -> int:
    """Take the journal's lock (flock, exclusive, never waiting) and write our pid into it;
    returns the descriptor, held for the agent's life. The kernel drops the lock when the
    process ends however it ends (kill -9 included), so a stale lock file is no obstacle.

    Raises JournalInUse naming the holder's pid when another process holds it; the lock file
    is then only opened (created if absent), never written. Readers (postmortem, replay, the
    dashboard) never take it.
    """
    path = lock_path(journal)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 512, 0).decode("utf-8", "replace").split("\n")
        finally:
            os.close(fd)
        pid = holder[0].strip() if holder and holder[0].strip().isdigit() else "unknown"
        since = f", {holder[1].strip()}" if len(holder) > 1 and holder[1].strip() else ""
        raise JournalInUse(
            f"{journal} is being written by another vfiowatch agent (pid {pid}{since}); "
            f"lock {path}", hint="stop that agent first (systemctl stop vfiowatch for the service), "
                                 "or give this one its own --journal PATH, or --no-journal") from None
    except OSError:
        os.close(fd)
        raise
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\nstarted {started}\n".encode(), 0)
    return fd


@dataclass(slots=True)
class JournalStats:
    """What the journal did; the metrics sink exports it (`vfiowatch_journal_*`)."""

    path: str = ""
    part: int = 0
    size_bytes: int = 0
    records_written: int = 0
    bytes_written: int = 0
    records_dropped: int = 0
    write_errors: dict[str, int] = field(default_factory=dict)
    """errno name -> failed writes."""
    rotations: int = 0
    syncs: int = 0
    writable: bool = True
    compress_errors: int = 0


class JournalSink:
    """Appends every event and finding to a rotating JSON Lines journal (see module docstring)."""

    name: ClassVar[str] = "journal"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = 64 * 1024 * 1024,
        keep: int = 8,
        fsync_interval_s: float = 1.0,
        retry_interval_s: float = 0.5,
        state: Callable[[], HostState | None] | None = None,
        header: Callable[[int], codec.Header] | None = None,
        report: Report | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        batch: bool = False,
        faults: Faults = NO_FAULTS,
    ) -> None:
        """`state`: the current HostState (the correlator's `snapshot`, called on the core
        thread), used for each file's opening snapshot; without it, the newest `snapshot()`
        given. `header(part)`: builds each file's header. `report(level, event, **fields)`:
        where trouble is told (the log sink's logger). Raises JournalInUse when another agent
        holds the journal (see `lock_journal`); nothing is written, rotated or deleted then.
        `batch`: keep the lines of a batch until `end_batch()` (or `flush`, `close`, or
        BATCH_LINES of them), and write them at once.
        `faults`: after `journal_fail_after` write attempts, the next `journal_fail_writes` fail
        with EIO (tests; diag.common.faults)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd: int | None = lock_journal(self.path)
        self._unlock = threading.Lock()
        self._workers = 2
        """Background threads (gzip, fsync) still running: the lock is kept while any writes."""
        self._closed = False
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync_interval_s = fsync_interval_s
        self.retry_interval_s = retry_interval_s
        self._state_fn = state
        started_ns = clock_ns()
        self._header_fn = header or (lambda part: default_header(part, started_ns=started_ns))
        self._report: Report = report or (lambda level, event, **fields: None)
        self._clock = clock_ns
        self._inject = Countdown(faults.journal_fail_after, faults.journal_fail_writes)
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._start_size = 0
        """Size of the header and state snapshot: a part holds at least max_bytes/4 beyond it,
        so a state bigger than max_bytes cannot make every record rotate."""
        self._part = 0
        self._need_start = False
        self._dropped = 0
        """Records not written since the journal started failing (told in-band on recovery)."""
        self._failing = False
        self._fail_errno = 0
        self._next_retry = 0.0
        self._dirty = False
        self._last_state: HostState | None = None
        self._reopen = threading.Event()
        self._last_ts = 0
        self._batch = batch
        self._pending: list[ev.Event] = []
        self.stats = JournalStats(path=str(self.path))
        self._compress_q: queue.Queue[Path | None] = queue.Queue()
        self._sync_q: queue.Queue[int] = queue.Queue()
        """Duplicated descriptors to fdatasync and close; -1 stops the syncer, _ARM says a
        write made the file dirty (the syncer sleeps without a timeout until then)."""
        self._start_workers()
        self._take_over()

    def _start_workers(self) -> None:
        """The gzip and fdatasync threads (the core thread never waits for either)."""
        self._compressor = threading.Thread(target=self._worker(self._compress_loop),
                                            name="vfiowatch-gzip", daemon=True)
        self._compressor.start()
        self._syncer = threading.Thread(target=self._worker(self._sync_loop), name="vfiowatch-fsync",
                                        daemon=True)
        self._syncer.start()

    def _take_over(self) -> None:
        """An earlier run's parts are compressed and its file kept as a part; then a new file."""
        for leftover in self._parts(compressed=False):
            self._compress_q.put(leftover)
        if self.path.exists() and self.path.stat().st_size > 0:
            self._rotate_away()  # an earlier run's file: keep it as a part, start afresh
        with self._lock:
            self._open()
            self._emit([], self._clock())

    # ---- Sink protocol ------------------------------------------------------------------------

    def write(self, item: ev.Event, /) -> None:
        if self._batch:
            pending = self._pending
            pending.append(item)
            if len(pending) >= BATCH_LINES:
                self.end_batch()
            return
        self._write([codec.dumps(item)], item.ts_ns, 1)

    def write_batch(self, items: list[ev.Event], /) -> None:
        """`write` each of `items`, in order (the runtime hands a batch as one list)."""
        if not self._batch:
            for item in items:
                self.write(item)
            return
        pending = self._pending
        pending.extend(items)
        if len(pending) >= BATCH_LINES:
            self.end_batch()

    def end_batch(self) -> None:
        """Write the records kept since the last batch: encoded together, one `os.write` (cut
        where the file reaches `max_bytes`, so parts still rotate at about that size)."""
        items = self._pending
        if not items:
            return
        self._pending = []
        blob = codec.dumps_lines(items)
        if self._size + len(blob) < self.max_bytes:
            self._write([blob], items[-1].ts_ns, len(items))
            return
        chunk: list[bytes] = []
        size = 0
        for item in items:
            line = codec.dumps(item)
            chunk.append(line)
            size += len(line)
            if self._size + size >= self.max_bytes:
                self._write(chunk, item.ts_ns, len(chunk))
                chunk, size = [], 0
        if chunk:
            self._write(chunk, items[-1].ts_ns, len(chunk))

    def _write(self, lines: list[bytes], ts_ns: int, records: int) -> None:
        with self._lock:
            if self._reopen.is_set():
                self._do_reopen()
            self._emit(lines, ts_ns, records)
            if self._size >= self.max_bytes and self._fd is not None and not self._failing \
                    and self._size - self._start_size >= self.max_bytes // 4:
                self._rotate()

    def snapshot(self, state: HostState, /) -> None:
        self._last_state = state

    def flush(self) -> None:
        self.end_batch()
        with self._lock:
            if self._reopen.is_set():
                self._do_reopen()
            elif self._failing:
                self._emit([], self._clock())  # retry while idle, so space returning is noticed
            self._hand_off_sync()

    def close(self) -> None:
        self.end_batch()
        with self._lock:
            self._hand_off_sync()
            self._close_fd()
        self._sync_q.put(-1)
        self._compress_q.put(None)
        # Bounded: data not yet on disk is in the page cache and survives the process; a part
        # still compressing is finished at the next start.
        self._syncer.join(timeout=0.3)
        self._compressor.join(timeout=0.2)
        with self._unlock:
            self._closed = True
            self._release_if_done()

    def _worker(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            finally:
                with self._unlock:
                    self._workers -= 1
                    self._release_if_done()

        return run

    def _release_if_done(self) -> None:
        """Drop the journal's lock once closed and no thread of ours still writes here (a
        part still compressing keeps it): a next agent never compresses a part beside us."""
        if self._closed and self._workers == 0 and self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def reopen(self) -> None:
        """SIGHUP: thread-safe; done on the core thread at the next write or flush."""
        self._reopen.set()

    def wants_flush(self) -> bool:
        """Business for a flush although nothing new was written (the runtime flushes only after
        writes): a reopen asked for, or writes failing (retried at each flush, so space coming
        back is noticed while idle)."""
        return self._failing or self._reopen.is_set()

    # ---- writing ------------------------------------------------------------------------------

    def _state(self) -> HostState | None:
        if self._state_fn is not None:
            try:
                return self._state_fn()
            except Exception:  # a snapshot failure must not cost the journal
                pass
        return self._last_state

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, MODE)
            self._size = os.fstat(fd).st_size
        except OSError as exc:
            self._fail(exc, 0)
            return False
        self._fd = fd
        self._need_start = self._size == 0
        self.stats.size_bytes = self._size
        return True

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _emit(self, payload: list[bytes], ts_ns: int, records: int | None = None) -> None:
        """Write `payload` (whole lines: `records` of them, default one per element), preceded
        by what the file or a recovery needs."""
        n_records = len(payload) if records is None else records
        self._last_ts = max(self._last_ts, ts_ns)
        if self._failing or self._fd is None:
            now = time.monotonic()
            if now < self._next_retry:
                self._drop(n_records)
                return
            self._next_retry = now + self.retry_interval_s
            if self._fd is None and not self._open():
                self._drop(n_records)
                return
        fd = self._fd
        assert fd is not None
        lines = self._preamble(ts_ns) if self._need_start or self._dropped else []
        n_pre = len(lines)
        if not lines and not payload:
            return
        data = b"".join(lines + payload) if lines or len(payload) != 1 else payload[0]
        try:
            if self._inject():
                raise OSError(errno_mod.EIO, "injected fault ([faults] journal_fail_writes)")
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno_mod.ENOSPC, os.strerror(errno_mod.ENOSPC))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._size)  # never leave a half line for the next to follow
            if exc.errno not in _SPACE_ERRNOS:
                self._close_fd()  # EIO, EBADF, a vanished file system: reopen on retry
            self._fail(exc, n_records)
            return
        self._written(fd, n, n_pre + n_records)

    def _preamble(self, ts_ns: int) -> list[bytes]:
        """What goes before the records: a new part's header, the loss after a failure, and the
        state restated (the part then replays on its own)."""
        lines: list[bytes] = []
        state = self._state()
        restated = [codec.dumps(r) for r in state_records(state, ts_ns)] if state else []
        if self._need_start:
            hdr = ev.replace(self._header_fn(self._part), part=self._part,
                          snapshot_records=len(restated))
            lines.append(codec.dumps(hdr))
        if self._dropped:
            lines.append(codec.dumps(ev.EventsLost(
                ts_ns=ts_ns, source="journal", lost_source="journal", count=self._dropped,
                reason=f"journal writes failed: {errno_mod.errorcode.get(self._fail_errno, '?')}"
                       f" ({os.strerror(self._fail_errno) if self._fail_errno else ''})",
            )))
        return lines + restated

    def _written(self, fd: int, n: int, records: int) -> None:
        """Account for `n` bytes of `records` written; a recovery is told, a sync done if due."""
        self._size += n
        if not self._dirty and self.fsync_interval_s:
            self._sync_q.put(_ARM)  # the syncer sleeps without a timeout while all is synced
        self._dirty = True
        st = self.stats
        st.size_bytes = self._size
        st.bytes_written += n
        st.records_written += records
        if self._need_start:
            self._start_size = self._size
        self._need_start = False
        if self._failing:
            self._report("info", "journal_write_resumed", path=str(self.path),
                         dropped=self._dropped)
            self._dropped = 0
            self._failing = False
            self._fail_errno = 0
            st.writable = True
        if self.fsync_interval_s == 0:
            with contextlib.suppress(OSError):
                os.fdatasync(fd)
                st.syncs += 1
            self._dirty = False

    def _drop(self, n: int) -> None:
        self._dropped += n
        self.stats.records_dropped += n

    def _fail(self, exc: OSError, n: int) -> None:
        code = exc.errno or errno_mod.EIO
        name = errno_mod.errorcode.get(code, str(code))
        st = self.stats
        st.write_errors[name] = st.write_errors.get(name, 0) + 1
        first = not self._failing
        self._failing = True
        st.writable = False
        self._fail_errno = code
        self._drop(n)
        self._next_retry = time.monotonic() + self.retry_interval_s
        if first:
            self._report(
                "error", "journal_write_failed", path=str(self.path), errno=name,
                reason=os.strerror(code), hint=errno_hint(code),
            )

    def _hand_off_sync(self) -> None:
        """(lock held) Queue the current file for an fdatasync by the syncer thread."""
        if self._fd is not None and self._dirty:
            with contextlib.suppress(OSError):
                self._sync_q.put(os.dup(self._fd))
            self._dirty = False

    def _sync_loop(self) -> None:
        interval = self.fsync_interval_s or 1.0
        armed = False  # unsynced data may be waiting: sync it within `interval`
        while True:
            try:
                fd = self._sync_q.get(timeout=interval if armed else None)
            except queue.Empty:
                with self._lock:
                    self._hand_off_sync()
                armed = False
                continue
            if fd == _ARM:
                armed = True
                continue
            if fd < 0:
                return
            try:
                os.fdatasync(fd)
                self.stats.syncs += 1
            except OSError:
                pass
            finally:
                os.close(fd)

    # ---- rotation, reopen, compression ---------------------------------------------------------

    def _parts(self, *, compressed: bool) -> list[Path]:
        out = []
        base = self.path.name
        for p in self.path.parent.glob(base + ".*"):
            m = _PART.match(p.name[len(base):])
            if m and bool(m.group(2)) == compressed:
                out.append(p)
        return sorted(out)

    def _next_part_path(self) -> Path:
        base = self.path.name
        seqs = [0]
        for p in self.path.parent.glob(base + ".*"):
            m = _PART.match(p.name[len(base):])
            if m:
                seqs.append(int(m.group(1)))
        return self.path.with_name(f"{base}.{max(seqs) + 1:06d}")

    def _rotate_away(self) -> None:
        target = self._next_part_path()
        os.rename(self.path, target)
        self._compress_q.put(target)

    def _rotate(self) -> None:
        self._hand_off_sync()
        self._close_fd()
        try:
            self._rotate_away()
        except FileNotFoundError:
            pass  # moved away by someone else (logrotate before its SIGHUP): just start anew
        except OSError as exc:
            self._fail(exc, 0)
            return
        self.stats.rotations += 1
        self._part += 1
        self.stats.part = self._part
        if self._open():
            self._emit([], self._last_ts)

    def _do_reopen(self) -> None:
        self._reopen.clear()
        self._hand_off_sync()
        self._close_fd()
        if self._open():
            if self._need_start:
                self._part += 1
                self.stats.part = self._part
            self._emit([], self._last_ts)
            self._report("info", "journal_reopened", path=str(self.path), part=self._part)

    def _compress_loop(self) -> None:
        while True:
            src = self._compress_q.get()
            if src is None:
                return
            dst = src.with_name(src.name + ".gz")
            tmp = src.with_name(src.name + ".gz.tmp")
            try:
                with open(src, "rb") as fi:
                    # The compressed part has exactly its plain part's mode (the live file's):
                    # created private, then fchmod, which the umask does not narrow or widen.
                    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                                 | os.O_NOFOLLOW, 0o600)
                    with open(fd, "wb") as raw:
                        os.fchmod(fd, stat.S_IMODE(os.fstat(fi.fileno()).st_mode))
                        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL) as fo:
                            shutil.copyfileobj(fi, fo, 1 << 20)
                        raw.flush()
                        os.fsync(raw.fileno())  # durable before it replaces the plain part
                os.rename(tmp, dst)
                os.unlink(src)
            except OSError as exc:
                self.stats.compress_errors += 1
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                self._report("warning", "journal_compress_failed", path=str(src),
                             reason=str(exc), hint="the part is kept uncompressed")
                continue
            self._prune()

    def _prune(self) -> None:
        parts = self._parts(compressed=True)
        for old in parts[: max(0, len(parts) - self.keep)]:
            with contextlib.suppress(OSError):
                os.unlink(old)


def journal_records(path: str | os.PathLike[str]) -> Any:
    """Convenience for tests and tools: (records, ReadStats) of one journal file (plain or .gz)."""
    p = Path(path)
    opener: Any = gzip.open if p.suffix == ".gz" else open
    st = codec.ReadStats()
    with opener(p, "rb") as fh:
        recs = list(codec.iter_records(fh, st))
    return recs, st
