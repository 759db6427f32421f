"""A TOML file nested 10,000 deep is reported by file and line in every command that reads TOML:
postmortem, check, and run's --config (each raised RecursionError before the bound)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from diag import cli
from diag.common.paths import HostPaths
from diag.sources.kata import discovery
from tests.conftest import FIXTURES

DEEP_HEADER = "[" + ".".join(["a"] * 10_000) + "]\nx = 1\n"
DEEP_ARRAY = "x = " + "[" * 10_000 + "]" * 10_000 + "\n"


def _kata_root(tmp_path: Path, text: str) -> Path:
    root = tmp_path / "host"
    shutil.copytree(FIXTURES / "sysfs" / "sriov-lab", root, symlinks=True)
    conf = root / "etc" / "kata-containers" / "configuration.toml"
    conf.parent.mkdir(parents=True)
    conf.write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n' + text)
    return root


@pytest.mark.parametrize("deep", [DEEP_HEADER, DEEP_ARRAY], ids=["header", "array"])
def test_postmortem_reports_the_file_and_line(
        deep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """postmortem of a deep configuration-qemu.toml: a report (no traceback) whose Kata error
    names the file and line 3."""
    f = tmp_path / "configuration-qemu.toml"
    f.write_text('[hypervisor.qemu]\ncold_plug_vfio = "root-port"\n' + deep)
    code = cli.main(["postmortem", "--format", "json", str(tmp_path)])
    doc = json.loads(capsys.readouterr().out)
    (bad,) = [e["event"] for e in doc["timeline"] if e["event"]["kind"] == "kata_config_invalid"]
    assert code == 1 and bad["path"] == str(f) and bad["line"] == 3
    assert "nest deeper than 64 levels" in bad["message"]


@pytest.mark.parametrize("deep", [DEEP_HEADER, DEEP_ARRAY], ids=["header", "array"])
def test_check_and_the_live_source_name_the_file_and_line(
        deep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """check's Kata line fails with file:line (was "check crashed: RecursionError"); the Kata
    source's discovery (what the live source runs) returns the same error, not an exception."""
    root = _kata_root(tmp_path, deep)
    cli.main(["--root", str(root), "check", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert not [c for c in doc["checks"] if "crashed" in c["detail"]], doc
    (kata,) = [c for c in doc["checks"] if c["detail"].startswith("invalid: /etc/kata")]
    assert kata["detail"].startswith(
        "invalid: /etc/kata-containers/configuration.toml:3: toml: line 3: tables, arrays or "
        "dotted keys nest deeper than 64 levels"), kata
    (err,) = discovery.discover(HostPaths.at(root)).errors
    assert (err.path, err.line) == ("/etc/kata-containers/configuration.toml", 3)


@pytest.mark.parametrize("deep", [DEEP_HEADER, DEEP_ARRAY], ids=["header", "array"])
def test_run_refuses_a_deep_config_file_by_line(
        deep: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`run --config` with a deep file exits 2 with a titled error naming file:line."""
    cfg = tmp_path / "vfiowatch.toml"
    cfg.write_text("[core]\n" + deep)
    assert cli.main(["run", "--no-journal", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"Configuration error: {cfg}:2: tables, arrays or dotted keys nest "
                          "deeper than 64 levels"), err
