"""Host side of the lab: boots the guest under QEMU (TCG) and collects its named payloads.

The guest prints progress and kernel messages on ttyS0 (saved as ``console.log``) and sends
results framed by markers on ttyS1 (see tests/lab/guest/labio.py), saved as ``data.log``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.lab.labbuild import Guest

BEGIN = re.compile(r"^=====BEGIN (\S+) (\d+) ([0-9a-f]{64})=====$")


@dataclass(slots=True, kw_only=True)
class Boot:
    """What one boot gave back."""

    scenario: str
    payloads: dict[str, bytes] = field(default_factory=dict)
    console: str = ""
    seconds: float = 0.0
    returncode: int | None = None
    stalled: bool = False
    """The guest stopped making progress (no console or data output for `stall_s`) and was
    killed: seen once under TCG as an RCU stall whose timer interrupt never came."""

    @property
    def status(self) -> str:
        return self.payloads.get("status", b"").decode()

    @property
    def ok(self) -> bool:
        return self.status.startswith("rc=0")


def qemu_cmd(guest: Guest, scenario: str, workdir: Path, *, memory: int = 1024,
             extra_append: str = "") -> list[str]:
    append = (f"console=ttyS0 intel_iommu=on iommu=pt panic=-1 loglevel=4 "
              f"lab.scenario={scenario} {extra_append}").strip()
    return [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-machine", "q35",
        "-m", str(memory), "-smp", "2", "-display", "none", "-no-reboot", "-nodefaults",
        "-monitor", "none",
        "-chardev", f"file,id=con,path={workdir / 'console.log'}", "-serial", "chardev:con",
        "-chardev", f"file,id=dat,path={workdir / 'data.log'}", "-serial", "chardev:dat",
        "-kernel", str(guest.kernel), "-initrd", str(guest.initrd), "-append", append,
        "-device", "intel-iommu",
        "-drive", f"file={guest.image},format=raw,if=none,id=d0",
        "-device", "virtio-blk-pci,drive=d0",
        "-device", "pcie-root-port,id=rp1,chassis=1,slot=1",
        "-netdev", "user,id=n0,restrict=on", "-device", "igb,netdev=n0,bus=rp1,id=igb0",
    ]


def parse_payloads(text: str) -> dict[str, bytes]:
    """Extracts and checks every framed payload from the data channel's text."""
    out: dict[str, bytes] = {}
    lines = text.replace("\r", "").split("\n")
    i = 0
    while i < len(lines):
        m = BEGIN.match(lines[i])
        i += 1
        if not m:
            continue
        name, size, digest = m.group(1), int(m.group(2)), m.group(3)
        chunk: list[str] = []
        while i < len(lines) and lines[i] != f"=====END {name}=====":
            chunk.append(lines[i])
            i += 1
        i += 1
        body = gzip.decompress(base64.b64decode("".join(chunk)))
        if len(body) != size or hashlib.sha256(body).hexdigest() != digest:
            raise ValueError(f"payload {name} is corrupt")
        out[name] = body
    return out


def progress(console: bytes, data_size: int) -> int:
    """A number that grows while the guest makes progress: console and data output; once the
    kernel has reported an RCU stall, only the lab's own console lines (`lab:`, `lab-init:`)
    and data, since a stalled kernel repeats its report every 21 s for ever."""
    if b"detected stalls" not in console:
        return len(console) + data_size
    return data_size + sum(len(line) for line in console.splitlines()
                           if b"lab: " in line or b"lab-init: " in line)


def boot(guest: Guest, scenario: str, workdir: Path, *, timeout: float = 600,
         extra_append: str = "", stall_s: float = 240) -> Boot:
    """Boots the guest with lab.scenario=<scenario>, waits for it to power off, parses output.

    A guest whose console and data channels both stay silent for `stall_s` is hung, not slow
    (the longest quiet stretch, bcc compiling under TCG, is under two minutes): it is killed
    and the result says `stalled`. Once the guest kernel has reported an RCU stall, its
    repeated stall reports (every 21 s, for ever: the hang seen under TCG, a timer interrupt
    that never comes) are not progress; only the lab's own lines and data output are."""
    workdir.mkdir(parents=True, exist_ok=True)
    for f in ("console.log", "data.log", "qemu.out"):
        (workdir / f).unlink(missing_ok=True)
    t0 = time.monotonic()
    stalled = False
    with open(workdir / "qemu.out", "wb") as out:
        proc = subprocess.Popen(qemu_cmd(guest, scenario, workdir, extra_append=extra_append),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        last_size, last_change = -1, time.monotonic()
        console, data = workdir / "console.log", workdir / "data.log"
        while proc.poll() is None:
            now = time.monotonic()
            size = progress(console.read_bytes() if console.exists() else b"",
                            data.stat().st_size if data.exists() else 0)
            if size != last_size:
                last_size, last_change = size, now
            if now - t0 > timeout or now - last_change > stall_s:
                stalled = now - last_change > stall_s
                proc.kill()
                proc.wait()
                break
            time.sleep(2)
    qout = (workdir / "qemu.out").read_bytes()
    res = Boot(scenario=scenario, seconds=time.monotonic() - t0, returncode=proc.returncode,
               stalled=stalled)
    console = (workdir / "console.log").read_text(errors="replace") if (
        workdir / "console.log").exists() else ""
    res.console = console + qout.decode(errors="replace")
    data = workdir / "data.log"
    if data.exists():
        res.payloads = parse_payloads(data.read_text(errors="replace"))
    return res
