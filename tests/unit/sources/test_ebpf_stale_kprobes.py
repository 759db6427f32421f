"""Kprobe events a killed agent left in tracefs are recognised (and only ours of dead pids)."""

from __future__ import annotations

from diag.sources.ebpf.bcc_facade import stale_kprobe_events


def test_only_our_events_of_dead_agents_are_stale() -> None:
    """vfw<pid>_ events of a dead pid are stale; a live agent's and other tools' are kept."""
    listing = (
        "p:vfiowatch/vfw111_override_0 0xffffffff81234560\n"
        "r16:vfiowatch/vfw111_override_0_ret 0xffffffff81234560\n"
        "p:vfiowatch/vfw222_new_id_1 0xffffffff81300000\n"
        "p:kprobes/myprobe do_sys_open\n"
        "p:vfiowatch/other 0xffffffff81000000\n"
    )
    stale = stale_kprobe_events(listing, alive=lambda pid: pid == 222)
    assert stale == ["vfw111_override_0", "vfw111_override_0_ret"]
    assert stale_kprobe_events("", alive=lambda pid: False) == []
