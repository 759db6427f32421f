"""The install path operators use: the wheel, pip-installed into a fresh --system-site-packages venv.

The wheel is built from this checkout as `make wheel` builds it, installed into a new venv made
from the system Python (so Debian's bcc is importable), and every command is run from outside
the checkout, so nothing can come from the repository: the probes must be the wheel's.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from diag import __version__
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("require_root")
PY = REPO / ".venv" / "bin" / "python"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The venv's bin directory, after `pip install` of the freshly built wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    build = subprocess.run(["make", "-s", "wheel", f"DIST={tmp / 'dist'}"], cwd=REPO,
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr
    wheels = list((tmp / "dist").glob("vfiowatch-*.whl"))
    assert len(wheels) == 1, wheels
    constraints = tmp / "constraints.txt"  # the tested versions, so pip's cache serves them
    constraints.write_text(subprocess.run(
        [str(PY), "-m", "pip", "freeze", "--local", "--exclude-editable"], capture_output=True,
        text=True, check=True).stdout)
    venv = tmp / "venv"
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", str(venv)],
                   check=True, timeout=120)
    pip = subprocess.run([str(venv / "bin/pip"), "install", "-q", "-c", str(constraints),
                          str(wheels[0])], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    yield venv / "bin"


def _run(bin_dir: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bin_dir / "vfiowatch"), *args], capture_output=True, text=True,
                          timeout=timeout, cwd="/", stdin=subprocess.DEVNULL)


def test_the_wheel_ships_the_probes_and_the_demo(installed: Path) -> None:
    """The wheel holds every probe source and header under diag/_probes, and the demo journal."""
    wheel = next((installed.parent.parent / "dist").glob("vfiowatch-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    probes = {p.name for p in (REPO / "probes").iterdir() if p.suffix in (".c", ".h")}
    assert {f"diag/_probes/{n}" for n in probes} <= names
    assert "diag/data/demo.jsonl" in names


def test_version_snapshot_and_check_run_from_the_installed_wheel(installed: Path) -> None:
    """`--version`, `snapshot` and `check` answer from the venv; bcc is Debian's, seen through
    --system-site-packages."""
    assert _run(installed, "--version").stdout.strip() == f"vfiowatch {__version__}"
    snap = _run(installed, "snapshot", "--format", "json")
    assert snap.returncode == 0, snap.stderr
    assert {d["bdf"] for d in json.loads(snap.stdout)["devices"]} == set(
        os.listdir("/sys/bus/pci/devices"))
    check = _run(installed, "check", "--format", "json")
    assert check.returncode == 0, check.stderr
    by = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
    assert by["bcc"]["ok"], by["bcc"]


def test_the_agent_compiles_the_probes_shipped_in_the_wheel(installed: Path) -> None:
    """The probes are found inside the installed package (not a checkout), and the eBPF source
    compiles and attaches them: it reports itself up."""
    where = subprocess.run(
        [str(installed / "python"), "-c",
         "from diag.sources.ebpf.source import probes_dir; print(probes_dir())"],
        capture_output=True, text=True, cwd="/", check=True).stdout.strip()
    assert where.startswith(str(installed.parent / "lib")) and where.endswith("diag/_probes")
    agent = subprocess.Popen([str(installed / "vfiowatch"), "run", "--no-journal", "--sources",
                              "ebpf"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd="/")
    up = None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 90
        assert agent.stdout is not None
        while time.monotonic() < deadline and up is None:
            line = agent.stdout.readline()
            if not line:
                break
            lines.append(line)
            rec = json.loads(line)
            # The first report is "starting: compiling..."; the one after it says how it ended.
            if rec.get("event") == "source_state_changed" and rec.get("source") == "ebpf" \
                    and not str(rec.get("reason", "")).startswith("starting:"):
                up = rec
    finally:
        agent.send_signal(signal.SIGTERM)
        agent.wait(timeout=30)
    assert up is not None and up["up"] is True, "".join(lines[-10:])


def test_pipx_installs_the_same_wheel_with_the_system_bcc(installed: Path, tmp_path: Path) -> None:
    """`pipx install --system-site-packages WHEEL` (the README's other path) gives a
    `vfiowatch` that sees Debian's bcc."""
    tmp = installed.parent.parent
    wheel = next((tmp / "dist").glob("vfiowatch-*.whl"))
    env = {**os.environ, "PIPX_HOME": str(tmp_path / "pipx"), "PIPX_BIN_DIR": str(tmp_path / "bin")}
    res = subprocess.run(["pipx", "install", "--system-site-packages", "--pip-args",
                          f"-c {tmp / 'constraints.txt'}", str(wheel)], capture_output=True,
                         text=True, timeout=600, env=env, cwd="/")
    assert res.returncode == 0, res.stderr
    bin_dir = tmp_path / "bin"
    assert _run(bin_dir, "--version").stdout.strip() == f"vfiowatch {__version__}"
    check = _run(bin_dir, "check", "--format", "json")
    by = {c["name"]: c for c in json.loads(check.stdout)["checks"]}
    assert by["bcc"]["ok"], by["bcc"]
