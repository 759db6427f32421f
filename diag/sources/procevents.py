"""Provides the kernel's process events (the netlink proc connector): exec and exit as they happen.

The proc connector (NETLINK_CONNECTOR, group CN_IDX_PROC) multicasts one message per process
event to every listener. The agent uses it instead of listing /proc on a timer: a Kata shim or
QEMU is seen when it execs, and gone when it exits, at no cost while nothing happens.

* `decode_proc_events(data)` is pure: one raw datagram (`nlmsghdr` + `cn_msg` + `proc_event`)
  to ProcEvents; tested on messages recorded on this machine kind (tests/fixtures/proc-connector).
* `ProcEventSocket` is thin: open, subscribe, drain.

Subscribing, and what a kernel answers (drivers/connector/cn_proc.c):

* `PROC_CN_MCAST_LISTEN` as a 4-byte op: every kernel takes it and acknowledges it with a
  `PROC_EVENT_NONE` message carrying an errno (0, or EPERM when the kernel wants CAP_NET_ADMIN
  and the agent lacks it: kernels before 6.6). No acknowledgement at all means the request was
  ignored: the agent is not in the initial user and pid namespaces (a pod without hostPID; the
  pids would be the host's anyway), or the kernel has no CONFIG_PROC_EVENTS.
* Then the 8-byte `proc_input` (op + event mask, kernel >= 6.6) narrows the socket to exec and
  exit, so fork and thread events (the bulk on a busy host) never wake the agent. An older
  kernel ignores the 8-byte form and keeps sending everything; the decoder's caller skips the
  rest.
* Overflow: ENOBUFS once when the socket's buffer was full (events were dropped): the caller
  rescans /proc.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
NLMSG_DONE = 3
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2

PROC_EVENT_NONE = 0x00000000
PROC_EVENT_FORK = 0x00000001
PROC_EVENT_EXEC = 0x00000002
PROC_EVENT_UID = 0x00000004
PROC_EVENT_GID = 0x00000040
PROC_EVENT_SID = 0x00000080
PROC_EVENT_PTRACE = 0x00000100
PROC_EVENT_COMM = 0x00000200
PROC_EVENT_NONZERO_EXIT = 0x20000000
PROC_EVENT_COREDUMP = 0x40000000
PROC_EVENT_EXIT = 0x80000000

KINDS = {
    PROC_EVENT_NONE: "ack", PROC_EVENT_FORK: "fork", PROC_EVENT_EXEC: "exec",
    PROC_EVENT_UID: "uid", PROC_EVENT_GID: "gid", PROC_EVENT_SID: "sid",
    PROC_EVENT_PTRACE: "ptrace", PROC_EVENT_COMM: "comm", PROC_EVENT_COREDUMP: "coredump",
    PROC_EVENT_EXIT: "exit",
}

_NLMSGHDR = struct.Struct("=IHHII")
_CN_MSG = struct.Struct("=IIIIHH")
_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_PIDS2 = struct.Struct("=II")
_PIDS4 = struct.Struct("=IIII")
_EXIT = struct.Struct("=IIIIII")
_ACK = struct.Struct("=I")
_COMM = struct.Struct("=II16s")
_INSN = struct.Struct("=HBBI")
SO_ATTACH_FILTER = 26
_HEAD = _NLMSGHDR.size + _CN_MSG.size  # 36: where the proc_event starts
EVENT_DATA = _HEAD + _EVENT_HEAD.size  # 52: where event_data starts
DEFAULT_RCVBUF = 4 << 20
"""A proc_event message is 76 bytes (about 1 KiB of kernel buffer each): 4 MiB holds a few
thousand, far more than an exec storm leaves unread between two reads."""


class MalformedProcEvent(ValueError):
    """A datagram that is not a well-formed proc connector message."""


@dataclass(frozen=True, slots=True)
class ProcEvent:
    """One process event. `pid` is the thread, `tgid` the process (they are equal for a
    process's main thread); pids are the host's (the initial pid namespace's)."""

    kind: str
    """`exec`, `exit`, `fork`, `comm`, ..., or `ack` (the answer to a subscription)."""
    pid: int
    tgid: int
    ts_ns: int
    """CLOCK_MONOTONIC when the kernel sent it (ktime_get_ns)."""
    parent_pid: int = 0
    parent_tgid: int = 0
    """fork: the parent; exit: the parent at exit."""
    exit_code: int | None = None
    """exit: the wait status (`exit_code >> 8` is the exit status of a normal exit)."""
    error: int = 0
    """ack: the errno the kernel answered (0 = subscribed)."""
    comm: str = ""
    """comm: the new name."""
    seq: int = 0
    ack: int = 0

    @property
    def is_process(self) -> bool:
        """The event is about a whole process (its main thread), not another thread."""
        return self.pid == self.tgid


def decode_proc_events(data: bytes) -> list[ProcEvent]:
    """Pure: one datagram to its events (normally one). Message kinds this decoder does not
    know (a newer kernel's) are returned with kind `other:<hex>` and no fields; a datagram that
    is cut short raises MalformedProcEvent."""
    out: list[ProcEvent] = []
    off, n = 0, len(data)
    while off + _NLMSGHDR.size <= n:
        length, _mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, off)
        if length < _HEAD or off + length > n:
            raise MalformedProcEvent(f"nlmsghdr at {off}: length {length} does not fit {n} bytes")
        idx, val, seq, ack, clen, _cflags = _CN_MSG.unpack_from(data, off + _NLMSGHDR.size)
        if (idx, val) != (CN_IDX_PROC, CN_VAL_PROC):
            raise MalformedProcEvent(f"connector id {idx}.{val} is not the proc connector's")
        if clen < _EVENT_HEAD.size or _HEAD + clen > length:
            raise MalformedProcEvent(f"cn_msg at {off}: payload length {clen} does not fit {length - _HEAD}")
        out.append(_event(data, off + _HEAD, clen, seq, ack))
        off += (length + 3) & ~3
    if off < n:
        raise MalformedProcEvent(f"{n - off} trailing bytes after the last message")
    return out


def _event(data: bytes, at: int, clen: int, seq: int, ack: int) -> ProcEvent:
    what, _cpu, ts = _EVENT_HEAD.unpack_from(data, at)
    body = at + _EVENT_HEAD.size
    room = clen - _EVENT_HEAD.size

    def need(st: struct.Struct) -> tuple[int, ...]:
        if room < st.size:
            raise MalformedProcEvent(f"{KINDS.get(what, hex(what))} event needs {st.size} bytes, got {room}")
        return st.unpack_from(data, body)

    if what == PROC_EVENT_EXEC:
        pid, tgid = need(_PIDS2)
        return ProcEvent("exec", pid, tgid, ts, seq=seq)
    if what == PROC_EVENT_EXIT:
        pid, tgid, code, _sig, ppid, ptgid = need(_EXIT)
        return ProcEvent("exit", pid, tgid, ts, parent_pid=ppid, parent_tgid=ptgid, exit_code=code, seq=seq)
    if what == PROC_EVENT_FORK:
        ppid, ptgid, pid, tgid = need(_PIDS4)
        return ProcEvent("fork", pid, tgid, ts, parent_pid=ppid, parent_tgid=ptgid, seq=seq)
    if what == PROC_EVENT_NONE:
        (err,) = need(_ACK)
        return ProcEvent("ack", 0, 0, ts, error=err, seq=seq, ack=ack)
    if what == PROC_EVENT_COMM:
        pid, tgid, raw = need(_COMM)
        return ProcEvent("comm", pid, tgid, ts, comm=raw.split(b"\0", 1)[0].decode("utf-8", "replace"), seq=seq)
    if what in KINDS:
        pid, tgid = need(_PIDS2)
        return ProcEvent(KINDS[what], pid, tgid, ts, seq=seq)
    return ProcEvent(f"other:{what:#x}", 0, 0, ts, seq=seq)


# ---- the socket filter ------------------------------------------------------------------------

BPF_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS: A = the 32-bit word at k, read big-endian
BPF_LDX_MEM = 0x61   # BPF_LDX | BPF_W | BPF_MEM: X = M[k]
BPF_ST = 0x02        # M[k] = A
BPF_JEQ_K = 0x15     # BPF_JMP | BPF_JEQ | BPF_K
BPF_JEQ_X = 0x1D     # BPF_JMP | BPF_JEQ | BPF_X
BPF_RET_K = 0x06
ACCEPT = 0xFFFF
MAX_FILTER_PIDS = 1500
"""Two instructions per pid, under the kernel's 4096 (BPF_MAXINSNS); more pids: every
process's exit is let through and the caller picks its own."""

Insn = tuple[int, int, int, int]
"""(code, jt, jf, k): one classic BPF instruction."""


def _be(value: int) -> int:
    """A host-order (little-endian) 32-bit field as BPF_ABS loads it (big-endian)."""
    return int.from_bytes(value.to_bytes(4, "little"), "big")


def exit_filter(exit_pids: Iterable[int] | None) -> list[Insn]:
    """Pure: a classic BPF socket filter that lets through every exec, and the exit of a whole
    process (pid == tgid) only when it is one of `exit_pids` (None: any process's exit).
    Forks, thread exits and every other kind are dropped in the kernel, so they never wake the
    agent; that holds on kernels before 6.6 too, which send every kind.

    Offsets are the datagram's: `what` at 36, the pid at 52, the tgid at 56. BPF_ABS loads
    big-endian, so the constants are the little-endian fields byte-swapped."""
    prog: list[Insn] = [
        (BPF_LD_W_ABS, 0, 0, _HEAD),                 # A = what
        (BPF_JEQ_K, 0, 1, _be(PROC_EVENT_EXEC)),
        (BPF_RET_K, 0, 0, ACCEPT),                   # exec
        (BPF_JEQ_K, 1, 0, _be(PROC_EVENT_EXIT)),
        (BPF_RET_K, 0, 0, 0),                        # anything else
        (BPF_LD_W_ABS, 0, 0, EVENT_DATA + 4),        # A = tgid
        (BPF_ST, 0, 0, 0),
        (BPF_LDX_MEM, 0, 0, 0),                      # X = tgid
        (BPF_LD_W_ABS, 0, 0, EVENT_DATA),            # A = pid
        (BPF_JEQ_X, 1, 0, 0),
        (BPF_RET_K, 0, 0, 0),                        # a thread's exit
    ]
    pids = None if exit_pids is None else sorted(set(exit_pids))
    if pids is None or len(pids) > MAX_FILTER_PIDS:
        prog.append((BPF_RET_K, 0, 0, ACCEPT))
        return prog
    for pid in pids:
        prog += [(BPF_JEQ_K, 0, 1, _be(pid)), (BPF_RET_K, 0, 0, ACCEPT)]
    prog.append((BPF_RET_K, 0, 0, 0))
    return prog


def run_filter(prog: list[Insn], data: bytes) -> bool:
    """Pure: what the kernel's classic BPF interpreter decides for `data` (the opcodes
    `exit_filter` uses only): True = delivered. For tests and the bench."""
    a = x = 0
    mem = [0] * 16
    pc = 0
    while True:
        code, jt, jf, k = prog[pc]
        if code == BPF_LD_W_ABS:
            if k + 4 > len(data):
                return False  # the kernel drops a packet a load runs past
            a = int.from_bytes(data[k:k + 4], "big")
        elif code == BPF_ST:
            mem[k] = a
        elif code == BPF_LDX_MEM:
            x = mem[k]
        elif code in (BPF_JEQ_K, BPF_JEQ_X):
            pc += jt if a == (k if code == BPF_JEQ_K else x) else jf
        elif code == BPF_RET_K:
            return k != 0
        else:
            raise ValueError(f"opcode {code:#x} is not one exit_filter uses")
        pc += 1


def control_message(op: int, seq: int, events: int | None = None, ack: int = 0) -> bytes:
    """A subscription request: the 4-byte op alone, or with `events` the 8-byte proc_input
    (op + event mask, kernel >= 6.6). The kernel answers `ack + 1` in its acknowledgement
    (its sequence number is the kernel's own counter, not ours)."""
    payload = struct.pack("=I", op) if events is None else struct.pack("=II", op, events)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, seq, ack, len(payload), 0) + payload
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(cn), NLMSG_DONE, 0, seq, 0) + cn


# ---- I/O --------------------------------------------------------------------------------------


class ProcEventsUnavailable(OSError):
    """The kernel will not send process events to this process (the reason says why)."""


class ProcEventSocket:
    """A subscribed proc connector socket: `fileno()` to poll, `read()` to drain.

    `subscribe()` raises ProcEventsUnavailable with the reason and the fix when the kernel
    refuses or ignores the request; the caller then polls /proc and says so.
    """

    EXEC_EXIT = PROC_EVENT_EXEC | PROC_EVENT_EXIT

    def __init__(self, rcvbuf: int = DEFAULT_RCVBUF) -> None:
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC,
                                      NETLINK_CONNECTOR)
        except OSError as exc:
            raise ProcEventsUnavailable(
                exc.errno or errno.EPROTONOSUPPORT,
                f"no netlink connector ({exc.strerror or exc}): a kernel without CONFIG_CONNECTOR") from None
        try:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, 33, rcvbuf)  # SO_RCVBUFFORCE
            except OSError:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, CN_IDX_PROC))
        except OSError as exc:
            self.sock.close()
            raise ProcEventsUnavailable(
                exc.errno or errno.EPERM,
                f"cannot join the proc connector's group ({exc.strerror or exc})") from None
        self.filtered = False
        """True once the kernel was asked to send exec and exit only (it may not have)."""
        self.lost = 0
        """Times the kernel reported ENOBUFS (events dropped)."""
        self.malformed = 0
        """Datagrams the decoder refused (the caller reports them in-band)."""
        self.sample = b""
        """The first bytes of the last refused datagram."""
        self._seq = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def subscribe(self, timeout_s: float = 1.0) -> None:
        """LISTEN, wait for the kernel's acknowledgement, then narrow to exec and exit."""
        self._seq += 1
        # Every listener receives every acknowledgement: ours is the one carrying our token + 1.
        token = (os.getpid() << 8 | self._seq) & 0x7FFFFFFF
        self.sock.send(control_message(PROC_CN_MCAST_LISTEN, self._seq, ack=token))
        end = time.monotonic() + timeout_s
        poller = select.poll()
        poller.register(self.sock.fileno(), select.POLLIN)
        self.sock.setblocking(False)
        while True:
            left = end - time.monotonic()
            if left <= 0:
                self.close()
                raise ProcEventsUnavailable(
                    errno.ETIMEDOUT,
                    "the kernel did not acknowledge the process-events subscription: the agent is "
                    "not in the host's pid and user namespaces (run with hostPID), or the kernel "
                    "lacks CONFIG_PROC_EVENTS")
            if not poller.poll(left * 1000):
                continue
            for e in self._recv_all():
                if e.kind == "ack" and e.ack == token + 1:
                    if e.error:
                        self.close()
                        raise ProcEventsUnavailable(
                            e.error, f"the kernel refused process events: {errno.errorcode.get(e.error, e.error)} "
                                     "(kernels before 6.6 want CAP_NET_ADMIN)")
                    self._seq += 1
                    self.sock.send(control_message(PROC_CN_MCAST_LISTEN, self._seq, self.EXEC_EXIT))
                    self.filtered = True
                    return

    def watch_exits(self, pids: Iterable[int] | None) -> None:
        """Let through the exits of these processes only (None: of every process); execs
        always pass. Replaces the socket's filter at once (SO_ATTACH_FILTER)."""
        prog = exit_filter(pids)
        buf = ctypes.create_string_buffer(b"".join(_INSN.pack(*i) for i in prog))
        fprog = struct.pack("HL", len(prog), ctypes.addressof(buf))
        self.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)

    def _recv_all(self) -> list[ProcEvent]:
        out: list[ProcEvent] = []
        while True:
            try:
                data = self.sock.recv(8192)
            except BlockingIOError:
                return out
            except InterruptedError:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.lost += 1
                    continue
                raise
            try:
                out.extend(decode_proc_events(data))
            except MalformedProcEvent:
                self.malformed += 1
                self.sample = data[:64]

    def read(self) -> tuple[list[ProcEvent], bool]:
        """Every event queued now, and whether the kernel dropped some since the last read."""
        lost = self.lost
        evs = self._recv_all()
        return evs, self.lost != lost

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()
