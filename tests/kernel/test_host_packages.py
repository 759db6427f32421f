"""The fresh-machine check: after `make setup` every package of deploy/packages.txt's run, test
and image groups is installed on this machine, ships what the list says, and the set-up steps
ran."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.hostpackages import lacks, packages_sh, table

GROUPS = ("run", "test", "image")  # what the Makefile's `host` target installs


def test_every_run_and_test_package_is_installed() -> None:
    """`deploy/packages.sh missing run test image` names nothing: set-up installed each package
    (so one the code needs but set-up does not install cannot hide on a developer machine
    that happens to have it: see tests/unit/test_packages.py for the other half)."""
    res = packages_sh("missing", *GROUPS)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == [], "not installed after set-up (run `make setup`)"


@pytest.mark.parametrize("entry", [e for e in table() if e.group in GROUPS and not e.is_step
                                   and e.uses], ids=lambda e: f"{e.group}-{e.name}")
def test_each_package_ships_what_the_list_says(entry: object) -> None:
    """dpkg's file list of each run/test package holds every command and file its line names
    (a name put beside the wrong package would pass the command check and fail here)."""
    assert not lacks(entry), f"{entry}: dpkg -L does not list {lacks(entry)}"  # type: ignore[arg-type]


def test_the_set_up_steps_ran() -> None:
    """@kernel-headers: /lib/modules/<running release>/build exists for bcc; @tracefs:
    tracefs is mounted at /sys/kernel/tracing."""
    steps = {e.name for e in table() if e.group in GROUPS and e.is_step}
    assert steps == {"@kernel-headers", "@tracefs"}
    build = Path("/lib/modules") / os.uname().release / "build"
    assert build.exists(), f"{build} missing: deploy/setup-host.sh links or installs headers"
    assert Path("/sys/kernel/tracing/events").is_dir(), "tracefs not mounted"
