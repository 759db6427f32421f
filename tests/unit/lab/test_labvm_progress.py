"""The lab harness's hang detector: what counts as a guest making progress."""

from __future__ import annotations

from tests.lab import labvm

BOOT = b"[    1.0] virtio_blk virtio1: [vda] 2457600 512-byte logical blocks\nlab-init: uptime 3.97s\n"
STALL = (b"[  136.6] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n"
         b"[  136.6] rcu: rcu_preempt kthread timer wakeup didn't happen for 5254 jiffies!\n")


def test_any_output_is_progress_while_the_kernel_is_well() -> None:
    """Kernel lines, lab lines and data output all move the counter."""
    a = labvm.progress(BOOT, 0)
    assert labvm.progress(BOOT + b"[    2.0] igb 0000:01:00.0: added PHC\n", 0) > a
    assert labvm.progress(BOOT, 10) > a


def test_repeated_rcu_stall_reports_are_not_progress() -> None:
    """Found by CI: a TCG guest whose timer interrupt never came printed an RCU stall report
    every 21 s, so the silence detector never fired; after a stall report only lab lines and
    data count."""
    once = labvm.progress(BOOT + STALL, 5)
    assert labvm.progress(BOOT + STALL + STALL + STALL, 5) == once
    assert labvm.progress(BOOT + STALL + b"lab: scenario 2 took 3.1s\n", 5) > once
    assert labvm.progress(BOOT + STALL, 6) > once
