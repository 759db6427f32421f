"""Options and paths as a new operator types them: --root anywhere, bad roots, typos, usage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from diag import cli
from diag.commands import COMMANDS
from tests.conftest import FIXTURES, REPO

LAB_TREE = FIXTURES / "sysfs" / "sriov-lab"


def vfw(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m diag ARGS` as a user runs it: no terminal, stdin closed."""
    env = {k: v for k, v in os.environ.items() if k != "VFIOWATCH_ROOT"}
    return subprocess.run([sys.executable, "-m", "diag", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, cwd=REPO, env=env)


def minimal_args(tmp_path: Path) -> dict[str, list[str]]:
    """The least each command needs to start (every registered command is here)."""
    journal = REPO / "diag" / "data" / "demo.jsonl"
    return {
        "snapshot": [], "check": [], "record": ["sysfs", "--out", str(tmp_path / "rec")],
        "tui": [], "demo": [], "run": ["--no-journal"], "postmortem": [str(journal)],
        "sandboxes": [], "status": ["--journal", str(journal)],
        "findings": ["--journal", str(journal)], "man": [], "completion": ["bash"],
    }


def test_root_after_the_command_reads_the_same_tree(capsys: pytest.CaptureFixture[str]) -> None:
    """`snapshot --root DIR` (as the README promises) prints what `--root DIR snapshot` does."""
    assert cli.main(["--root", str(LAB_TREE), "snapshot"]) == 0
    before = capsys.readouterr().out
    assert cli.main(["snapshot", "--root", str(LAB_TREE)]) == 0
    assert capsys.readouterr().out == before
    assert "9 PCI devices, 1 on vfio-pci" in before


def test_root_after_a_subcommand_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`record sysfs --out DIR --root TREE` copies TREE, not this host."""
    assert cli.main(["record", "sysfs", "--out", str(tmp_path / "r"), "--root", str(LAB_TREE)]) == 0
    assert sorted(os.listdir(tmp_path / "r/sys/bus/pci/devices")) == sorted(
        os.listdir(LAB_TREE / "sys/bus/pci/devices"))


def test_every_command_refuses_a_missing_root_the_same_way(tmp_path: Path) -> None:
    """Each command, with --root before or after its name, exits 2 with the one Bad --root
    message, and starts nothing (no dashboard, no agent, no output)."""
    args = minimal_args(tmp_path)
    assert set(args) >= set(COMMANDS.load()), "add the new command to minimal_args"
    missing = "/nonexistent-vfiowatch-root"
    expected = (f"Bad --root: {missing} is not a directory\n  hint: pass --root a directory "
                "holding the host's file system (default /)\n")
    for name in COMMANDS.load():
        for argv in (["--root", missing, name, *args[name]], [name, *args[name], "--root", missing]):
            res = vfw(*argv)
            assert (res.returncode, res.stderr, res.stdout) == (2, expected, ""), argv
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("command", ["snapshot", "check", "tui"])
def test_a_root_without_sysfs_is_refused_before_anything_runs(tmp_path: Path, command: str) -> None:
    """A directory holding no sysfs: the host commands say so the same way (check prints no
    fixes for a host that is not there; tui opens no empty dashboard marked LIVE)."""
    res = vfw("--root", str(tmp_path), command)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith(f"Bad --root: {tmp_path}/sys/bus/pci/devices does not exist")


def test_run_refuses_a_journal_in_a_missing_directory(tmp_path: Path) -> None:
    """`run --journal /missing/dir/j.jsonl` exits 2 naming the directory and creates nothing
    (only the default journal's directory is ever created)."""
    target = tmp_path / "missing" / "dir" / "j.jsonl"
    res = vfw("run", "--journal", str(target), "--sources", "uevent", timeout=30)
    assert res.returncode == 2
    assert f"the journal's directory {target.parent} does not exist" in res.stderr
    assert f"mkdir -p {target.parent}" in res.stderr
    assert not (tmp_path / "missing").exists()


@pytest.mark.parametrize(("argv", "usage", "hint"), [
    (["snapshto"], "usage: vfiowatch [-h]", "did you mean 'snapshot'?"),
    (["snapshot", "--formt", "json"], "usage: vfiowatch snapshot [-h]", "did you mean --format?"),
    (["snapshot", "--format", "jsn"], "usage: vfiowatch snapshot [-h]", "did you mean 'json'?"),
    (["--rot", "/", "snapshot"], "usage: vfiowatch [-h]", "did you mean --root?"),
    (["postmortem", "--sandbx", "x", "f"], "usage: vfiowatch postmortem [-h]",
     "did you mean --sandbox?"),
    (["record", "sysfs", "--out", "x", "--rooot", "/"], "usage: vfiowatch record sysfs [-h]",
     "did you mean --root?"),
])
def test_typos_get_did_you_mean_and_the_commands_own_usage(
        argv: list[str], usage: str, hint: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped command, option or choice: exit 2, the usage of the command that failed
    (not the top-level one), and the nearest spelling."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert err.startswith(usage), err
    assert hint in err, err
