"""Diagnostic scenario: what tracefs says to kprobe_events definitions by address and by name
for the store handlers kallsyms lists twice (error_log gives the reason)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import labio

T = Path("/sys/kernel/tracing")


def main() -> int:
    out = []
    syms = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        a, _, name = line.split()[:3]
        if name in ("driver_override_store", "new_id_store", "bind_store"):
            syms.setdefault(name, []).append(a)
    out.append(repr(syms))
    tries = []
    for name, addrs in syms.items():
        for i, a in enumerate(addrs):
            tries += [f"p:lab/{name}_{i} 0x{a}", f"r:lab/{name}_{i}_r 0x{a}",
                      f"p:lab/{name}_{i}_p4 0x{int(a, 16) + 4:x}"]
        tries.append(f"p:lab/{name}_byname {name}")
    for t in tries:
        r = subprocess.run(["sh", "-c", f"echo '{t}' >> {T}/kprobe_events"],
                           capture_output=True, text=True)
        out.append(f"{t!r}: rc={r.returncode} {r.stderr.strip()}")
    out.append("error_log:\n" + (T / "error_log").read_text())
    out.append("kprobe_events:\n" + (T / "kprobe_events").read_text())
    out.append("config:\n" + subprocess.run(
        ["sh", "-c", "uname -r; grep -h 'CONFIG_X86_KERNEL_IBT\\|CONFIG_KPROBE' /boot/config-* "
         "2>/dev/null"], capture_output=True, text=True).stdout)
    labio.send("kprobe-events.txt", "\n".join(out).encode())
    return 0
