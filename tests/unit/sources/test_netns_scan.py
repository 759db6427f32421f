"""Network namespace discovery over a fake /proc and /run/netns (no privileges needed)."""

from __future__ import annotations

import os
from pathlib import Path

from diag.common.paths import HostPaths
from diag.sources.netns import PID_SETTLE_READS, scan_netns


def _proc(root: Path, pid: int | str, inode: int) -> None:
    d = root / "proc" / str(pid) / "ns"
    d.mkdir(parents=True, exist_ok=True)
    link = d / "net"
    if link.is_symlink():
        link.unlink()
    os.symlink(f"net:[{inode}]", link)  # what the kernel's magic link reads as


def test_host_named_and_process_held_namespaces_are_all_found(tmp_path: Path) -> None:
    """pid 1's namespace is the host's; a /run/netns name wins over a pid; a namespace only a
    process holds is named by the first such pid."""
    _proc(tmp_path, 1, 100)
    _proc(tmp_path, 200, 300)
    _proc(tmp_path, 201, 300)
    _proc(tmp_path, 202, 100)
    (tmp_path / "run" / "netns").mkdir(parents=True)
    (tmp_path / "run" / "netns" / "blue").write_text("")
    blue = os.stat(tmp_path / "run" / "netns" / "blue").st_ino
    found = scan_netns(HostPaths.at(tmp_path))
    assert found[100].is_host and found[100].ref().label == "host"
    assert found[300].pid in (200, 201) and found[300].ref().label.startswith("pid:")
    assert found[blue].name == "blue" and found[blue].ref().label == "blue"
    assert set(found) == {100, 300, blue}


def test_the_pid_cache_rereads_young_processes_and_trusts_settled_ones(tmp_path: Path) -> None:
    """A process that unshares soon after it starts is seen in its new namespace; once settled
    it is not re-read until a full scan; an exited process leaves the cache."""
    _proc(tmp_path, 1, 100)
    _proc(tmp_path, 500, 100)
    paths = HostPaths.at(tmp_path)
    cache: dict[int, tuple[int | None, int]] = {}
    scan_netns(paths, cache, full=False)
    _proc(tmp_path, 500, 777)  # unshare(CLONE_NEWNET)
    assert 777 in scan_netns(paths, cache, full=False)
    for _ in range(PID_SETTLE_READS):
        scan_netns(paths, cache, full=False)
    _proc(tmp_path, 500, 888)  # an old process moving: only a full scan sees it
    assert 888 not in scan_netns(paths, cache, full=False)
    assert 888 in scan_netns(paths, cache, full=True)
    import shutil

    shutil.rmtree(tmp_path / "proc" / "500")  # the process exits
    assert 888 not in scan_netns(paths, cache, full=False) and 500 not in cache
