"""Capabilities are read from the kernel's CapEff mask and judged against NEEDS, never by uid."""

from __future__ import annotations

from pathlib import Path

from diag.common import caps
from diag.common.needs import NEEDS


def _status(mask: int) -> str:
    return f"Name:\tvfiowatch\nUid:\t0\t0\t0\t0\nCapInh:\t0000000000000000\nCapEff:\t{mask:016x}\n"


def test_every_capability_named_in_needs_is_a_real_capability_name() -> None:
    """NEEDS and the kernel's list agree on spelling (a typo would never be found missing)."""
    named = {c for n in NEEDS for c, _ in (*n.capabilities, *n.fallback_capabilities)}
    assert named <= set(caps.NAMES)


def test_root_with_four_capabilities_dropped_misses_them_where_they_are_needed() -> None:
    """The mask of uid 0 without SYS_ADMIN, BPF, PERFMON, NET_ADMIN: each part lacks its own."""
    full = (1 << 41) - 1
    dropped = full & ~(1 << 21 | 1 << 39 | 1 << 38 | 1 << 12)
    have = caps.parse_status(_status(dropped))
    assert not have.full
    assert [c for c, _ in caps.missing("ebpf", have)] == ["BPF", "PERFMON"]
    assert [c for c, _ in caps.missing("links", have)] == ["NET_ADMIN", "SYS_ADMIN"]
    assert [c for c, _ in caps.missing("uevent", have)] == ["NET_ADMIN"]
    assert caps.missing("kata", have) == ()
    assert caps.parse_status(_status(full)).full


def test_cap_sys_admin_grants_what_cap_bpf_and_cap_perfmon_grant() -> None:
    """bpf_capable()/perfmon_capable(): SYS_ADMIN alone loads programs (kernels before 5.8)."""
    have = caps.parse_status(_status(1 << 21))
    assert caps.missing("ebpf", have) == (("SYS_PTRACE", dict(next(
        n for n in NEEDS if n.part == "ebpf").capabilities)["SYS_PTRACE"]),)


def test_an_unreadable_status_says_unknown_not_missing() -> None:
    """No CapEff line: the set is unknown, nothing is reported missing."""
    have = caps.parse_status("Name:\tx\n")
    assert not have.known and caps.missing("ebpf", have) == ()


def test_this_process_reads_its_own_set() -> None:
    """effective() is the kernel's CapEff of this very process."""
    mask = next(int(line.split()[1], 16) for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("CapEff:"))
    assert caps.effective() == caps.parse_status(_status(mask))
