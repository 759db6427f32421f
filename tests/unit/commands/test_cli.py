"""The command line: help texts, --root errors, and the snapshot table on fixture trees."""

from __future__ import annotations

from pathlib import Path

import pytest

from diag import cli


def test_every_command_has_a_description_and_documented_options(capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` of each subcommand has a description and a help text for every option."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices
    for name, p in sub.choices.items():  # type: ignore[union-attr]
        assert p.description, f"{name} has no description"
        for action in p._actions:
            if action.dest != "help" and action.option_strings:
                assert action.help, f"{name} {action.option_strings} has no help"


def test_bad_root_exits_2_with_a_titled_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --root without sysfs prints `Bad --root: ...` and a hint to stderr, exit 2."""
    rc = cli.main(["--root", str(tmp_path), "snapshot"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("Bad --root:") and "hint:" in err


def test_snapshot_table_on_the_ci_tree(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CI machine's recorded tree prints six rows and the total line."""
    assert cli.main(["--root", str(fixtures / "sysfs/host-virtio"), "snapshot"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["BDF", "ID", "CLASS", "DRIVER"]
    assert out[-1] == "6 PCI devices, 0 on vfio-pci"


def test_snapshot_table_on_the_sriov_lab_tree(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """VF rows are nested under the PF, and the vfio-pci VF shows its /dev/vfio group."""
    assert cli.main(["--root", str(fixtures / "sysfs/sriov-lab"), "snapshot"]) == 0
    out = capsys.readouterr().out.splitlines()
    pf = next(i for i, line in enumerate(out) if line.startswith("0000:01:00.0"))
    assert "PF 2/7 VFs" in out[pf] and "igb" in out[pf]
    assert out[pf + 1].startswith("  └ 0000:01:10.0") and "/dev/vfio/" in out[pf + 1]
    assert out[pf + 2].startswith("  └ 0000:01:10.2") and "eth2" in out[pf + 2]
    assert out[-1] == "9 PCI devices, 1 on vfio-pci"
