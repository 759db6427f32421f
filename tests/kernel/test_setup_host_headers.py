"""deploy/setup-host.sh's kernel-headers link, run for real in a private mount namespace.

A kernel with no headers package (a release no distribution ships) is faked by a `uname` and an
`apt-cache` earlier in PATH; /lib/modules is a tmpfs of the namespace only, so the link the
script makes is real but never reaches this machine's own /lib/modules.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("require_root")
RELEASE = "0.0.1-vfiowatch-test"


def _setup_host(tmp_path: Path, after: str, **env: str) -> subprocess.CompletedProcess[str]:
    """setup-host.sh run (its list holds only the headers step) with /lib/modules on a
    private tmpfs, then `after` in the same namespace."""
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    (fake / "uname").write_text(f"#!/bin/sh\necho {RELEASE}\n")
    (fake / "apt-cache").write_text("#!/bin/sh\nexit 100\n")  # knows no linux-headers-<release>
    for f in fake.iterdir():
        f.chmod(0o755)
    lst = tmp_path / "packages.txt"
    lst.write_text("run @kernel-headers\n")
    script = (f"mount -t tmpfs vfw-test /lib/modules && {REPO}/deploy/setup-host.sh run; "
              f"echo '--- after'; {after}")
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
             "VFIOWATCH_PACKAGES_LIST": str(lst), **env})


def _generic_headers() -> str | None:
    found = sorted(Path("/usr/src").glob("linux-headers-*-amd64"))
    return str(found[-1]) if found else None


def test_the_link_is_announced_with_its_undo_before_it_is_made(tmp_path: Path) -> None:
    """Without headers for the running kernel, the script says what it will link, why, and
    the exact command that undoes it, before linking; that command leaves /lib/modules as it
    was."""
    hdr = _generic_headers()
    if hdr is None:
        pytest.skip("no generic headers under /usr/src (make setup installs linux-headers-amd64)")
    mods = f"/lib/modules/{RELEASE}"
    res = _setup_host(tmp_path, f"readlink {mods}/build; ls -A /lib/modules")
    assert res.returncode == 0, res.stderr
    err = res.stderr
    notice = err.index(f"no kernel headers for the running kernel {RELEASE}")
    assert err.index("linked") > notice
    undo = next(line.split("Undo: ", 1)[1].split(". Skip:")[0] for line in err.splitlines()
                if "Undo: " in line)
    assert undo == f"rm -f {mods}/build {mods}/source && rmdir {mods}"
    assert "VFIOWATCH_HEADERS=none" in err
    after = res.stdout.split("--- after\n", 1)[1].split()
    assert after == [hdr, RELEASE]
    undone = _setup_host(tmp_path, f"{undo}; ls -A /lib/modules | wc -l")
    assert undone.stdout.split("--- after\n", 1)[1].strip() == "0", undone.stderr


def test_headers_none_links_nothing(tmp_path: Path) -> None:
    """VFIOWATCH_HEADERS=none: nothing installed or linked, and it says so."""
    res = _setup_host(tmp_path, "ls -A /lib/modules | wc -l", VFIOWATCH_HEADERS="none")
    assert res.returncode == 0, res.stderr
    assert "VFIOWATCH_HEADERS=none: no kernel headers installed or linked" in res.stderr
    assert res.stdout.split("--- after\n", 1)[1].strip() == "0"
