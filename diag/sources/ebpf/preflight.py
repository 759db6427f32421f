"""Provides the `vfiowatch check` line for the eBPF source: the mode it would run in, and why."""

from __future__ import annotations

from diag.common.paths import HostPaths
from diag.sources.ebpf.mode import choose_mode, gather_facts, variant_note
from diag.sources.ebpf.source import DEFAULT_VARIANT
from diag.sources.preflight import CheckResult, check


@check
def _ebpf_mode(paths: HostPaths) -> CheckResult:
    choice = choose_mode("auto", gather_facts(paths))
    if choice.mode == "tracepoint":
        return CheckResult("ebpf mode", True,
                           f"tracepoint ({choice.reason}; by default the "
                           f"{variant_note(DEFAULT_VARIANT)})")
    if choice.mode:
        return CheckResult("ebpf mode", True, f"{choice.mode} ({choice.reason})")
    return CheckResult("ebpf mode", False, f"unavailable: {choice.reason}", fix=choice.hint,
                       level="warn")
