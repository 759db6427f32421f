"""Real processes named containerd-shim-kata-v2 and qemu-system-x86_64 in a netns are found with their sandbox.

The actors are a tiny C program (tests/kernel/kata/actor.c) installed under the real names, so
exe, comm (truncated to 15) and argv look like Kata's. The QEMU stand-in runs in a network
namespace made with `ip netns add` and holds `/dev/vfio/42` open; that node is a plain file in
a tmpfs mounted over /dev inside its own mount namespace, so the host's /dev is never touched.
Host paths are read under a --root whose `proc` is the real /proc.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import events as ev
from diag.common.paths import HostPaths
from diag.sources.kata.source import KataWatcher
from tests.conftest import bind_mounts

pytestmark = pytest.mark.usefixtures("require_root")

HERE = Path(__file__).resolve().parent
SID = "5f1c2e8a9b7d4c3e2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f"
QEMU_CFG = """[hypervisor.qemu]
path = "/opt/kata/bin/qemu-system-x86_64"
machine_type = "q35"
enable_annotations = ["enable_iommu", "kernel_params", "kernel_verity_params"]
cold_plug_vfio = "no-port"
"""


@pytest.fixture
def root(tmp_path: Path, netns: str) -> Iterator[Path]:
    """A --root with the real /proc and the test's namespace (bind-mounted: a link to them would
    lead outside the root), Kata's config, actors at kata-deploy paths."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler (gcc is in deploy/packages.txt)")
    r = tmp_path / "root"
    (r / "opt/kata/bin").mkdir(parents=True)
    subprocess.run([cc, "-O2", "-o", str(r / "opt/kata/bin/containerd-shim-kata-v2"), str(HERE / "kata" / "actor.c")],
                   check=True)
    shutil.copy(r / "opt/kata/bin/containerd-shim-kata-v2", r / "opt/kata/bin/qemu-system-x86_64")
    (r / "proc").mkdir()
    (r / "run/netns").mkdir(parents=True)
    (r / "run/netns" / netns).write_text("")
    (r / "dev/vfio").mkdir(parents=True)
    (r / "dev/vfio/42").write_text("")  # the node exists on "the host", so holders are scanned
    d = r / "opt/kata/share/defaults/kata-containers"
    d.mkdir(parents=True)
    (d / "configuration-qemu.toml").write_text(QEMU_CFG)
    os.symlink("configuration-qemu.toml", d / "configuration.toml")
    (r / "etc/containerd").mkdir(parents=True)
    (r / "etc/containerd/config.toml").write_text(
        'version = 3\n[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.kata]\n'
        'runtime_type = "io.containerd.kata.v2"\nruntime_path = "/opt/kata/bin/containerd-shim-kata-v2"\n')
    with bind_mounts((Path("/proc"), r / "proc"), (Path("/run/netns") / netns, r / "run/netns" / netns)):
        yield r


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"vfw-kata-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


class Actors:
    """Started actors, each ended by its own pid."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> int:
        ready = self.tmp / f"ready-{len(self.procs)}"
        e = dict(os.environ, ACTOR_READY=str(ready), **(env or {}))
        p = subprocess.Popen(argv, env=e, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        end = time.monotonic() + 10
        while not ready.exists() or not ready.read_text().strip():
            assert p.poll() is None, f"{argv[0]} exited {p.returncode}"
            assert time.monotonic() < end, "actor did not start"
            time.sleep(0.02)
        pid = int(ready.read_text())
        assert pid == p.pid  # ip netns exec / unshare / sh all exec: the Popen pid is the actor
        return pid

    def stop(self, pid: int) -> None:
        for p in self.procs:
            if p.pid == pid and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(5)

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)


@pytest.fixture
def actors(tmp_path: Path) -> Iterator[Actors]:
    a = Actors(tmp_path)
    try:
        yield a
    finally:
        a.close()


def until(w: KataWatcher, pred, timeout: float = 10.0) -> list[ev.Event]:
    """Step the watcher on its own schedule (rounds due by monotonic time, cached process scans,
    partial holder scans) until an event satisfies pred; return all events seen."""
    seen: list[ev.Event] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        new = w.step(time.time_ns())
        seen += new
        if any(pred(e) for e in new):
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not seen in {timeout}s; got {[e.kind for e in seen]}")


def shim_argv(root: Path, sid: str) -> list[str]:
    return [str(root / "opt/kata/bin/containerd-shim-kata-v2"), "-namespace", "k8s.io", "-address",
            "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", sid]


def test_shim_and_qemu_found_with_sandbox_netns_and_vfio_holder(root: Path, netns: str, actors: Actors) -> None:
    """No state file (a creation in progress): the shim alone names the sandbox; QEMU adds VMM, VF, netns, holder."""
    w = KataWatcher(HostPaths.at(root), {"journal": False})
    w.step(time.time_ns(), force=True)
    shim = actors.start(["ip", "netns", "exec", netns, *shim_argv(root, SID)])
    evs = until(w, lambda e: e.kind == "sandbox_started")
    (s,) = [e for e in evs if e.kind == "sandbox_started"]
    assert (s.sandbox_id, s.shim_pid, s.runtime, s.handler, s.state_file) == (SID, shim, "go", "kata", None)
    assert (s.cold_plug_vfio, s.cold_plug_origin) == (
        "no-port", "file:/opt/kata/share/defaults/kata-containers/configuration-qemu.toml")

    qemu = actors.start(
        ["ip", "netns", "exec", netns, "unshare", "-m", "sh", "-c",
         'mount -t tmpfs vfiowatch-test /dev && mkdir /dev/vfio && : > /dev/vfio/42 && exec "$0" "$@"',
         str(root / "opt/kata/bin/qemu-system-x86_64"), "-name", f"sandbox-{SID},debug-threads=on",
         "-machine", "q35,accel=kvm,nvdimm=on", "-device", "pcie-root-port,id=rp0,bus=pcie.0,chassis=0,slot=0",
         "-device", "vfio-pci,host=0000:01:10.0,id=vfio-1,x-pci-vendor-id=0x8086,x-pci-device-id=0x10ca,bus=rp0"],
        env={"ACTOR_HOLD": "/dev/vfio/42"})
    evs = until(w, lambda e: e.kind == "vfio_group_held")
    (s,) = [e for e in evs if e.kind == "sandbox_started"]
    assert (s.vmm_pid, s.vmm_vfio_devices, s.vmm_vfio_buses) == (qemu, ("0000:01:10.0",), ("rp0",))
    assert s.netns is not None and s.netns.name == netns and not s.netns.is_host
    assert s.netns.inode == os.stat(f"/run/netns/{netns}").st_ino
    (held,) = [e for e in evs if e.kind == "vfio_group_held"]
    assert (held.group, held.holder.pid, held.holder.sandbox_id, held.holder.comm) == (
        42, qemu, SID, "qemu-system-x86")

    actors.stop(qemu)
    evs = until(w, lambda e: e.kind == "vfio_group_released")
    assert [(e.group, e.pid) for e in evs if e.kind == "vfio_group_released"] == [(42, qemu)]
    actors.stop(shim)
    evs = until(w, lambda e: e.kind == "sandbox_stopped")
    assert [e.sandbox_id for e in evs if e.kind == "sandbox_stopped"] == [SID]


def test_kata_conf_file_from_running_shim(root: Path, netns: str, actors: Actors) -> None:
    """A shim whose environment has a non-shipped KATA_CONF_FILE: Kata's exact error, read from /proc/<pid>/environ."""
    (root / "etc/kata-containers").mkdir(parents=True)
    (root / "etc/kata-containers/mine.toml").write_text(QEMU_CFG)
    w = KataWatcher(HostPaths.at(root), {"journal": False})
    w.step(time.time_ns(), force=True)
    assert w.configs["kata"].cold_plug_vfio == "no-port"
    actors.start(["ip", "netns", "exec", netns, *shim_argv(root, SID)],
                 env={"KATA_CONF_FILE": "/etc/kata-containers/mine.toml"})
    evs = until(w, lambda e: e.kind == "kata_config_invalid")
    (bad,) = [e for e in evs if e.kind == "kata_config_invalid"]
    assert bad.message == ('invalid KATA_CONF_FILE "/etc/kata-containers/mine.toml": '
                           "only shipped Kata configuration files are accepted")
    assert (bad.key, bad.handler) == ("KATA_CONF_FILE", "kata")
    assert w.configs["kata"].cold_plug_vfio == "no-port"  # last good view kept


def test_config_changed_after_shim_start_is_flagged(root: Path, netns: str, actors: Actors) -> None:
    """An agent that meets a sandbox after its handler's file changed says the values may be newer than the sandbox's."""
    actors.start(["ip", "netns", "exec", netns, *shim_argv(root, SID)])
    before = KataWatcher(HostPaths.at(root), {"journal": False})
    (s,) = [e for e in before.step(time.time_ns(), force=True) if e.kind == "sandbox_started"]
    assert not s.config_changed_since_start
    time.sleep(1.7)  # start times are known to ~1 s (boot time has whole seconds)
    cfg = root / "opt/kata/share/defaults/kata-containers/configuration-qemu.toml"
    cfg.write_text(QEMU_CFG.replace('"no-port"', '"root-port"') + "pcie_root_port = 2\n")
    late = KataWatcher(HostPaths.at(root), {"journal": False})
    (s,) = [e for e in late.step(time.time_ns(), force=True) if e.kind == "sandbox_started"]
    assert s.config_changed_since_start and s.cold_plug_vfio == "root-port"
    evs = before.step(time.time_ns(), time.monotonic() + 5)
    (c,) = [e for e in evs if e.kind == "kata_config_loaded"]
    assert c.changed and [e for e in evs if e.kind == "sandbox_started"] == []
    assert before.sandboxes[SID].cold_plug_vfio == "no-port"  # the earlier watcher keeps what it saw
