"""Provides the importer of process listings (`ps aux`, `ps -ef`, `ps -eo ...`): Kata shims and their VMMs.

A shim is `containerd-shim-kata-v2 ... -id <sandbox>` (runtime-rs when its path holds
`runtime-rs`); its VMM is `qemu-system-* -name sandbox-<sandbox>[,...]` with one `-device
vfio-pci,host=<BDF>[,bus=<bus>]` per device it was given (kata-facts §3.2). Each sandbox found
becomes a `SandboxStarted` naming its shim and VMM pids and the VFs its VMM holds, a `static`
input (the listing's time is not in it). Its configuration is not in the listing:
`cold_plug_origin` is `unknown`, so the handler's configuration decides.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from diag import events as ev
from diag.common.bdf import normalise_bdf
from diag.importers import FileStats, Parsed, register
from diag.importers.textlog import bounded_lines

SOURCE = "ps"
MAX_LINE = 65536
"""A process's command line is cut here (QEMU's is a few KiB)."""
_SID = r"(?P<sid>[0-9a-zA-Z][\w.-]{0,127})"
SHIM = re.compile(rf"(?P<exe>[^\s/]{{0,64}}(?:/[^\s/]{{0,64}}){{0,12}}containerd-shim-kata-v2)\b"
                  rf"[^\n]{{0,4096}}?\s-id\s+{_SID}")
VMM = re.compile(r"(?P<exe>[^\s/]{0,64}(?:/[^\s/]{0,64}){0,12}(?:qemu-system-\S{1,40}|qemu-kvm|"
                 rf"cloud-hypervisor))\b[^\n]{{0,4096}}?-name\s+sandbox-{_SID}")
DEVICE = re.compile(r"-device\s+vfio-pci,(?P<args>\S+)")
_PID = re.compile(r"^\s*(?:\S+\s+)?(?P<pid>\d{1,10})\s")
ROW = re.compile(r"^\s*\S+\s+\d{1,10}\s+(?:[\d.]+\s+[\d.]+\s+\d+\s+\d+\s+\S+\s+\S+\s+\S+\s+"
                 r"[\d:]+\s+|\d{1,10}\s+\d+\s+\S+\s+\S+\s+[\d:]+\s+)")
"""A `ps aux` row (USER PID %CPU %MEM VSZ RSS TTY STAT START TIME) or a `ps -ef` row (UID PID
PPID C STIME TTY TIME)."""
HEADER = re.compile(r"^\s*(?:USER|UID)\s+PID\b|^\s*PID\s+(?:PPID\s+)?(?:COMMAND|CMD|TTY|COMM)\b")


@dataclass
class _Sandbox:
    sid: str
    shim_pid: int | None = None
    vmm_pid: int | None = None
    runtime: str = "go"
    devices: list[str] = field(default_factory=list)
    buses: list[str] = field(default_factory=list)


def _pid(line: str) -> int | None:
    m = _PID.match(line)
    return int(m.group("pid")) if m else None


def parse_ps(lines: Iterable[str], stats: FileStats | None = None) -> Iterator[ev.Event]:
    st = stats if stats is not None else FileStats("<ps>")
    found: dict[str, _Sandbox] = {}
    for raw in lines:
        st.lines += 1
        line = raw.rstrip("\r\n")[:MAX_LINE]
        if "containerd-shim-kata" not in line and "sandbox-" not in line:
            continue  # cheap test first: most of a listing is other processes
        m = SHIM.search(line)
        if m is not None:
            sb = found.setdefault(m.group("sid"), _Sandbox(m.group("sid")))
            sb.shim_pid = _pid(line)
            sb.runtime = "rs" if "runtime-rs" in m.group("exe") else "go"
            continue
        m = VMM.search(line)
        if m is not None:
            sid = m.group("sid").split(",")[0]
            sb = found.setdefault(sid, _Sandbox(sid))
            sb.vmm_pid = _pid(line)
            for d in DEVICE.finditer(line):
                args = dict(a.split("=", 1) for a in d.group("args").split(",") if "=" in a)
                if "host" in args:
                    sb.devices.append(normalise_bdf(args["host"]))
                    sb.buses.append(args.get("bus", ""))
    for sb in found.values():
        what = ", ".join(x for x in (f"shim {sb.shim_pid}" if sb.shim_pid else "",
                                     f"VMM {sb.vmm_pid}" if sb.vmm_pid else "",
                                     f"VFs {', '.join(sb.devices)}" if sb.devices else "") if x)
        st.note(f"sandbox {sb.sid[:12]}: {what or 'named only'}")
        st.events += 1
        yield ev.SandboxStarted(
            ts_ns=0, source=SOURCE, sandbox_id=sb.sid, runtime=sb.runtime, shim_pid=sb.shim_pid,
            vmm_pid=sb.vmm_pid, vmm_vfio_devices=tuple(sb.devices),
            vmm_vfio_buses=tuple(sb.buses), cold_plug_origin="unknown")


class _PsImporter:
    name = "ps"
    description = "process listing (ps aux, ps -ef): Kata shims and their VMMs"

    def sniff(self, head: list[str]) -> bool:
        lines = [x for x in head[:400] if x.strip()]
        if any(HEADER.match(x) for x in lines[:5]):
            return True
        return any(SHIM.search(x) or VMM.search(x) for x in lines) and sum(
            bool(ROW.match(x)) for x in lines) * 2 >= len(lines)

    def parse(self, lines: Iterable[bytes], stats: FileStats, origin: str) -> Parsed:
        return Parsed(events=list(parse_ps(bounded_lines(lines, stats), stats)), clock="static")


register(_PsImporter())
