"""`make run` sets up what running needs and nothing more; `make test` adds the test set."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.hostpackages import REPO, table

# What a maintainer script does to enable or start a service (debhelper's generated snippets
# and the plain commands).
SERVICE_ACTIONS = re.compile(
    r"deb-systemd-helper\s+enable|systemctl\s+(?:\S+\s+)*enable|update-rc\.d\s+\S+\s+defaults"
    r"|invoke-rc\.d\s+(?:--\S+\s+)*\S+\s+\$?\w*(?:start|_dh_action)|deb-systemd-invoke\s+\S*(?:start|_dh_action)")


def _recipe(target: str) -> list[str]:
    """The commands `make TARGET` runs, as make itself prints them (dry run, every step)."""
    # --no-print-directory: under a make that runs the tests (make test), make prints
    # "Entering/Leaving directory" lines that are not commands
    res = subprocess.run(["make", "-n", "-B", "--no-print-directory", target], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.splitlines()


def test_make_run_installs_the_run_group_and_the_runtime_venv_only() -> None:
    """`make run` calls setup-host.sh with the run group alone and installs the package without
    its test extras, then opens the dashboard."""
    lines = _recipe("run")
    assert [line for line in lines if "setup-host.sh" in line] == ["deploy/setup-host.sh run"]
    pips = [line for line in lines if "pip install" in line]
    assert pips == [".venv/bin/python -m pip install -q -e ."], pips
    assert lines[-1] == ".venv/bin/vfiowatch tui"


def test_make_test_adds_the_test_set() -> None:
    """`make test` sets up the run, test and image groups and the test extras."""
    lines = _recipe("test")
    assert "deploy/setup-host.sh run test image" in lines
    assert ".venv/bin/python -m pip install -q -e '.[test]'" in lines


def _postinst(package: str) -> Path | None:
    info = Path("/var/lib/dpkg/info")
    for name in (f"{package}.postinst", f"{package}:amd64.postinst"):
        if (info / name).exists():
            return info / name
    return None


def _priority(package: str) -> str:
    res = subprocess.run(["dpkg-query", "-W", "-f", "${Priority}", package], capture_output=True,
                         text=True, timeout=60)
    return res.stdout.strip()


def test_no_run_package_enables_or_starts_a_service() -> None:
    """No package of the run group enables or starts a service when installed (dpkg's own
    copy of each installed package's postinst is read), except those of priority `required`,
    which every Debian system already has, so `make run` never installs them (apt)."""
    packages = [e.name for e in table() if e.group == "run" and not e.is_step]
    if not all(_postinst(p) or _priority(p) for p in packages):
        pytest.skip("the run group is not installed here (make setup installs it)")
    offenders = {}
    for p in packages:
        script = _postinst(p)
        if script is None or _priority(p) == "required":
            continue
        found = SERVICE_ACTIONS.findall(script.read_text(errors="replace"))
        if found:
            offenders[p] = sorted(set(found))
    assert offenders == {}


def test_the_service_pattern_sees_prometheus() -> None:
    """The pattern above finds what Debian's prometheus postinst does (the package the run
    group must not hold): enable prometheus.service and start it."""
    snippet = ("update-rc.d prometheus defaults >/dev/null\n"
               "invoke-rc.d --skip-systemd-native prometheus $_dh_action || exit 1\n"
               "deb-systemd-helper enable 'prometheus.service' >/dev/null || true\n"
               "deb-systemd-invoke $_dh_action 'prometheus.service' >/dev/null || true\n")
    assert len(SERVICE_ACTIONS.findall(snippet)) == 4
    assert "prometheus" not in {e.name for e in table() if e.group == "run"}
