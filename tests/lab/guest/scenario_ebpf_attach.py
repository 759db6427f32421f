"""Diagnostic scenario: compile the agent's kprobe program and attach each handler by hand,
reporting every failure with its reason (the source folds them into a fallback)."""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import labio


def main() -> int:
    from diag.sources import SourceContext
    from diag.sources.ebpf import bcc_facade
    from diag.sources.ebpf import mode as M
    from diag.sources.ebpf import source as S

    out: list[str] = []
    facts = S.EbpfSource(SourceContext()).facts()
    out.append(f"facts: {facts!r}"[:3000])
    d = S.probes_dir()
    t0 = time.monotonic()
    try:
        prog = bcc_facade.Program(d / S.KPROBE_PROBE, include=d, defines={"FILTER_TGID": os.getpid()})
    except Exception:
        out.append("compile failed:\n" + traceback.format_exc())
        labio.send("ebpf-attach.txt", "\n".join(out).encode())
        return 0
    out.append(f"compiled {S.KPROBE_PROBE} in {time.monotonic() - t0:.1f}s")
    by_addr = dict(facts.addresses)
    for sym in sorted(facts.handlers):
        try:
            if sym in by_addr:
                for i, addr in enumerate(by_addr[sym]):
                    prog.attach_kprobe_at(addr, M.KPROBE_HANDLERS[sym], ret=False, tag=f"{sym}_{i}")
                    prog.attach_kprobe_at(addr, "kr_store", ret=True, tag=f"{sym}_{i}_ret")
                out.append(f"ok   {sym} at {[hex(a) for a in by_addr[sym]]}")
            else:
                prog.attach_kprobe(sym, M.KPROBE_HANDLERS[sym])
                prog.attach_kretprobe(sym, "kr_store")
                out.append(f"ok   {sym}")
        except Exception as exc:
            out.append(f"FAIL {sym}: {exc!r}")
    out.append("kprobes/list:\n" + Path("/sys/kernel/debug/kprobes/list").read_text())
    out.append("grep store kallsyms:\n" + "\n".join(
        line for line in Path("/proc/kallsyms").read_text().splitlines()
        if line.split()[2] in M.KPROBE_HANDLERS))
    labio.send("ebpf-attach.txt", "\n".join(out).encode())
    return 0
