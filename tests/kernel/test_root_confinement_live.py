"""`--root` confinement with the real agent and the real kernel.

* `vfiowatch run` on the hostile tree (tests/hostile_root.py): the live uevent, links and Kata
  sources read nothing outside it (canary, inotify), never watch this machine's own network
  namespace through the tree's links, and report each refusal in-band.
* A host mounted at a directory (`mount --rbind / DIR`, in a private mount namespace that dies
  with the test: the DaemonSet's `--root /host`): the confined walk scans the same devices as
  `--root /`, and opens the namespaces of a real procfs through its magic links.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import vfiowatch_bin
from tests.hostile_root import CANARY, OutsideWatch, build
from tests.kernel.test_service_live import Agent, agents  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("require_root")


def test_the_live_sources_read_nothing_outside_the_root(
        agents: Callable[..., Agent], tmp_path: Path) -> None:  # noqa: F811
    """uevent, links and kata run on the hostile tree for three seconds: no canary in the logs or
    the journal, nothing outside opened, no NetnsAdded for this machine's namespace, and every
    refusal logged as a decode failure of the source that met it."""
    h = build(tmp_path / "tree")
    watch = OutsideWatch(h.outside)
    try:
        a = agents("--sources", "uevent,links,kata", sources=("uevent", "links", "kata"),
                   env={"VFIOWATCH_ROOT": str(h.root)})
        time.sleep(3)  # every source has made its first rounds (scan, netns scan, Kata discovery)
        rc, _ = a.stop()
        assert rc == 0
        touched = watch.touched()
    finally:
        watch.close()
    logs = a.out.read_text(errors="replace")
    journal = b"".join(p.read_bytes() for p in a.journal.parent.iterdir()).decode(errors="replace")
    assert CANARY not in logs and CANARY not in journal
    assert touched == []
    host_ns = os.stat("/proc/self/ns/net").st_ino
    lines = a.lines()
    added = [d for d in lines if d["event"] == "netns_added"]
    assert all(str(host_ns) not in json.dumps(d) for d in added), added
    refused = {d["source"]: d["reason"] for d in lines
               if d["event"] == "decode_failed" and "outside --root" in d.get("reason", "")}
    assert {"uevent", "links", "kata"} <= set(refused), refused


def _in_private_mount_ns(script: str, host: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` (shell) in a new mount namespace where `host` holds `/` bound recursively."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-ec",
         f"mount --rbind / {host}\n{script}"],
        capture_output=True, text=True, timeout=120)


def test_a_host_mounted_at_a_directory_scans_like_root_slash(tmp_path: Path) -> None:
    """`--root DIR` on the real host's tree bound at DIR: the same devices, drivers, groups and
    netdevs as `--root /`, nothing refused, and check's confinement line is ✓."""
    host = tmp_path / "host"
    host.mkdir()
    res = _in_private_mount_ns(
        f"{vfiowatch_bin()} --root {host} snapshot --format json > {tmp_path}/confined.json\n"
        f"{vfiowatch_bin()} --root {host} check --format json > {tmp_path}/check.json || true\n",
        host)
    assert res.returncode == 0, res.stderr
    confined = json.loads((tmp_path / "confined.json").read_text())
    plain = json.loads(subprocess.run([vfiowatch_bin(), "snapshot", "--format", "json"],
                                      capture_output=True, text=True, check=True).stdout)
    assert confined["devices"] == plain["devices"] and confined["refused"] == []
    checks = {c["name"]: c for c in json.loads((tmp_path / "check.json").read_text())["checks"]}
    assert checks["root confinement"]["ok"], checks["root confinement"]


def test_namespaces_open_through_a_real_procfs_under_the_root(tmp_path: Path) -> None:
    """Under a mounted host, /proc/<pid>/ns/net are the kernel's magic links: scan_netns finds
    this process's namespace and open_nsfs opens that very namespace (same inode)."""
    host = tmp_path / "host"
    host.mkdir()
    probe = textwrap.dedent(f"""
        import os, sys
        from diag.common.paths import HostPaths
        from diag.sources.netns import scan_netns
        paths = HostPaths.at({str(host)!r})
        mine = os.stat("/proc/self/ns/net").st_ino
        found = scan_netns(paths)
        fd = paths.open_nsfs(found[mine].path)
        print(mine in found, os.fstat(fd).st_ino == mine, paths.refusals.all())
    """)
    (tmp_path / "probe.py").write_text(probe)
    res = _in_private_mount_ns(f"cd {os.getcwd()} && {sys.executable} {tmp_path}/probe.py", host)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(maxsplit=2) == ["True", "True", "[]\n"], res.stdout
