"""Provides Kata log decoding (logfmt, journald JSON) and followers for journald and log files.

Pure decoders: `parse_logfmt` (logrus TextFormatter: `time=... level=... msg="..." key=value`,
Go-quoted values), `decode_text_line` (a logfmt line, optionally behind a syslog or journalctl
prefix), `decode_journal_entry` (one `journalctl -o json` object: the Go shim's syslog lines,
runtime-rs's native journald fields, containerd's unit, kernel lines) and `to_event` (a
LogRecord that matches a signature -> LogLineMatched).

Followers are thin: `JournaldFollower` runs `journalctl -f -o json` with matches for the `kata`
identifier, containerd's unit and the kernel; `FileFollower` tails a file across truncation and
rotation, holding back a partial last line until its newline arrives.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata import signatures

SANDBOX_ID_RE = re.compile(r"^[0-9a-f]{64}$")
_START = re.compile(r"(?:^|\s)(time|level|msg)=")
_SYSLOG_PREFIX = re.compile(r"(?<![\w.@/-])(?P<ident>[\w.@/-]{1,64})\[(?P<pid>\d{1,10})\]:\s")
SYSLOG_PREFIX_SPAN = 256
"""The `host ident[pid]: ` prefix is looked for only this far into a line (bounded regex cost)."""
MAX_LINE = 65536
"""Longer lines are cut (Kata's are < 4 KiB; a runaway writer must not grow our buffers)."""


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log entry, whatever its format."""

    message: str
    level: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)
    ts_ns: int | None = None
    """The entry's own timestamp when it has one."""
    origin: str = ""
    """`journald:kata`, `journald:containerd.service`, `journald:kernel`, `file:<path>`."""
    pid: int | None = None
    line_ts: bool = False
    """True when `ts_ns` came from the line itself (logfmt `time=`), not from its carrier."""

    def dedup_key(self) -> tuple[object, ...] | None:
        """Identity of the logged line across carriers: Go shim lines reach both the `kata`
        syslog identifier and containerd's log with the same `time=`; None when unknowable."""
        if not self.line_ts:
            return None
        return (self.ts_ns, self.message, self.fields.get("pid"), self.fields.get("sandbox"))


class Deduper:
    """Remembers the last `size` line identities; `seen(rec)` is True for a repeat."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._keys: dict[tuple[object, ...], None] = {}
        self.dropped = 0

    def seen(self, rec: LogRecord) -> bool:
        key = rec.dedup_key()
        if key is None:
            return False
        if key in self._keys:
            self.dropped += 1
            return True
        self._keys[key] = None
        if len(self._keys) > self.size:
            del self._keys[next(iter(self._keys))]
        return False


def _unquote_go(s: str, i: int) -> tuple[str, int]:
    """Decode a Go-quoted string starting at s[i] == '"'; returns (value, index after it)."""
    out: list[str] = []
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\" and i + 1 < n:
            e = s[i + 1]
            simple = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "a": "\a",
                      "b": "\b", "f": "\f", "v": "\v", "'": "'"}
            if e in simple:
                out.append(simple[e])
                i += 2
                continue
            width = {"x": 2, "u": 4, "U": 8}.get(e)
            if width and i + 2 + width <= n:
                try:
                    out.append(chr(int(s[i + 2 : i + 2 + width], 16)))
                    i += 2 + width
                    continue
                except ValueError:
                    pass
            if e.isdigit() and i + 4 <= n:  # octal \NNN
                with contextlib.suppress(ValueError):
                    out.append(chr(int(s[i + 1 : i + 4], 8)))
                    i += 4
                    continue
            out.append(e)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out), n  # unterminated: keep what we have


def parse_logfmt(text: str) -> dict[str, str]:
    """logfmt pairs in order; a quoted value may hold spaces and Go escapes. Bare keys map to ''."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] == " ":
            i += 1
        if i >= n:
            break
        j = i
        while j < n and text[j] not in "= ":
            j += 1
        key = text[i:j]
        if j < n and text[j] == "=":
            j += 1
            if j < n and text[j] == '"':
                val, j = _unquote_go(text, j)
            else:
                k = j
                while k < n and text[k] != " ":
                    k += 1
                val, j = text[j:k], k
        else:
            val = ""
        if key:
            out[key] = val
        i = j
    return out


def parse_time_ns(value: str) -> int | None:
    """RFC3339Nano (`2024-08-14T10:01:02.123456789+08:00`, `...Z`) -> ns since the epoch."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:?\d\d)?$", value.strip())
    if not m:
        return None
    base, frac, tz = m.groups()
    tz = "+00:00" if tz in (None, "Z") else tz
    try:
        dt = datetime.fromisoformat(base + tz)
    except ValueError:
        return None
    return int(dt.timestamp()) * 1_000_000_000 + int((frac or "0").ljust(9, "0"))


def decode_text_line(line: str, origin: str = "") -> LogRecord | None:
    """A logfmt line (Go shim / containerd), possibly behind `... kata[pid]: ` ; else plain text.

    Lines without logfmt keys (kernel text, QEMU stderr captured elsewhere) become a record whose
    message is the whole line; None for blank lines.
    """
    line = line.rstrip("\r\n")[:MAX_LINE]
    if not line.strip():
        return None
    pid = None
    pm = _SYSLOG_PREFIX.search(line, 0, SYSLOG_PREFIX_SPAN)
    m = _START.search(line)
    if pm and (m is None or pm.start() < m.start()):
        pid = int(pm.group("pid"))
    if m is None:
        body = line[pm.end():] if pm else line
        return LogRecord(message=body, origin=origin, pid=pid)
    fields = parse_logfmt(line[m.start():].lstrip())
    msg = fields.pop("msg", "")
    level = fields.pop("level", "")
    ts = parse_time_ns(fields.pop("time", "")) if "time" in fields else None
    if pid is None and fields.get("pid", "").isdigit():
        pid = int(fields["pid"])
    return LogRecord(message=msg, level=level, fields=fields, ts_ns=ts, origin=origin, pid=pid,
                     line_ts=ts is not None)


_PRIORITY = {"0": "emerg", "1": "alert", "2": "crit", "3": "error", "4": "warning",
             "5": "notice", "6": "info", "7": "debug"}
_SLOG_PRIORITY = {"2": "critical", "3": "error", "4": "warning", "5": "info", "6": "debug",
                  "7": "trace"}
"""runtime-rs's journald PRIORITY back to its slog level: slog-journald writes Info as
notice (5), Debug as info (6) and Trace as debug (7)."""


def _journal_str(v: object) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(x, int) for x in v):  # binary field: byte array
        return bytes(x & 0xFF for x in v).decode("utf-8", "replace")
    if isinstance(v, list) and v:  # field present several times: the last one
        return _journal_str(v[-1])
    return "" if v is None else str(v)


def decode_journal_entry(entry: Mapping[str, object]) -> LogRecord | None:
    """One journald entry (`journalctl -o json`) -> LogRecord.

    - Go shim via syslog (`SYSLOG_IDENTIFIER=kata`): MESSAGE is a logfmt line.
    - runtime-rs (slog-journald, `SYSLOG_IDENTIFIER=kata`, `NAME=kata-runtime`): MESSAGE is the
      text; its slog keys arrive upper-cased with other characters as `_` (VERSION, SUBSYSTEM,
      COMPONENT, PID, NAME, SOURCE = the sandbox id, CODE_FILE/LINE/MODULE/FUNCTION), lower-cased
      here; PRIORITY is one step off slog's level (Info is sent as notice), mapped back.
    - containerd's unit: MESSAGE is a logfmt line (containerd's own, or a shim line it copied).
    - kernel (`_TRANSPORT=kernel`): MESSAGE is kernel text (`vfio-pci <BDF>: ...`).
    """
    msg = _journal_str(entry.get("MESSAGE"))[:MAX_LINE]
    if not msg.strip():
        return None
    ident = _journal_str(entry.get("SYSLOG_IDENTIFIER"))
    unit = _journal_str(entry.get("_SYSTEMD_UNIT"))
    transport = _journal_str(entry.get("_TRANSPORT"))
    origin = ("journald:kernel" if transport == "kernel" else
              f"journald:{ident}" if ident == "kata" else
              f"journald:{unit or ident or 'unknown'}")
    ts = None
    rt = _journal_str(entry.get("__REALTIME_TIMESTAMP"))
    if rt.isdigit():
        ts = int(rt) * 1000
    jpid = _journal_str(entry.get("_PID")) or _journal_str(entry.get("SYSLOG_PID"))
    pid = int(jpid) if jpid.isdigit() else None
    if transport != "kernel" and _START.search(msg):
        rec = decode_text_line(msg, origin)
        if rec is not None:
            return LogRecord(message=rec.message, level=rec.level, fields=rec.fields,
                             ts_ns=rec.ts_ns or ts, origin=origin, pid=rec.pid or pid, line_ts=rec.line_ts)
    fields = {k.lower(): _journal_str(v) for k, v in entry.items()
              if not k.startswith("_") and k not in ("MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER",
                                                      "SYSLOG_FACILITY", "SYSLOG_PID", "SYSLOG_TIMESTAMP")
              and k.isupper()}
    priority = _journal_str(entry.get("PRIORITY"))
    runtime_rs = ident == "kata" and fields.get("name") == "kata-runtime"
    level = fields.pop("level", "") or (_SLOG_PRIORITY if runtime_rs else _PRIORITY).get(priority, "")
    return LogRecord(message=msg, level=level.lower(), fields=fields, ts_ns=ts, origin=origin, pid=pid)


def sandbox_of(rec: LogRecord) -> str | None:
    """The sandbox id a record is about: Go's `sandbox=`, runtime-rs's `source=`/`sid=`."""
    for key in ("sandbox", "sid", "sandbox_id", "sandbox-id", "source"):
        v = rec.fields.get(key, "")
        if SANDBOX_ID_RE.match(v) or (key != "source" and v):
            return v
    return None


def to_event(rec: LogRecord, *, ts_ns: int, source: str = "kata") -> ev.LogLineMatched | None:
    """A LogLineMatched when the record's message matches a catalogue signature."""
    fields = dict(rec.fields)
    text = rec.message
    m = signatures.match(text, fields)
    err = fields.get("error")
    # containerd/kubelet put the runtime's error in error=; a wrapper message ("failed to
    # hotplug VFIO device") is reported by its error's own signature when that has one.
    if err and (m is None or m.signature.id in signatures.WRAPPERS):
        inner = signatures.match(err, fields)
        if inner is not None or m is not None:
            text = f"{rec.message}: {err}" if rec.message else err
            m = inner or m
    if m is None:
        return None
    qpid = rec.fields.get("qemuPid", "") or rec.fields.get("qemu_pid", "")
    return ev.LogLineMatched(
        ts_ns=rec.ts_ns or ts_ns, source=source, signature=m.signature.id, text=text,
        origin=rec.origin, level=rec.level, sandbox_id=sandbox_of(rec), bdf=m.bdf,
        pid=int(fields["pid"]) if fields.get("pid", "").isdigit() else rec.pid,
        qemu_pid=int(qpid) if qpid.isdigit() else None, iommu_group=m.iommu_group,
    )


_PCI = "/sys/bus/pci"


def _shim(rec: LogRecord, sandbox: str | None) -> ev.Process:
    """The Kata shim that logged `rec` (Go: `name=containerd-shim-v2`, runtime-rs:
    `NAME=kata-runtime`); its pid from the line's own `pid=` (containerd's copy of a shim line
    carries containerd's pid in its prefix)."""
    raw = rec.fields.get("pid", "")
    pid = int(raw) if raw.isdigit() else (rec.pid or 0)
    runtime = "rs" if rec.fields.get("name") == "kata-runtime" else "go"
    return ev.Process(pid=pid, comm="containerd-shim", sandbox_id=sandbox, kata_runtime=runtime)


def _field_path(rec: LogRecord, *keys: str) -> str:
    for k in keys:
        v = rec.fields.get(k, "")
        if v.startswith("/sys/"):
            return v
    return ""


def write_of(rec: LogRecord, m: signatures.SignatureMatch, ts_ns: int,
             source: str = "kata") -> ev.SysfsWriteObserved | None:
    """The sysfs write a Kata line announces (kata-facts §2, §4.3 #7/#8), attributed to the
    shim that logged it: the same fact an eBPF record gives, from another witness.

    Go logs each step just before it writes (`Write vfio-pci to driver_override`, `Unbinding
    device from driver`, `Writing bdf to drivers-probe-path`, the 3.0-3.7 `new_id`/`bind`
    lines); runtime-rs logs `echo ... > <path>` lines and `<bdf> is unbound from <driver>`
    after its unbind. The result is not logged: the write is taken as made (result 0)."""
    sid = sandbox_of(rec)
    bdf = m.bdf
    sig = m.signature.id
    if sig == "vfio-bind-override":
        control, value, driver = "driver_override", "vfio-pci", "vfio-pci"
        path = _field_path(rec, "driver-override-path") or f"{_PCI}/devices/{bdf}/driver_override"
    elif sig == "host-restore-override":
        value = driver = (m.driver or "").strip()
        control = "driver_override"
        path = _field_path(rec, "driver-override-path") or f"{_PCI}/devices/{bdf}/driver_override"
    elif sig == "device-unbind":
        control, value, driver = "unbind", bdf or "", m.driver
        path = _field_path(rec, "driver-path") or f"{_PCI}/devices/{bdf}/driver/unbind"
    elif sig == "drivers-probe":
        control, value, driver, path = "drivers_probe", bdf or "", None, f"{_PCI}/drivers_probe"
    elif sig == "vfio-unbind":
        control, value, driver = "unbind", bdf or "", "vfio-pci"
        path = f"{_PCI}/drivers/vfio-pci/unbind"
    elif sig == "vfio-bind-legacy" and "new-id" in rec.message:
        control, driver = "new_id", "vfio-pci"
        value = rec.fields.get("vendor-device-id", "").replace("0x", "")
        path = f"{_PCI}/drivers/vfio-pci/new_id"
    elif sig == "vfio-bind-legacy":
        control, value, driver, path = "bind", bdf or "", "vfio-pci", f"{_PCI}/drivers/vfio-pci/bind"
    elif sig == "host-restore-legacy":
        path = _field_path(rec, "driver-bind-path", "bind-path", "driver-path")
        driver = path.split("/")[-2] if path.endswith("/bind") else None
        control, value = "bind", bdf or ""
        path = path or f"{_PCI}/drivers/{driver or '<host driver>'}/bind"
    else:
        return None
    if bdf is None and control != "new_id":
        return None
    return ev.SysfsWriteObserved(
        ts_ns=rec.ts_ns or ts_ns, source=source, actor=_shim(rec, sid), path=path,
        control=control, value=value, bdf=bdf, driver=driver or None, result=0,
        mode=ev.KATA_LOG)


def to_events(rec: LogRecord, *, ts_ns: int, source: str = "kata") -> list[ev.Event]:
    """What a log record is evidence of: every failure its line reports (one line often wraps
    another: `failed to launch qemu: ... Bus 'rp0' not found`), else the sysfs write a Kata line
    announces (one witness of the move, like an eBPF record), else its informational match;
    [] when nothing matched."""
    e = to_event(rec, ts_ns=ts_ns, source=source)
    if e is None:
        return []
    if signatures.BY_ID[e.signature].severity == "info":
        m = signatures.match(rec.message, dict(rec.fields))
        if m is not None:
            w = write_of(rec, m, ts_ns, source)
            if w is not None:
                return [w]
        return [e]
    out: list[ev.Event] = [e]
    seen = {e.signature}
    for m in signatures.match_all(e.text, dict(rec.fields)):
        sid = m.signature.id
        if sid in seen or m.signature.severity == "info" or sid in signatures.WRAPPERS:
            continue
        seen.add(sid)
        out.append(replace(e, signature=sid, bdf=m.bdf or e.bdf,
                           iommu_group=m.iommu_group if m.iommu_group is not None
                           else e.iommu_group))
    return out


# ---- Followers ----------------------------------------------------------------------------------


class FileFollower:
    """Tails one file: new complete lines on each `poll()`; survives truncation and rotation."""

    def __init__(self, path: str | Path, *, from_start: bool = False) -> None:
        self.path = Path(path)
        self._fh: object | None = None
        self._ino: int | None = None
        self._pos = 0
        self._buf = b""
        self._from_start = from_start
        self.errors = 0

    @property
    def origin(self) -> str:
        return f"file:{self.path}"

    def _open(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        self._ino = st.st_ino
        self._pos = 0 if self._from_start else st.st_size
        self._from_start = True  # a file that appears later is read from its start
        self._buf = b""
        return True

    def poll(self, limit: int = 1 << 20) -> list[str]:
        """Complete new lines (without newline); a partial last line waits for its end."""
        if self._ino is None and not self._open():
            return []
        try:
            st = os.stat(self.path)
        except OSError:
            self._ino = None
            return []
        if st.st_ino != self._ino:  # rotated: the new file is read from its start
            self._ino, self._pos, self._buf = st.st_ino, 0, b""
        elif st.st_size < self._pos:  # truncated
            self._pos, self._buf = 0, b""
        if st.st_size == self._pos:
            return []
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self._pos)
                data = fh.read(limit)
        except OSError:
            self.errors += 1
            return []
        self._pos += len(data)
        data = self._buf + data
        lines = data.split(b"\n")
        self._buf = lines.pop()[:MAX_LINE]
        return [ln.decode("utf-8", "replace") for ln in lines]


def _as_paths(root: HostPaths | Path | str) -> HostPaths:
    return root if isinstance(root, HostPaths) else HostPaths(Path(root))


def _journal_files(paths: HostPaths, host_dir: str, depth: int, out: list[str]) -> bool:
    """Collect `*.journal` host paths under `host_dir`; False when, confined, a link is met
    (journalctl, a program of its own, would follow it wherever it leads: refused)."""
    try:
        names = sorted(paths.listdir(host_dir))
    except OSError:
        return True
    for name in names:
        p = f"{host_dir}/{name}"
        if paths.confined and paths.is_link(p):
            paths.refuse(p, f"{p} is a symlink in a journal directory: journalctl would follow it "
                            "outside --root")
            return False
        if name.endswith(".journal"):
            out.append(p)
        elif depth > 0 and paths.is_dir(p) and not _journal_files(paths, p, depth - 1, out):
            return False
    return True


def journald_dirs(root: HostPaths | Path | str) -> list[Path]:
    """Directories under the root that directly hold journal files (`<base>/<machine-id>/`), as
    the agent's paths for `journalctl -D`; none from a journal tree that holds a link."""
    paths = _as_paths(root)
    files: list[str] = []
    for base in ("/var/log/journal", "/run/log/journal"):
        if paths.is_dir(base) and not _journal_files(paths, base, 3, files):
            return []
    out: list[Path] = []
    for f in sorted(files):
        try:
            d = Path(paths.real(os.path.dirname(f)))
        except OSError:
            continue
        if d not in out:
            out.append(d)
    return out


_KMSG = re.compile(r"^(?P<pri>\d+),(?P<seq>\d+),(?P<us>\d+),[^;]*;(?P<msg>[^\n]*)")


def decode_kmsg(record: bytes, boot_ns: int = 0) -> LogRecord | None:
    """One /dev/kmsg record (`<prio>,<seq>,<usec>,<flags>;<text>\n KEY=v...`) -> LogRecord.

    The record's time is microseconds since boot; `boot_ns` (wall clock at boot) makes it wall time.
    """
    m = _KMSG.match(record.decode("utf-8", "replace"))
    if m is None:
        return None
    text = re.sub(r"\\x([0-9a-f]{2})", lambda x: chr(int(x.group(1), 16)), m.group("msg"))[:MAX_LINE]
    level = _PRIORITY.get(str(int(m.group("pri")) & 7), "")
    return LogRecord(message=text, level=level, ts_ns=boot_ns + int(m.group("us")) * 1000 if boot_ns else None,
                     origin="kmsg", fields={"seq": m.group("seq")})


class KmsgFollower:
    """New records of /dev/kmsg (read from its end); for hosts without a journal."""

    def __init__(self, path: str | Path = "/dev/kmsg", *, paths: HostPaths | None = None) -> None:
        """`paths`: open `path` (a host path then) inside that root."""
        self.path = str(path)
        self.paths = paths
        self.fd: int | None = None
        self.reason = ""
        self.lost = 0

    def start(self) -> bool:
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            self.fd = self.paths.open(self.path, flags) if self.paths else os.open(self.path, flags)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as exc:
            self.reason = f"{self.path}: {exc.strerror or exc}"
            self.stop()
            return False
        return True

    def poll(self, limit: int = 4096) -> list[bytes]:
        out: list[bytes] = []
        while self.fd is not None and len(out) < limit:
            try:
                out.append(os.read(self.fd, 8192))
            except BlockingIOError:
                break
            except BrokenPipeError:  # EPIPE: records were overwritten before we read them
                self.lost += 1
                continue
            except OSError as exc:
                self.reason = f"{self.path}: {exc.strerror or exc}"
                self.stop()
        return out

    def stop(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def boot_time_ns(proc_root: Path | HostPaths) -> int:
    """Wall-clock time of boot from `<proc>/stat` btime (seconds), 0 when unknown; given
    HostPaths, `/proc/stat` is read inside its root."""
    try:
        text = (proc_root.read_text("/proc/stat") if isinstance(proc_root, HostPaths)
                else (proc_root / "stat").read_text())
        for line in text.splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) * 1_000_000_000
    except (OSError, ValueError):
        pass
    return 0


JOURNAL_MATCHES = ("SYSLOG_IDENTIFIER=kata", "+", "_SYSTEMD_UNIT=containerd.service", "+",
                   "_TRANSPORT=kernel")


class JournaldFollower:
    """`journalctl -f -o json` on the host journal (or the journal files under --root)."""

    def __init__(self, root: HostPaths | Path, *, since_now: bool = True, units: tuple[str, ...] = ()) -> None:
        self.paths = _as_paths(root)
        self.root = self.paths.root
        self.since_now = since_now
        self.units = units
        self.proc: subprocess.Popen[bytes] | None = None
        self._buf = b""
        self.reason = ""

    @staticmethod
    def available(root: HostPaths | Path) -> tuple[bool, str]:
        paths = _as_paths(root)
        root = paths.root
        if shutil.which("journalctl") is None:
            return False, "journalctl not found"
        if paths.confined and not journald_dirs(paths):
            refused = [r for r in paths.refusals.all() if "journal" in r]
            if refused:
                return False, f"journal refused: {refused[0]}"
            return False, f"no journal files under {root}/var/log/journal or {root}/run/log/journal"
        if not paths.confined and not (Path("/run/systemd/journal").is_dir() or journald_dirs(paths)):
            return False, "no systemd journal on this host"
        return True, ""

    def command(self) -> list[str]:
        cmd = ["journalctl", "-f", "-o", "json", "--no-pager", "-q"]
        cmd += ["-n", "0"] if self.since_now else ["--no-tail"]
        if self.paths.confined:
            if self.paths.is_file("/etc/machine-id"):
                cmd += ["--root", str(self.root)]  # journalctl finds <root>/var/log/journal/<machine-id>
            else:
                dirs = journald_dirs(self.paths)
                cmd += ["-D", str(dirs[0])] if dirs else []
        matches = list(JOURNAL_MATCHES)
        for u in self.units:
            matches += ["+", f"_SYSTEMD_UNIT={u}"]
        return cmd + matches

    def start(self) -> None:
        self.proc = subprocess.Popen(self.command(), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
        assert self.proc.stdout is not None
        os.set_blocking(self.proc.stdout.fileno(), False)

    def fileno(self) -> int | None:
        return self.proc.stdout.fileno() if self.proc and self.proc.stdout else None

    def poll(self, timeout: float = 0.0) -> Iterator[dict[str, object]]:
        """Decoded JSON entries available now (waits up to `timeout` for the first)."""
        fd = self.fileno()
        if fd is None:
            return
        r, _, _ = select.select([fd], [], [], timeout)
        if not r:
            return
        while True:
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                break
            if not chunk:
                self.reason = "journalctl exited"
                self.stop()
                break
            self._buf += chunk
            if len(chunk) < 1 << 16:
                break
        *lines, self._buf = self._buf.split(b"\n")
        for raw in lines:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                yield obj

    def stop(self) -> None:
        p, self.proc = self.proc, None
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(2)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
