"""The open-only tracepoint variant attributes opens of control files (root + bcc, this kernel)."""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from diag.sources import SourceContext
from diag.sources.ebpf.source import EbpfSource
from diag.testing import Collector
from tests.ebpf.vw_ebpf_helpers import DRV, HARMLESS_BDF, real_virtio_bdf


@pytest.fixture(scope="module")
def open_only(require_root: None) -> Iterator[tuple[EbpfSource, Collector]]:
    """The `ebpf` source forced to tracepoint mode, open-only variant."""
    src = EbpfSource(SourceContext(options={"mode": "tracepoint",
                                            "tracepoint_variant": "open-only"}))
    avail = src.probe()
    if not avail.ok:
        pytest.skip(f"ebpf unavailable here: {avail.reason} ({avail.hint})")
    got = Collector()
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(got, stop), daemon=True)
    t.start()
    assert src.ready.wait(120)
    yield src, got
    stop.set()
    t.join(10)


def test_mode_reason_says_open_only(open_only: tuple[EbpfSource, Collector]) -> None:
    """probe() reports tracepoint mode and that only opens are seen."""
    src, _ = open_only
    a = src.probe()
    assert a.mode == "tracepoint" and "open-only" in a.reason


def test_open_of_a_control_file_is_attributed(open_only: tuple[EbpfSource, Collector]) -> None:
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


def test_failed_open_has_its_errno(open_only: tuple[EbpfSource, Collector]) -> None:
    """An open of a control file that does not exist: stage=open, -ENOENT."""
    _src, got = open_only
    p = subprocess.Popen(["sh", "-c", "echo x > /sys/bus/pci/drivers/no-such-driver/unbind"],
                         stderr=subprocess.DEVNULL)
    p.wait()
    assert got.wait(lambda: len(got.writes(p.pid)) == 1)
    (w,) = got.writes(p.pid)
    assert (w.stage, w.control, w.result) == ("open", "unbind", -errno.ENOENT)


def _join_cgroup(cg: Path) -> Callable[[], None]:
    def fn() -> None:  # runs in the child before exec
        (cg / "cgroup.procs").write_text(str(os.getpid()))
    return fn


def test_every_path_form_of_a_kata_shim_is_attributed(
        open_only: tuple[EbpfSource, Collector], shim_exe: Path, test_cgroup: Path) -> None:
    """The default variant: a containerd-shim-kata-v2 in its own cgroup opens bind/unbind/
    drivers_probe by absolute, relative and symlinked paths; each open is one event with its
    pid, comm, exe, sandbox, cgroup and resolved file, stage=open, an fd, and no value (the
    writes fail with ENODEV: no uevent follows to recover one from)."""
    _src, got = open_only
    real = real_virtio_bdf()
    sid = uuid.uuid4().hex
    b = HARMLESS_BDF
    script = "\n".join([
        f"printf {b} > {DRV}/bind", f"printf {b} > {DRV}/unbind",
        f"printf {b} > /sys/bus/pci/drivers_probe",
        f"cd {DRV} || exit 1", f"printf {b} > bind; printf {b} > unbind", "cd /",
        f"printf {b} > /sys/bus/pci/devices/{real}/driver/bind",
        f"printf {b} > /sys/bus/pci/devices/{real}/driver/unbind",
        "read x",
    ])
    argv = [str(shim_exe), "-c", script, "containerd-shim-kata-v2", "-namespace", "k8s.io",
            "-address", "/run/containerd/containerd.sock", "-id", sid]
    p = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         preexec_fn=_join_cgroup(test_cgroup))
    try:
        assert got.wait(lambda: len(got.writes(p.pid)) >= 7), [w.path for w in got.writes()]
    finally:
        p.communicate(b"done\n", timeout=10)
    writes = got.writes(p.pid)
    link = f"/sys/bus/pci/devices/{real}/driver"
    assert [w.path for w in writes] == [
        f"{DRV}/bind", f"{DRV}/unbind", "/sys/bus/pci/drivers_probe",
        f"{DRV}/bind", f"{DRV}/unbind", f"{link}/bind", f"{link}/unbind"]
    cg_ino = os.stat(test_cgroup).st_ino
    for w in writes:
        assert (w.stage, w.value, w.bdf, w.value_recovered) == ("open", "", None, False)
        assert w.result >= 0 and w.mode == "tracepoint"
        assert w.actor.pid == p.pid and w.actor.comm == "containerd-shim"
        assert w.actor.exe == str(shim_exe)
        assert w.actor.sandbox_id == sid and w.actor.cgroup_id == cg_ino
        assert w.actor.cgroup.endswith("/" + test_cgroup.name)
