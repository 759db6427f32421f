"""Host side of the lab: boots the guest under QEMU (TCG) and collects its named payloads.

The guest prints progress and kernel messages on ttyS0 (saved as ``console.log``) and sends
results framed by markers on ttyS1 (see tests/lab/guest/labio.py), saved as ``data.log``.
A guest whose kernel panics, or that stops before the lab's init prints its first line, is
reported as such (`Boot.failure`, from `boot_failure`), with the console's last lines, at once.
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
PANIC = "Kernel panic - not syncing"
FIRST_LINE = "lab-init: "  # tests/lab/guest/init.sh's first line: the lab's own code runs
# How long a panicked guest may go on printing (its backtrace) before it is killed; with
# panic=-1 and -no-reboot QEMU exits by itself at once.
PANIC_GRACE_S = 3.0


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
    failure: str = ""
    """Why the guest died or never ran the scenario (`boot_failure`), or "" when it did run."""
    workdir: Path | None = None

    @property
    def status(self) -> str:
        return self.payloads.get("status", b"").decode()

    @property
    def ok(self) -> bool:
        return self.status.startswith("rc=0")

    def explain(self, lines: int = 25) -> str:
        """The failure, where the whole console is, and its last lines (for a panic, those up
        to the panic: the backtrace after it says little)."""
        where = f"{self.workdir / 'console.log'}" if self.workdir else "the console"
        return (f"scenario {self.scenario}: {self.failure or 'failed'}; see {where}, "
                f"last lines:\n{last_lines(self.console, lines)}")


def last_lines(console: str, n: int) -> str:
    """The console's last n lines, or when the kernel panicked the n lines ending a few after
    the panic line."""
    text = console.replace("\r", "").rstrip().splitlines()
    end = next((i + 4 for i, line in enumerate(text) if PANIC in line), len(text))
    return "\n".join(text[max(0, end - n):end])


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


def _line_after(text: str, marker: str) -> str:
    for line in text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip(" :\r")
    return ""


def boot_failure(console: str, qemu_out: str, returncode: int | None) -> str:
    """Why a guest died or never reached the lab's init, read from its console and QEMU's own
    output; "" when they show no such thing (the scenario's status then tells)."""
    started = FIRST_LINE in console
    panic = _line_after(console, PANIC)
    if panic:
        # What user space said last before the panic (switch_root, our initrd's messages).
        said = [line.strip() for line in console.replace("\r", "").split(PANIC, 1)[0].splitlines()
                if line.strip() and not line.startswith("[")]
        if said:
            panic += f" (after: {said[-1]})"
    unpack = _line_after(console, "Initramfs unpacking failed")
    if unpack:
        then = f"; then: {panic}" if panic else ""
        return (f"the guest kernel panicked while unpacking the initrd (Initramfs unpacking "
                f"failed: {unpack}{then}): the initrd is not a whole gzip'd cpio archive"
                if panic else f"the guest kernel could not unpack the initrd ({unpack})")
    if panic and not started:
        return f"the guest kernel panicked before the lab's init ran: {panic}"
    if panic:
        return f"the guest kernel panicked during the scenario: {panic}"
    if "initrd: cannot mount /dev/vda" in console:
        return "the initrd could not mount the root disk /dev/vda"
    if returncode is not None and returncode > 0 and not console.strip():
        last = qemu_out.strip().splitlines()[-1:] or ["(no output)"]
        return f"QEMU exited {returncode} before the guest printed anything: {last[0]}"
    if returncode == 0 and not started:
        return f"the guest stopped before the lab's init ran (no {FIRST_LINE.strip()!r} line)"
    return ""


def boot(guest: Guest, scenario: str, workdir: Path, *, timeout: float = 600,
         extra_append: str = "", stall_s: float = 240) -> Boot:
    """Boots the guest with lab.scenario=<scenario>, waits for it to power off, parses output.

    A guest whose console and data channels both stay silent for `stall_s` is hung, not slow
    (the longest quiet stretch, bcc compiling under TCG, is under two minutes): it is killed
    and the result says `stalled`. Once the guest kernel has reported an RCU stall, its
    repeated stall reports (every 21 s, for ever: the hang seen under TCG, a timer interrupt
    that never comes) are not progress; only the lab's own lines and data output are.
    A kernel panic ends the boot at once (`Boot.failure` says what happened)."""
    workdir.mkdir(parents=True, exist_ok=True)
    for f in ("console.log", "data.log", "qemu.out"):
        (workdir / f).unlink(missing_ok=True)
    t0 = time.monotonic()
    stalled = False
    with open(workdir / "qemu.out", "wb") as out:
        proc = subprocess.Popen(qemu_cmd(guest, scenario, workdir, extra_append=extra_append),
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        last_size, last_change = -1, time.monotonic()
        panic_at: float | None = None
        console, data = workdir / "console.log", workdir / "data.log"
        while proc.poll() is None:
            now = time.monotonic()
            text = console.read_bytes() if console.exists() else b""
            size = progress(text, data.stat().st_size if data.exists() else 0)
            if size != last_size:
                last_size, last_change = size, now
            if panic_at is None and PANIC.encode() in text:
                panic_at = now
            if panic_at is not None and now - panic_at > PANIC_GRACE_S:
                proc.kill()
                proc.wait()
                break
            if now - t0 > timeout or now - last_change > stall_s:
                stalled = now - last_change > stall_s
                proc.kill()
                proc.wait()
                break
            time.sleep(2)
    qout = (workdir / "qemu.out").read_bytes()
    res = Boot(scenario=scenario, seconds=time.monotonic() - t0, returncode=proc.returncode,
               stalled=stalled, workdir=workdir)
    console = (workdir / "console.log").read_text(errors="replace") if (
        workdir / "console.log").exists() else ""
    res.console = console + qout.decode(errors="replace")
    res.failure = boot_failure(console, qout.decode(errors="replace"), proc.returncode)
    data = workdir / "data.log"
    if data.exists():
        res.payloads = parse_payloads(data.read_text(errors="replace"))
    return res
