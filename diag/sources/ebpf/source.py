"""Provides the `ebpf` source: who wrote each PCI driver-control file in sysfs (SysfsWriteObserved).

Two modes, chosen at start by asking the kernel what exists (bcc-tools style) and forcible with
the option `mode` (`auto`, `kprobe`, `tracepoint`):

- `kprobe` (probes/sysfs_store_kprobe.bpf.c): kprobes on the driver core's and PCI's store
  handlers. They see the device or driver itself, every path and io_uring, and cost nothing on
  unrelated syscalls. Needs CONFIG_KPROBES.
- `tracepoint`, for kernels without kprobes, in one of two variants (option
  `tracepoint_variant`):
  - `open-only` (default, probes/sysfs_open_tp.bpf.c): syscall tracepoints on the opens only;
    who opened which control file for writing. No program runs on write(2) or any other
    syscall, which is what keeps unrelated syscalls within 1.25x. Values are recovered and
    marked so: driver_override, sriov_numvfs and sriov_drivers_autoprobe are read back here;
    the device a bind/unbind/drivers_probe/new_id was about is taken by the core from the
    kernel's bind/unbind uevent that follows. A failed write's value and errno are not seen.
  - `complete` (probes/sysfs_write_tp.bpf.c): the opens followed through dup/close to the
    write, whose value and result are read at its exit by one raw sys_exit program that runs
    on every syscall (about 1.5x on an unrelated 1-byte write). For hosts that need the errno
    of failed writes and can pay for it.
  Paths are resolved here (cwd, symlinks).

Process identity comes from diag.sources.proc.ProcessTable (seeded from /proc at start), plus
what the probe saw (comm, parent tgid, cgroup id) for writers that exited before we looked.
Losses (ring buffer full, tracking table full) are counted in the kernel and emitted in-band
as EventsLost.
"""

from __future__ import annotations

import importlib.resources
import os
import posixpath
import select
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from diag import events as ev
from diag.common.bdf import is_bdf
from diag.common.errors import ConfigError, ProbeLoadError
from diag.sources import Availability, Emit, SourceContext, check_options, refusal_events, register
from diag.sources._wake import StopRelay
from diag.sources.ebpf import bcc_facade
from diag.sources.ebpf import decode as D
from diag.sources.ebpf import layouts as L
from diag.sources.ebpf.mode import (
    ESSENTIAL_HANDLERS,
    KPROBE_HANDLERS,
    MODES,
    KernelFacts,
    ModeChoice,
    choose_mode,
    gather_facts,
    syscall_defines,
    variant_note,
)
from diag.sources.proc import ProcessTable, parse_cgroup
from diag.sources.watermark import Watermark

SOURCE = "ebpf"
OPTIONS = ("mode", "tracepoint_variant", "poll_ms", "gc_interval_s", "lag_ms")
LAG_MS = 5.0
"""Default longest time from a record's kernel stamp to this thread reading it (the ring
buffer's wake-up, and the interpreter switch interval of 5 ms): the other sources' events wait
this long for the eBPF records stamped before them. Raise it on a slow or overloaded machine
(`[sources.ebpf] lag_ms`); a record later than that is merged as late (counted)."""
TRACEPOINT_PROBE = "sysfs_write_tp.bpf.c"
OPEN_ONLY_PROBE = "sysfs_open_tp.bpf.c"
VARIANTS = ("open-only", "complete")
DEFAULT_VARIANT = "open-only"
READBACK_DELAY_S = 0.1
"""The open-only variant reads driver_override & co. back this long after the open."""
KPROBE_PROBE = "sysfs_store_kprobe.bpf.c"



def probes_dir() -> Path:
    """The probe sources: inside the wheel (diag/_probes) or, from a checkout, the repo's probes/."""
    try:
        res = importlib.resources.files("diag").joinpath("_probes")
        if res.is_dir():
            return Path(str(res))
    except (ModuleNotFoundError, OSError, TypeError):
        pass
    return Path(__file__).resolve().parents[3] / "probes"


# ---- the source ------------------------------------------------------------------------------


class _Lru(OrderedDict[int, str]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def put(self, k: int, v: str) -> None:
        self[k] = v
        self.move_to_end(k)
        while len(self) > self.limit:
            self.popitem(last=False)


@dataclass(slots=True)
class EbpfStats:
    records: int = 0
    emitted: int = 0
    dropped_not_sysfs: int = 0
    decode_failed: int = 0
    lost_ringbuf: int = 0
    lost_table: int = 0
    gc_removed: int = 0


@register
class EbpfSource:
    """Attribution of sysfs driver-control writes by eBPF.

    Options: `mode` (`auto` default, `kprobe`, `tracepoint`), `tracepoint_variant`
    (`open-only` default: opens only, values recovered afterwards; `complete`: values and
    results of every write, at a cost on every syscall), `poll_ms` (the longest the loop
    sleeps when no record comes, default 500: a record wakes it at once), `gc_interval_s`
    (drop tracked fds of exited processes, default 2), `lag_ms` (see LAG_MS, default 5).
    """

    name: ClassVar[str] = SOURCE
    reports_up: ClassVar[bool] = True
    """Up only once the programs are loaded and attached (run() says so in-band): until then
    the runtime reports it starting, so a failed load is never preceded by an "up"."""

    def __init__(self, ctx: SourceContext | None = None) -> None:
        ctx = ctx or SourceContext()
        self.paths = ctx.paths
        opts = ctx.options
        check_options(self.name, opts, OPTIONS)
        self.requested = str(opts.get("mode", "auto"))
        if self.requested not in MODES:
            raise ConfigError(f"unknown ebpf mode {self.requested!r}",
                              hint="[sources.ebpf] mode takes: " + ", ".join(MODES))
        self.variant = str(opts.get("tracepoint_variant", DEFAULT_VARIANT))
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown ebpf tracepoint_variant {self.variant!r}",
                              hint="[sources.ebpf] tracepoint_variant takes: " + ", ".join(VARIANTS))
        self.poll_ms = int(opts.get("poll_ms", 500))
        self.gc_interval_s = float(opts.get("gc_interval_s", 2.0))
        self.watermark = Watermark(lag_ns=int(float(opts.get("lag_ms", LAG_MS)) * 1_000_000))
        """How far this source's stream is complete: records are stamped in the kernel and
        read when the poll wakes, so it lags the clock by `lag_ms`; a record held for its
        read-back holds it at that record's stamp."""
        self.stats = EbpfStats()
        self.mode = ""
        self.table = ProcessTable(self.paths)
        self._cwd = _Lru(8192)
        self._cgroups: dict[int, str] = {}
        self._cgroup_walked = 0.0
        self._wall_offset_ns = 0
        self._emit: Emit | None = None
        self._facts: KernelFacts | None = None
        self._delayed: list[tuple[float, ev.SysfsWriteObserved]] = []
        self.ready = threading.Event()
        """Set once the probe is attached (tests wait for it before writing)."""
        self.closed = threading.Event()
        """Set once the programs of the last run are detached and freed (after run() returns:
        the detach runs on a thread of its own)."""

    def facts(self) -> KernelFacts:
        if self._facts is None:
            self._facts = gather_facts(self.paths)
        return self._facts

    def probe(self) -> Availability:
        choice = self._choice()
        # The runtime reports this as the source's first "up": say that attribution waits for
        # the compile and attach (seconds; a minute under emulation), which end in "attached".
        reason = (f"starting: compiling and attaching, writes are attributed once attached: "
                  f"{choice.reason}")
        return Availability(bool(choice.mode), reason=reason if choice.mode else choice.reason,
                            hint=choice.hint, mode=choice.mode)

    def _choice(self) -> ModeChoice:
        choice = choose_mode(self.requested, self.facts())
        if choice.mode == "tracepoint":
            return ModeChoice("tracepoint", choice.reason + "; " + variant_note(self.variant))
        return choice

    # ---- loop -------------------------------------------------------------------------------

    def run(self, emit: Emit, stop: threading.Event) -> None:
        choice = self._choice()
        if not choice.mode:
            raise ProbeLoadError(choice.reason, hint=choice.hint)
        self._emit = emit
        started = time.monotonic()
        wm = self.watermark
        self.table.seed()
        # Nothing is attached while bcc compiles (seconds; minutes under emulation): no record
        # can come older than the clock. The loader marks the source working as it attaches.
        wm.waiting()
        loaded = self._load_stoppable(choice, stop)
        if loaded is None:  # stopped while bcc compiled: the loader closes what it made
            return
        prog, mode, note = loaded
        self.mode = mode
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()
        relay: StopRelay | None = None
        try:
            prog.open_ring_buffer("events", self._on_raw)
            relay = StopRelay(stop)
            poller = select.poll()
            poller.register(prog.ring_fd("events"), select.POLLIN)
            poller.register(relay.fd, select.POLLIN)
            self.ready.set()
            # bcc compiles at start (seconds; minutes under emulation): attribution starts
            # only now, so say so in-band; "attached" is what to wait for, not the first "up".
            emit(ev.SourceStateChanged(
                ts_ns=time.time_ns(), source=SOURCE, name=SOURCE, up=True, mode=mode,
                reason=f"attached in {time.monotonic() - started:.1f} s: {note or choice.reason}"))
            next_check = next_gc = time.monotonic()
            while not stop.is_set():
                # The ring buffer's fd wakes the poll when a record comes, the stop relay's
                # when the runtime stops: the timeout only bounds an idle sleep (500 ms: 0.03%
                # of a core), shortened to when the next open-only read-back is due.
                timeout = self.poll_ms
                if self._delayed:
                    due = min(d for d, _ in self._delayed) - time.monotonic()
                    timeout = max(1, min(timeout, int(due * 1000) + 1))
                # Whatever the ring buffer holds now is read before the source says it waits
                # (ring_buffer__consume reads shared memory, no system call); a record that
                # comes during the poll wakes it through the ring buffer's fd (the first one
                # read marks it working, in _on_raw).
                prog.consume()
                wm.waiting()
                poller.poll(timeout)
                prog.consume()
                now = time.monotonic()
                if now >= next_check:
                    self._check_lost(prog)
                    self._report_refused(emit)
                    next_check = now + 1.0
                if self._delayed:
                    self._flush_delayed(now)
                if mode == "tracepoint" and self.variant == "complete" and now >= next_gc:
                    self._gc(prog)
                    next_gc = now + self.gc_interval_s
            prog.disable()  # no new record after the stop: what is in the ring is read now
            prog.consume()
            self._flush_delayed(float("inf"))
            self._check_lost(prog)
        finally:
            self.ready.clear()
            if relay is not None:
                relay.close()
            self._close_later(prog)

    def _close_later(self, prog: bcc_facade.Program) -> None:
        """Detach on a thread of its own: the programs are disabled already, and detaching
        costs the kernel a grace period per tracepoint (about 1 s in all here), which the
        runtime's stop budget must not wait for. Not a daemon: the interpreter's exit waits
        for it, so every probe is gone before the process is (`closed` is set then)."""
        prog.disable()
        closed = self.closed = threading.Event()

        def close() -> None:
            try:
                prog.close()
            finally:
                closed.set()

        threading.Thread(target=close, name="vfiowatch-ebpf-close", daemon=False).start()

    def _load_stoppable(self, choice: ModeChoice, stop: threading.Event,
                        ) -> tuple[bcc_facade.Program, str, str] | None:
        """`_load` in a helper thread, so that a stop is obeyed within 0.1 s even while bcc
        compiles (clang cannot be interrupted: seconds on a host, a minute under emulation).
        Stopped first, the loader closes the program when it finishes (no probe stays in)."""
        result: list[tuple[bcc_facade.Program, str, str]] = []
        failed: list[BaseException] = []
        lock = threading.Lock()
        abandoned = threading.Event()

        def load() -> None:
            try:
                got = self._load(choice)
            except BaseException as exc:
                failed.append(exc)
                return
            with lock:
                if abandoned.is_set():
                    got[0].close()
                else:
                    result.append(got)

        t = threading.Thread(target=load, name="vfiowatch-ebpf-load", daemon=True)
        t.start()
        while t.is_alive():
            t.join(0.1)
            if stop.is_set():
                with lock:
                    if not result:
                        abandoned.set()
                        return None
                break
        if failed:
            raise failed[0]
        return result[0]

    def _load(self, choice: ModeChoice) -> tuple[bcc_facade.Program, str, str]:
        d = probes_dir()
        defines: dict[str, int | str] = {"FILTER_TGID": os.getpid()}
        if choice.mode == "kprobe":
            try:
                prog = bcc_facade.Program(d / KPROBE_PROBE, include=d, defines=defines)
                self.watermark.working()  # records may come from the first attach on
            except Exception as exc:
                raise ProbeLoadError(f"compiling {KPROBE_PROBE} failed: {exc}",
                                     hint="check the kernel headers (vfiowatch check)") from exc
            attached, failed = [], []
            by_addr = dict(self.facts().addresses)
            for sym in sorted(self.facts().handlers):
                try:
                    if sym in by_addr:  # same name in several files: probe each address
                        for i, addr in enumerate(by_addr[sym]):
                            prog.attach_kprobe_at(addr, KPROBE_HANDLERS[sym], ret=False,
                                                  tag=f"{sym}_{i}")
                            prog.attach_kprobe_at(addr, "kr_store", ret=True,
                                                  tag=f"{sym}_{i}_ret")
                    else:
                        prog.attach_kprobe(sym, KPROBE_HANDLERS[sym])
                        prog.attach_kretprobe(sym, "kr_store")
                    attached.append(sym)
                except Exception as exc:
                    failed.append(f"{sym} ({exc})")
            missing = [h for h in ESSENTIAL_HANDLERS if h not in attached]
            if not missing:
                note = f"kprobes on {len(attached)} store handlers" + (
                    f"; not attached: {', '.join(failed)}" if failed else "")
                return prog, "kprobe", note if failed else ""
            prog.close()
            if self.requested == "kprobe":
                raise ProbeLoadError(f"kprobes failed on {', '.join(missing)}: {'; '.join(failed)}",
                                     hint="use mode=tracepoint")
            choice = ModeChoice("tracepoint", f"kprobes failed on {', '.join(missing)}")
        probe = OPEN_ONLY_PROBE if self.variant == "open-only" else TRACEPOINT_PROBE
        defines.update(syscall_defines())
        try:
            prog = bcc_facade.Program(d / probe, include=d, defines=defines)
            self.watermark.working()  # bcc attached the tracepoints as it loaded them
        except Exception as exc:
            raise ProbeLoadError(f"loading {probe} failed: {exc}",
                                 hint="check kernel headers and tracefs (vfiowatch check)") from exc
        note = choice.reason if choice.reason.startswith("kprobes failed") else ""
        return prog, "tracepoint", note

    # ---- records ----------------------------------------------------------------------------

    def _on_raw(self, data: bytes) -> None:
        emit = self._emit
        if emit is None:
            return
        wm = self.watermark
        if wm.is_waiting:
            wm.working()
        self.stats.records += 1
        try:
            rec = D.parse_record(data)
        except D.RecordError as exc:
            self.stats.decode_failed += 1
            emit(ev.DecodeFailed(ts_ns=time.time_ns(), source=SOURCE, failed_source=SOURCE,
                                 reason=str(exc), sample_hex=data[:64].hex()))
            return
        try:
            out = self.handle(rec)
        except Exception as exc:  # raised inside a ctypes callback it would vanish: report it
            self.stats.decode_failed += 1
            emit(ev.DecodeFailed(ts_ns=time.time_ns(), source=SOURCE, failed_source=SOURCE,
                                 reason=f"handling a record failed: {type(exc).__name__}: {exc}",
                                 sample_hex=data[:64].hex()))
            return
        if out is None:
            return
        if out.stage == "open" and out.result >= 0 and out.control in D.READBACK_CONTROLS:
            self._delayed.append((time.monotonic() + READBACK_DELAY_S, out))
            self._hold()
            return
        self.stats.emitted += 1
        emit(out)

    def _flush_delayed(self, now: float) -> None:
        """Open-only variant: read back what the opener most likely wrote, and emit."""
        emit = self._emit
        keep = []
        for due, e in self._delayed:
            if due > now:
                keep.append((due, e))
                continue
            try:
                content: str | None = self.paths.read_text(e.path, 4096)
            except OSError:  # gone, or refused (reported with the next loss check)
                content = None
            if content is not None:
                value = D.readback_value(e.control, content)
                e = ev.replace(e, value=value, value_recovered=True,
                                        driver=(value or None) if e.control == "driver_override"
                                        else e.driver)
            if emit is not None:
                self.stats.emitted += 1
                emit(e)
        self._delayed = keep
        self._hold()

    def _hold(self) -> None:
        """Events after the oldest record held for its read-back wait for it."""
        self.watermark.hold(min((e.ts_ns for _, e in self._delayed), default=None))

    def handle(self, rec: D.RawRecord) -> ev.SysfsWriteObserved | None:
        """One parsed record -> an event (or None: a chdir, or a file outside sysfs)."""
        if rec.kind == L.VFW_KIND_CHDIR:
            self._on_chdir(rec)
            return None
        resolved = self._resolve(rec) if rec.kind != L.VFW_KIND_STORE else None
        actor = self.identify(rec)
        out = D.decode_record(rec, actor=actor, resolved_path=resolved,
                              wall_offset_ns=self._wall_offset_ns, mode=self.mode or "tracepoint")
        if out is not None and rec.kind == L.VFW_KIND_STORE and not self.paths.is_dir(
                os.path.dirname(out.path)):
            # A same-named handler of another shape (probed by address): its "device" or
            # "driver" is none of sysfs's.
            out = None
        if out is None:
            out = self._unresolved(rec, actor, resolved)
        if out is None:
            self.stats.dropped_not_sysfs += 1
        return out

    def _unresolved(self, rec: D.RawRecord, actor: ev.Process,
                    resolved: str | None) -> ev.SysfsWriteObserved | None:
        # A relative path whose directory we could not learn (writer and parent both gone):
        # still report the write, with the kernel's basename classification.
        if resolved is not None or rec.path.startswith("/") or not rec.control_name:
            return None
        if rec.kind not in (L.VFW_KIND_WRITE, L.VFW_KIND_OPEN_FAIL, L.VFW_KIND_OPEN):
            return None
        value = D.value_text(rec) if rec.kind == L.VFW_KIND_WRITE else ""
        return ev.SysfsWriteObserved(
            ts_ns=rec.ts_ns + self._wall_offset_ns, source=SOURCE, actor=actor, path=rec.path,
            control=rec.control_name, value=value,
            bdf=value.strip() if is_bdf(value.strip()) else None,
            result=rec.result, mode=self.mode or "tracepoint",
            stage="write" if rec.kind == L.VFW_KIND_WRITE else "open",
        )

    # ---- paths ------------------------------------------------------------------------------

    def _readlink(self, path: str) -> str | None:
        try:
            return self.paths.readlink(path)  # a magic link's name (cwd, fd/N): never followed
        except OSError:
            return None

    def _cwd_of(self, pid: int, ppid: int) -> str | None:
        for p in (pid, ppid):
            if not p:
                continue
            if p in self._cwd:
                return self._cwd[p]
            cwd = self._readlink(f"/proc/{p}/cwd")
            if cwd:
                return cwd
        return None

    def _on_chdir(self, rec: D.RawRecord) -> None:
        if rec.path:
            base = None if rec.path.startswith("/") else self._cwd_of(rec.pid, rec.ppid)
            new = D.resolve_against(rec.path, base)
        else:  # fchdir(fd)
            new = self._readlink(f"/proc/{rec.pid}/fd/{rec.dirfd}") or self._readlink(
                f"/proc/{rec.pid}/cwd")
        if new:
            self._cwd.put(rec.pid, new)

    def _resolve(self, rec: D.RawRecord) -> str | None:
        path = rec.path
        if not path.startswith("/"):
            if rec.dirfd == L.AT_FDCWD:
                base = self._cwd_of(rec.pid, rec.ppid)
            else:
                base = self._readlink(f"/proc/{rec.pid}/fd/{rec.dirfd}")
            resolved = D.resolve_against(path, base)
            if resolved is None:
                return None
            path = resolved
        return self._realpath(path)

    def _realpath(self, path: str) -> str:
        """`path` without symlinks, a PCI device's files named `/sys/bus/pci/devices/<bdf>/...`,
        and a device's `driver` link left alone (see decode.driver_link_form):
        `<device>/driver/unbind` becomes
        `/sys/bus/pci/devices/<bdf>/driver/unbind` whatever the device's driver is now, or stays
        as written when the device's own link has gone too (a netdev removed by the unbind)."""
        form = D.driver_link_form(posixpath.normpath(path))
        if form is not None:
            head, ctl = form
            dev = self._realpath_plain(head)
            name = posixpath.basename(dev)
            if dev.startswith("/sys/devices/") and is_bdf(name):
                return f"/sys/bus/pci/devices/{name}/driver/{ctl}"
            if not self.paths.exists(dev):
                return posixpath.normpath(path)
        real = self._realpath_plain(path)
        # A PCI device's own file, by the name kprobe mode and every remedy use.
        parent, ctl = posixpath.split(real)
        name = posixpath.basename(parent)
        if real.startswith("/sys/devices/") and ctl in D.DEVICE_CONTROLS and is_bdf(name):
            return f"/sys/bus/pci/devices/{name}/{ctl}"
        return real

    def _realpath_plain(self, path: str) -> str:
        try:
            return self.paths.resolve(path, strict=False)
        except OSError:  # refused (reported): the path as the writer gave it
            return posixpath.normpath(path)

    # ---- identity ---------------------------------------------------------------------------

    def _cgroup2_mount(self) -> Path | None:
        """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on hybrid),
        resolved inside the root (os.walk then never follows a link out of it)."""
        try:
            text = self.paths.read_text("/proc/self/mountinfo")
        except OSError:
            return None
        for line in text.splitlines():
            left, sep, right = line.partition(" - ")
            if sep and right.split(" ", 1)[0] == "cgroup2":
                try:
                    return Path(self.paths.real(left.split()[4]))
                except OSError:
                    return None
        return None

    def _cgroup_path(self, cgroup_id: int) -> str:
        """cgroup v2 path of a cgroup id (the directory's inode), by walking the hierarchy."""
        if not cgroup_id:
            return ""
        hit = self._cgroups.get(cgroup_id)
        if hit is not None:
            return hit
        now = time.monotonic()
        if now - self._cgroup_walked < 1.0:  # a walk is at most once a second
            return ""
        self._cgroup_walked = now
        base = self._cgroup2_mount()
        if base is None:
            return ""
        try:
            dev = os.stat(base).st_dev
        except OSError:
            return ""
        for dirpath, dirs, _files in os.walk(base):
            try:
                st = os.stat(dirpath)
            except OSError:
                continue
            if st.st_dev != dev:
                dirs[:] = []
                continue
            rel = os.path.relpath(dirpath, base)
            self._cgroups[st.st_ino] = "/" if rel == "." else "/" + rel
        return self._cgroups.get(cgroup_id, "")

    def identify(self, rec: D.RawRecord) -> ev.Process:
        """The writer's identity: /proc when it still runs, else what the probe saw."""
        p = self.table.lookup(rec.pid, comm=rec.comm)
        alive = bool(p.exe or p.cmdline)
        changes: dict[str, object] = {"cgroup_id": rec.cgroup_id or None}
        if rec.comm:
            changes["comm"] = rec.comm
        if p.ppid is None and rec.ppid:
            changes["ppid"] = rec.ppid
        if not p.cgroup:
            path = self._cgroup_path(rec.cgroup_id)
            if path:
                cg = parse_cgroup(f"0::{path}")
                changes.update(cgroup=path, container_id=cg.container_id)
        ppid = p.ppid or rec.ppid
        if not p.sandbox_id:
            sid = self.table.sandbox_of(rec.pid) if alive else None
            if sid is None and ppid:
                sid = self.table.sandbox_of(ppid)
            if sid:
                changes["sandbox_id"] = sid
        if not p.ancestry and ppid:
            parent = self.table.lookup(ppid)
            if not parent.ancestry:  # seeded without ancestry: read it once now
                parent = self.table.lookup(ppid, refresh=True)
            if parent.comm:
                changes["ancestry"] = (parent.comm, *parent.ancestry)[:8]
        return ev.replace(p, **changes)

    # ---- loss and housekeeping ----------------------------------------------------------------

    def _check_lost(self, prog: bcc_facade.Program) -> None:
        emit = self._emit
        if emit is None:
            return
        for idx, attr, why in ((0, "lost_ringbuf", "eBPF ring buffer full"),
                               (1, "lost_table", "eBPF tracking table full")):
            try:
                total = prog.percpu_sum("lost", idx)
            except Exception:
                continue
            seen = getattr(self.stats, attr)
            if total > seen:
                setattr(self.stats, attr, total)
                emit(ev.EventsLost(ts_ns=time.time_ns(), source=SOURCE, lost_source=SOURCE,
                                   count=total - seen,
                                   reason=f"{why}: {total - seen} sysfs writes not attributed"))

    def _report_refused(self, emit: Emit) -> None:
        """Paths read for attribution that lead outside --root: in-band, counted."""
        for e in refusal_events(self.paths, SOURCE, time.time_ns()):
            self.stats.decode_failed += 1
            emit(e)

    def _gc(self, prog: bcc_facade.Program) -> None:
        """Forget fds of processes that exited or exec'ed without closing them.

        The kernel counts what it inserts; what is deleted here is added to gate[1] (written
        only from here), so the kernel's live count stays exact without a racy reset.
        """
        removed = 0
        for key in list(prog.keys("fds")):
            tgid, fd = key[0], key[1]
            link = self._readlink(f"/proc/{tgid}/fd/{fd}")
            if (link is None or not link.startswith("/sys/")) and prog.delete("fds", key):
                removed += 1
        if removed:
            self.stats.gc_removed += removed
            prog.set_gate_deleted(self.stats.gc_removed)
