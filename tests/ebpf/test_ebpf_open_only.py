"""The open-only tracepoint variant attributes opens of control files (root + bcc, this kernel)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
from collections.abc import Iterator

import pytest
from vw_ebpf_helpers import DRV, HARMLESS_BDF, Collected

from diag.sources import SourceContext
from diag.sources.ebpf.source import EbpfSource


@pytest.fixture(scope="module")
def open_only() -> Iterator[tuple[EbpfSource, Collected]]:
    """The `ebpf` source forced to tracepoint mode, open-only variant."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs every tier as root)")
    src = EbpfSource(SourceContext(options={"mode": "tracepoint",
                                            "tracepoint_variant": "open-only"}))
    avail = src.probe()
    if not avail.ok:
        pytest.skip(f"ebpf unavailable here: {avail.reason} ({avail.hint})")
    got = Collected()
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(got, stop), daemon=True)
    t.start()
    assert src.ready.wait(120)
    yield src, got
    stop.set()
    t.join(10)


def test_mode_reason_says_open_only(open_only: tuple[EbpfSource, Collected]) -> None:
    """probe() reports tracepoint mode and that only opens are seen."""
    src, _ = open_only
    a = src.probe()
    assert a.mode == "tracepoint" and "open-only" in a.reason


def test_open_of_a_control_file_is_attributed(open_only: tuple[EbpfSource, Collected]) -> None:
    """`echo BDF > bind` from a child: one stage=open event with its pid, comm, file and fd; no value."""
    _src, got = open_only
    p = subprocess.Popen(["sh", "-c", f"echo {HARMLESS_BDF} > bind"], cwd=DRV,
                         stderr=subprocess.DEVNULL)
    p.wait()
    assert got.wait(lambda: len(got.writes(p.pid)) == 1)
    (w,) = got.writes(p.pid)
    assert (w.stage, w.path, w.control, w.driver, w.actor.comm) == (
        "open", f"{DRV}/bind", "bind", "virtio-pci", "sh")
    assert w.result >= 0 and w.value == "" and not w.value_recovered


def test_failed_open_has_its_errno(open_only: tuple[EbpfSource, Collected]) -> None:
    """An open of a control file that does not exist: stage=open, -ENOENT."""
    _src, got = open_only
    p = subprocess.Popen(["sh", "-c", "echo x > /sys/bus/pci/drivers/no-such-driver/unbind"],
                         stderr=subprocess.DEVNULL)
    p.wait()
    assert got.wait(lambda: len(got.writes(p.pid)) == 1)
    (w,) = got.writes(p.pid)
    assert (w.stage, w.control, w.result) == ("open", "unbind", -errno.ENOENT)
