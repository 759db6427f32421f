"""The `ebpf` source attributes real, harmless control-file writes on this kernel (root + bcc).

Every write uses the nonexistent address 0000:ff:1f.7 (host-facts: the kernel answers ENODEV and
no device moves); the symlinked paths only pass through a real device's `driver` link.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from pathlib import Path

from diag.sources.ebpf.source import EbpfSource
from diag.testing import Collector
from tests.ebpf.vw_ebpf_helpers import DRV, HARMLESS_BDF, real_virtio_bdf

B = HARMLESS_BDF


def _join_cgroup(cg: Path):  # runs in the child before exec
    def fn() -> None:
        (cg / "cgroup.procs").write_text(str(os.getpid()))
    return fn


class TestKataShimWrites:
    def test_every_path_form_attributed_to_the_shim(
        self, ebpf_source: tuple[EbpfSource, Collector], shim_exe: Path, test_cgroup: Path,
    ) -> None:
        """A containerd-shim-kata-v2 in its own cgroup writes bind/unbind/drivers_probe by absolute,
        relative and symlinked paths: each is one event with its pid, comm, exe, sandbox, cgroup,
        resolved file, value and ENODEV."""
        src, got = ebpf_source
        real = real_virtio_bdf()
        sid = uuid.uuid4().hex
        script = "\n".join([
            f"printf {B} > {DRV}/bind",
            f"printf {B} > {DRV}/unbind",
            f"printf {B} > /sys/bus/pci/drivers_probe",
            f"cd {DRV} || exit 1",
            f"printf {B} > bind; printf {B} > unbind",
            "cd /",
            f"printf {B} > /sys/bus/pci/devices/{real}/driver/bind",
            f"printf {B} > /sys/bus/pci/devices/{real}/driver/unbind",
            "read x",  # stay alive like a real shim until the test has looked
        ])
        argv = [str(shim_exe), "-c", script, "containerd-shim-kata-v2",
                "-namespace", "k8s.io", "-address", "/run/containerd/containerd.sock", "-id", sid]
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stderr=subprocess.DEVNULL,
                             preexec_fn=_join_cgroup(test_cgroup))
        try:
            assert got.wait(lambda: len(got.writes(p.pid)) >= 7), (src.stats, [(w.path, w.actor.pid) for w in got.writes()])
        finally:
            p.communicate(b"done\n", timeout=10)
        writes = got.writes(p.pid)
        link = f"/sys/bus/pci/devices/{real}/driver"  # kept: the driver link is read too late
        want = [f"{DRV}/bind", f"{DRV}/unbind", "/sys/bus/pci/drivers_probe",
                f"{DRV}/bind", f"{DRV}/unbind", f"{link}/bind", f"{link}/unbind"]
        assert [w.path for w in writes] == want
        assert [w.control for w in writes] == [
            "bind", "unbind", "drivers_probe", "bind", "unbind", "bind", "unbind"]
        cg_ino = os.stat(test_cgroup).st_ino
        for w in writes:
            assert (w.value, w.bdf, w.result) == (B, B, -errno.ENODEV)
            assert w.actor.pid == p.pid and w.actor.comm == "containerd-shim"
            assert w.actor.exe == str(shim_exe)
            assert w.actor.sandbox_id == sid and w.actor.kata_runtime == "go"
            assert w.actor.cgroup_id == cg_ino
            assert w.actor.cgroup.endswith("/" + test_cgroup.name)
            assert w.mode == src.mode and not w.value_recovered
        assert [w.driver for w in writes if w.control != "drivers_probe"] == (
            ["virtio-pci"] * 4 + [None] * 2)


class TestShortLivedWriters:
    def test_exited_writer_keeps_pid_comm_parent_and_cgroup(
        self, ebpf_source: tuple[EbpfSource, Collector], test_cgroup: Path,
    ) -> None:
        """`sh -c 'echo BDF > bind'` exits at once: the event still has its pid, comm, parent,
        cgroup and the value with echo's newline stripped."""
        _src, got = ebpf_source
        p = subprocess.Popen(["sh", "-c", f"echo {B} > {DRV}/bind"], stderr=subprocess.DEVNULL,
                             preexec_fn=_join_cgroup(test_cgroup))
        p.wait()
        assert got.wait(lambda: len(got.writes(p.pid)) == 1)
        (w,) = got.writes(p.pid)
        assert (w.path, w.value, w.result, w.actor.comm) == (f"{DRV}/bind", B, -errno.ENODEV, "sh")
        assert w.actor.ppid == os.getpid()
        assert w.actor.cgroup_id == os.stat(test_cgroup).st_ino
        assert w.actor.cgroup.endswith("/" + test_cgroup.name)

    def test_relative_write_of_an_exited_child_resolves_its_cwd(
        self, ebpf_source: tuple[EbpfSource, Collector],
    ) -> None:
        """A child started with cwd=the driver directory writes `unbind`: resolved from its chdir."""
        _src, got = ebpf_source
        p = subprocess.Popen(["sh", "-c", f"printf {B} > unbind"], cwd=DRV,
                             stderr=subprocess.DEVNULL)
        p.wait()
        assert got.wait(lambda: len(got.writes(p.pid)) == 1)
        (w,) = got.writes(p.pid)
        assert (w.path, w.control, w.driver, w.value) == (f"{DRV}/unbind", "unbind", "virtio-pci", B)

    def test_go_style_write_without_newline(self, ebpf_source: tuple[EbpfSource, Collector]) -> None:
        """open(O_WRONLY|O_CLOEXEC) + one write without newline (Go's os.WriteFile) to drivers_probe."""
        _src, got = ebpf_source
        code = ("import os\nfd = os.open('/sys/bus/pci/drivers_probe', os.O_WRONLY | os.O_CLOEXEC)\n"
                f"try:\n    os.write(fd, b'{B}')\nexcept OSError:\n    pass\nos.close(fd)\n")
        p = subprocess.Popen([sys.executable, "-c", code])
        p.wait()
        assert got.wait(lambda: len(got.writes(p.pid)) == 1)
        (w,) = got.writes(p.pid)
        assert (w.path, w.control, w.value, w.bdf, w.result) == (
            "/sys/bus/pci/drivers_probe", "drivers_probe", B, B, -errno.ENODEV)

    def test_failed_open_is_reported_with_its_errno(
        self, ebpf_source: tuple[EbpfSource, Collector],
    ) -> None:
        """Opening a control file that does not exist is reported with -ENOENT and no value."""
        _src, got = ebpf_source
        if _src.mode == "kprobe":
            return  # the handler never runs: nothing to see below the VFS
        p = subprocess.Popen(["sh", "-c", "echo x > /sys/bus/pci/drivers/no-such-driver/bind"],
                             stderr=subprocess.DEVNULL)
        p.wait()
        assert got.wait(lambda: len(got.writes(p.pid)) == 1)
        (w,) = got.writes(p.pid)
        assert (w.control, w.driver, w.value, w.result) == ("bind", "no-such-driver", "", -errno.ENOENT)


class TestObserverAndUnrelated:
    def test_the_agent_itself_never_appears(self, ebpf_source: tuple[EbpfSource, Collector]) -> None:
        """A write by the agent's own process is filtered in the kernel (it only observes)."""
        _src, got = ebpf_source
        try:
            with open(f"{DRV}/bind", "w") as fh:
                fh.write(B)
        except OSError:
            pass
        marker = subprocess.Popen(["sh", "-c", f"echo {B} > {DRV}/unbind"], stderr=subprocess.DEVNULL)
        marker.wait()
        assert got.wait(lambda: len(got.writes(marker.pid)) == 1)  # later write seen: ours was not
        assert got.writes(os.getpid()) == []

    def test_files_named_like_control_files_elsewhere_are_ignored(
        self, ebpf_source: tuple[EbpfSource, Collector], tmp_path: Path,
    ) -> None:
        """Writing a file called `bind` outside sysfs yields no event (and leaves no tracked fd)."""
        _src, got = ebpf_source
        p = subprocess.Popen(["sh", "-c", f"echo {B} > bind; echo {B} > {DRV}/unbind"], cwd=tmp_path,
                             stderr=subprocess.DEVNULL)
        p.wait()
        assert got.wait(lambda: len(got.writes(p.pid)) == 1)
        assert [w.path for w in got.writes(p.pid)] == [f"{DRV}/unbind"]

    def test_attachment_is_announced_in_band(self, ebpf_source: tuple[EbpfSource, Collector]) -> None:
        """Once the probe is attached the source says so (mode, time taken, why this mode)."""
        src, got = ebpf_source
        states = [e for e in got.events if type(e).__name__ == "SourceStateChanged"]
        assert states and states[0].up and states[0].mode == src.mode
        assert states[0].reason.startswith("attached in ")

    def test_no_loss_reported_under_normal_load(self, ebpf_source: tuple[EbpfSource, Collector]) -> None:
        """Nothing was lost, so no EventsLost was emitted."""
        src, got = ebpf_source
        assert src.stats.lost_ringbuf == 0 and src.stats.lost_table == 0
        assert not [e for e in got.events if type(e).__name__ == "EventsLost"]
