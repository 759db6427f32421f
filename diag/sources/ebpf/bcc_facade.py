"""Provides the one small typed facade over bcc: the only module of vfiowatch that imports it.

bcc is Debian's python3-bpfcc (never a pip dependency: PyPI's `bcc` is another project). It is
imported lazily, so the rest of the agent (and every unit test) runs without it; `import_error()`
says why it is missing. Everything returned is plain Python (bytes, ints, str).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

_bcc: Any = None
_import_error: str | None = None
PERF_EVENT_IOC_DISABLE = 0x2401
"""_IO('$', 1) (linux/perf_event.h)."""


def _load() -> Any:
    global _bcc, _import_error
    if _bcc is None and _import_error is None:
        try:
            import bcc

            _bcc = bcc
        except Exception as exc:  # ImportError, or a broken libbcc (OSError)
            _import_error = f"{type(exc).__name__}: {exc}"
    return _bcc


def import_error() -> str | None:
    """None when bcc imports, else why it does not."""
    _load()
    return _import_error


def version() -> str:
    """bcc's version string, empty when unknown or not importable."""
    bcc = _load()
    return str(getattr(bcc, "__version__", "")) if bcc is not None else ""


def tracepoint_exists(category: str, event: str) -> bool:
    """Whether tracefs lists the tracepoint (bcc's BPF.tracepoint_exists)."""
    bcc = _load()
    if bcc is None:
        return False
    try:
        return bool(bcc.BPF.tracepoint_exists(category, event))  # str: bcc joins it with a str path
    except Exception:
        return False


def kprobe_functions(pattern: str) -> set[str] | None:
    """Kernel functions kprobes may attach to that match `pattern`; None when bcc cannot tell.

    bcc's BPF.get_kprobe_functions reads kallsyms and the kprobe blacklist in debugfs; without
    debugfs mounted (or without kprobes) the blacklist is absent and bcc raises: None, and the
    caller falls back to kallsyms alone.
    """
    bcc = _load()
    if bcc is None:
        return None
    try:
        found = bcc.BPF.get_kprobe_functions(pattern.encode())
    except Exception:
        return None
    return {f.decode() if isinstance(f, bytes) else str(f) for f in found}


def kallsyms_addresses(names: set[str], path: str = "/proc/kallsyms") -> dict[str, list[int]]:
    """Text addresses of each name in kallsyms (several: static functions of the same name in
    different files, which a kprobe by name refuses (>= 6.6) or could put on the wrong one).
    Addresses read as 0 when kptr_restrict hides them."""
    try:
        with open(path, "rb") as fh:
            return parse_kallsyms(names, fh)
    except OSError:
        return {n: [] for n in names}


def parse_kallsyms(names: set[str], lines: Iterable[bytes]) -> dict[str, list[int]]:
    """`kallsyms_addresses` on lines already read (under --root: HostPaths.read_bytes)."""
    out: dict[str, list[int]] = {n: [] for n in names}
    try:
        for line in lines:
            parts = line.split()
            if len(parts) >= 3 and parts[1] in (b"t", b"T"):
                sym = parts[2].decode("ascii", "replace")
                if sym in out:
                    out[sym].append(int(parts[0], 16))
    except ValueError:
        pass
    return out


def _append_line(path: Path, line: str) -> None:
    """One O_APPEND write to a tracefs control file. Not open(path, "a"): Python then seeks to
    the end, which tracefs' seq files refuse with EINVAL (found in the QEMU lab, kernel 6.12)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def stale_kprobe_events(listing: str, alive: Callable[[int], bool]) -> list[str]:
    """Our kprobe events in a `kprobe_events` listing whose agent is gone (`vfw<pid>_<tag>` of a
    dead pid): an agent killed before it could remove them leaves them behind."""
    out = []
    for line in listing.splitlines():
        head = line.split(" ", 1)[0]  # "p:vfiowatch/vfw123_tag" or "r5:vfiowatch/..."
        group, _, event = head.partition(":")[2].partition("/")
        if group != "vfiowatch" or not event.startswith("vfw"):
            continue
        pid = event[3:].split("_", 1)[0]
        if pid.isdigit() and not alive(int(pid)):
            out.append(event)
    return out


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Program:
    """One compiled and loaded probe file (bcc autoattaches its TRACEPOINT/RAW_TRACEPOINT_PROBEs)."""

    def __init__(self, src: Path, *, include: Path, defines: dict[str, int | str]) -> None:
        bcc = _load()
        if bcc is None:
            raise RuntimeError(f"bcc is not importable ({_import_error})")
        cflags = [f"-I{include}"] + [f"-D{k}={v}" for k, v in defines.items()]
        # bcc prints clang warnings about the mismatched headers to stderr: harmless noise.
        self._b = bcc.BPF(src_file=str(src).encode(), cflags=cflags)
        self._rings: list[Callable[..., Any]] = []
        self._perf_fds: list[int] = []
        self._kprobe_events: list[str] = []

    def attach_kprobe(self, event: str, fn: str) -> None:
        self._b.attach_kprobe(event=event.encode(), fn_name=fn.encode())

    def attach_kretprobe(self, event: str, fn: str) -> None:
        self._b.attach_kretprobe(event=event.encode(), fn_name=fn.encode())

    def attach_kprobe_at(self, addr: int, fn: str, *, ret: bool, tag: str) -> None:
        """A kprobe (or kretprobe) at a kernel text address, made through tracefs kprobe_events
        (`p:vfiowatch/<event> 0x<addr>`) and attached as a perf tracepoint: how a handler whose
        name kallsyms lists more than once is probed at each of its addresses."""
        bcc = _load()
        kevents = Path(getattr(bcc, "TRACEFS", "/sys/kernel/tracing")) / "kprobe_events"
        if not self._kprobe_events:
            # Tidy what a killed earlier agent left behind (it could not remove its events).
            with contextlib.suppress(OSError):
                for stale in stale_kprobe_events(kevents.read_text(), _pid_alive):
                    with contextlib.suppress(OSError):
                        _append_line(kevents, f"-:vfiowatch/{stale}\n")
        event = f"vfw{os.getpid()}_{tag}"
        _append_line(kevents, f"{'r' if ret else 'p'}:vfiowatch/{event} 0x{addr:x}\n")
        self._kprobe_events.append(event)
        func = self._b.load_func(fn.encode(), bcc.BPF.KPROBE)
        fd = bcc.libbcc.lib.bpf_attach_tracepoint(func.fd, b"vfiowatch", event.encode())
        if fd < 0:
            raise OSError(f"attaching {fn} to kprobe event vfiowatch/{event} (0x{addr:x}) failed")
        self._perf_fds.append(fd)

    def load_kprobe(self, fn: str) -> None:
        """Load (verify) a kprobe program without attaching it: proves it on any kernel."""
        self._b.load_func(fn.encode(), self._bcc_const("KPROBE"))

    def _bcc_const(self, name: str) -> Any:
        return getattr(_load().BPF, name)

    def open_ring_buffer(self, table: str, callback: Callable[[bytes], None]) -> None:
        def _cb(_ctx: Any, data: Any, size: int) -> int:
            callback(ctypes.string_at(data, size))
            return 0

        self._b[table.encode()].open_ring_buffer(_cb)
        self._rings.append(_cb)  # keep the ctypes callback alive

    def poll(self, timeout_ms: int) -> None:
        self._b.ring_buffer_poll(timeout_ms)

    def ring_fd(self, table: str) -> int:
        """The ring buffer map's fd: poll()able, readable while records wait (the source polls
        it beside its stop fd, so a stop never waits for a poll timeout)."""
        return int(self._b[table.encode()].map_fd)

    def _bcc_perf_event_fds(self) -> list[int] | None:
        """The perf event fds bcc attached (tracepoints, kprobes by name); None with a bcc
        whose bookkeeping differs (its cleanup() then detaches them, one by one)."""
        b = self._b
        try:
            fds = [int(fd) for fd in b.tracepoint_fds.values()]
            for fns in b.kprobe_fds.values():
                fds.extend(int(fd) for fd in fns.values())
        except AttributeError:
            return None
        return fds

    def disable(self) -> None:
        """Stop every program attached through a perf event at once (PERF_EVENT_IOC_DISABLE:
        microseconds, no grace period): none of them records after this; close() then detaches
        them. The complete variant's raw sys_exit program is no perf event: it runs on until
        close(), and only finishes what an open already recorded."""
        for fd in self._perf_fds + (self._bcc_perf_event_fds() or []):
            with contextlib.suppress(OSError):
                fcntl.ioctl(fd, PERF_EVENT_IOC_DISABLE, 0)

    def consume(self) -> None:
        self._b.ring_buffer_consume()

    def percpu_sum(self, table: str, key: int = 0) -> int:
        t = self._b[table.encode()]
        vals = t[t.Key(key)]
        return int(sum(int(v) for v in vals))

    def keys(self, table: str) -> Iterator[tuple[int, ...]]:
        """Keys of a hash map whose key is a struct of ints, as tuples of its fields."""
        t = self._b[table.encode()]
        for k in list(t.keys()):
            fields = getattr(k, "_fields_", None)
            if fields:
                yield tuple(int(getattr(k, f[0])) for f in fields)
            else:
                yield (int(k.value),)

    def delete(self, table: str, key: tuple[int, ...]) -> bool:
        t = self._b[table.encode()]
        k = t.Key(*key)
        try:
            del t[k]
            return True
        except KeyError:
            return False

    def set_gate_deleted(self, total: int) -> None:
        """sysfs_write_tp: gate[1].nfds = fds entries deleted by user space so far."""
        t = self._b[b"gate"]
        v = t.Leaf()
        v.nfds = total
        v.npending = 0
        t[t.Key(1)] = v

    def _close_perf_events(self) -> None:
        b = self._b
        bcc_fds = self._bcc_perf_event_fds()
        _close_parallel(self._perf_fds + (bcc_fds or []))
        self._perf_fds.clear()
        if bcc_fds is None:
            return
        kps = [(ev, fn) for ev, fns in b.kprobe_fds.items() for fn in fns]
        b.tracepoint_fds.clear()  # bpf_detach_tracepoint has nothing left to do
        lib = _load().libbcc.lib
        for ev, fn in kps:
            with contextlib.suppress(Exception):
                b._del_kprobe_fd(ev, fn)  # bcc's count of open probes
        for ev in {ev for ev, _ in kps}:
            with contextlib.suppress(Exception):
                lib.bpf_detach_kprobe(ev)
            b.kprobe_fds.pop(ev, None)

    def close(self) -> None:
        """Detach and free everything. Closing a perf event of a tracepoint or kprobe waits for
        an RCU grace period in the kernel (tracepoint_synchronize_unregister: about 0.1 s each
        here, so 1.1 s for the 11 tracepoints of the open-only probe when done one by one):
        the events are closed from one thread each, then bcc frees the rest."""
        self._close_perf_events()
        if self._kprobe_events:
            bcc = _load()
            kevents = Path(getattr(bcc, "TRACEFS", "/sys/kernel/tracing")) / "kprobe_events"
            for event in self._kprobe_events:
                with contextlib.suppress(OSError):
                    _append_line(kevents, f"-:vfiowatch/{event}\n")
            self._kprobe_events.clear()
        with contextlib.suppress(Exception):  # a half-loaded program: nothing left to free
            self._b.cleanup()


def _close_parallel(fds: list[int]) -> None:
    """bpf_close_perf_event_fd (disable, close) on each fd, from one thread each (ctypes lets
    the GIL go: the kernel's grace periods overlap where its locks allow)."""
    lib = _load().libbcc.lib
    threads = [threading.Thread(target=lib.bpf_close_perf_event_fd, args=(fd,),
                                name="vfiowatch-ebpf-detach", daemon=True) for fd in fds]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def running_kernel_has_kprobe_pmu(sys_root: Path = Path("/sys")) -> bool:
    return (sys_root / "bus" / "event_source" / "devices" / "kprobe").exists()




def is_root() -> bool:
    return os.geteuid() == 0
