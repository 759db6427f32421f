"""Diagnostic scenario: the project's eBPF source run directly (no pipeline), printing every
event it emits and its stats, while the shim actor moves a VF."""

from __future__ import annotations

import threading
import time
import traceback
from pathlib import Path

import kata
import labio
import sriov
from sriov import VF0


def main() -> int:
    sriov.setup()
    sriov.enable_vfs(2)
    kata.install_binaries()
    from diag.sources import SourceContext
    from diag.sources.ebpf.source import EbpfSource

    out: list[str] = []
    src = EbpfSource(SourceContext())
    out.append(f"probe: {src.probe()!r}")
    stop = threading.Event()

    def emit(e: object) -> None:
        out.append(f"{time.monotonic():.3f} {e!r}"[:600])

    def runner() -> None:
        try:
            src.run(emit, stop)
        except BaseException:
            out.append(traceback.format_exc())

    t0 = time.monotonic()
    th = threading.Thread(target=runner, daemon=True)
    th.start()
    ok = src.ready.wait(600)
    out.append(f"ready={ok} after {time.monotonic() - t0:.1f}s mode={getattr(src, 'mode', '?')}")
    kprobes = Path("/sys/kernel/debug/kprobes/list").read_text() if ok else ""
    out.append("kprobes/list:\n" + kprobes)
    sriov.write(f"{sriov.PCI}/devices/{VF0}/driver_override", "vfio-pci")  # python3 writer
    shim = kata.start_shim(kata.sandbox_id(8), f"kata38-bind:{VF0};kata38-restore:{VF0}:igbvf")
    kata.wait_steps_done(shim)
    time.sleep(3)
    kata.stop(shim)
    out.append(f"stats: {getattr(src, 'stats', None)!r}")
    stop.set()
    th.join(10)
    out.append(f"thread alive after stop: {th.is_alive()}")
    labio.send("ebpf-direct.txt", "\n".join(out).encode())
    return 0
