"""Both probe files compile here and every program passes this kernel's verifier (root + bcc).

Kprobe mode cannot attach on this machine (CONFIG_KPROBES unset), but its programs are of the
kprobe type, which this kernel loads: verifying them here is what CI can prove about that mode
(the QEMU lab attaches them to real drivers).
"""

from __future__ import annotations

import os

import pytest

from diag.sources.ebpf import bcc_facade
from diag.sources.ebpf.mode import KPROBE_HANDLERS, syscall_defines
from diag.sources.ebpf.source import KPROBE_PROBE, OPEN_ONLY_PROBE, TRACEPOINT_PROBE, probes_dir


@pytest.fixture(autouse=True)
def _needs_bcc(require_root: None) -> None:
    if bcc_facade.import_error():
        pytest.skip(f"bcc unavailable: {bcc_facade.import_error()}")


def test_kprobe_programs_pass_the_verifier() -> None:
    """Every kp_<handler> entry program and the shared kr_store return program load."""
    d = probes_dir()
    prog = bcc_facade.Program(d / KPROBE_PROBE, include=d, defines={"FILTER_TGID": os.getpid()})
    try:
        for fn in [*sorted(set(KPROBE_HANDLERS.values())), "kr_store"]:
            prog.load_kprobe(fn)
    finally:
        prog.close()


@pytest.mark.parametrize("name", [TRACEPOINT_PROBE, OPEN_ONLY_PROBE])
def test_tracepoint_programs_load_and_attach(name: str) -> None:
    """Both tracepoint-mode files compile against this machine's headers and attach."""
    d = probes_dir()
    prog = bcc_facade.Program(d / name, include=d,
                              defines={"FILTER_TGID": os.getpid(), **syscall_defines()})
    try:
        assert prog.percpu_sum("lost", 0) == 0
    finally:
        prog.close()
