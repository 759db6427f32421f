"""Process identity parsers: /proc stat, cgroup paths, Kata shim and VMM arguments."""

from __future__ import annotations

import os

from diag.common.paths import HostPaths
from diag.sources import proc


def test_stat_with_spaces_and_parens_in_comm() -> None:
    """A comm like `a) b (c` is taken between the first '(' and the last ')'."""
    assert proc.parse_stat("42 (a) b (c) S 7 42 42 0") == ("a) b (c", 7)


def test_cgroup_v2_containerd_pod() -> None:
    """A kubepods systemd-slice path gives the 64-hex container id and the dashed pod uid."""
    cid = "3acfa88" + "0" * 57
    text = (
        "0::/kubepods.slice/kubepods-besteffort.slice/"
        "kubepods-besteffort-pod1b2c3d4e_1111_2222_3333_444455556666.slice/"
        f"cri-containerd-{cid}.scope\n"
    )
    ident = proc.parse_cgroup(text)
    assert ident.container_id == cid
    assert ident.pod_uid == "1b2c3d4e-1111-2222-3333-444455556666"


def test_kata_shim_go_and_rs_are_told_apart_by_install_path() -> None:
    """Same executable name; runtime-rs lives under .../runtime-rs/bin/."""
    argv = ["/opt/kata/bin/containerd-shim-kata-v2", "-namespace", "k8s.io", "-id", "sbx1"]
    assert proc.kata_shim_identity(argv, argv[0], "containerd-shim") == ("sbx1", "go")
    rs = "/opt/kata/runtime-rs/bin/containerd-shim-kata-v2"
    assert proc.kata_shim_identity([rs, "-id", "sbx2"], rs, "containerd-shim") == ("sbx2", "rs")
    assert proc.kata_shim_identity(["/bin/sh"], "/bin/sh", "sh") == (None, None)


def test_vmm_name_argument_gives_the_sandbox() -> None:
    """QEMU started by Kata carries `-name sandbox-<id>`."""
    assert proc.vmm_sandbox(["qemu-system-x86_64", "-name", "sandbox-abc,debug-threads=on"]) == "abc"


def test_reading_our_own_process() -> None:
    """read_process on this test's pid names python, its parent and our cgroup."""
    p = proc.read_process(HostPaths(), os.getpid())
    assert p is not None and p.pid == os.getpid() and p.ppid == os.getppid()
    assert "python" in p.comm or "pytest" in p.comm
    assert p.ancestry and p.exe


def test_read_comm_and_links_of_our_process() -> None:
    """read_comm is the 15-char comm; read_link gives exe/cwd, empty for a gone pid."""
    paths = HostPaths()
    assert proc.read_comm(paths, os.getpid()) == proc.read_process(paths, os.getpid()).comm
    assert proc.read_link(paths, os.getpid(), "cwd") == os.getcwd()
    assert proc.read_comm(paths, 2**22 + 7) is None and proc.read_link(paths, 2**22 + 7, "exe") == ""
