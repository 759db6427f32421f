"""The one registry type: explicit module lists, order by module, and import failures reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from diag import cli
from diag.common.registry import Registry
from diag.sources import SOURCES


@pytest.fixture
def broken_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A plug-in module that raises while it is imported (not only an ImportError)."""
    (tmp_path / "vw_broken_plugin.py").write_text("raise RuntimeError('probe header missing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "vw_broken_plugin"


def test_a_module_that_fails_to_import_is_kept_with_its_error(broken_module: str) -> None:
    """The good modules still register; the broken one is a LoadFailure naming the module and
    the exception, never skipped."""
    reg: Registry[object] = Registry("thing", ["diag.common.text", broken_module,
                                              "vw_no_such_plugin"])
    reg.load()
    assert [(f.module, f.error) for f in reg.failures] == [
        (broken_module, "RuntimeError: probe header missing"),
        ("vw_no_such_plugin", "ModuleNotFoundError: No module named 'vw_no_such_plugin'"),
    ]
    reg.load()  # once: a second load neither re-imports nor repeats the failures
    assert len(reg.failures) == 2


def test_entries_follow_the_module_list_not_the_import_order() -> None:
    """An entry defined in a module listed first comes first, even when registered later."""
    reg: Registry[object] = Registry("thing", ["mod.a", "mod.b"])
    reg.add("from-b", object(), module="mod.b")
    reg.add("from-a", object(), module="mod.a")
    reg.add("b-again", object(), module="mod.b")
    assert reg.names() == ["from-a", "from-b", "b-again"]
    with pytest.raises(ValueError, match="registered twice"):
        reg.add("from-a", object(), module="mod.a")


@pytest.fixture
def sources_with_a_broken_module(broken_module: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(SOURCES, "modules", [*SOURCES.modules, broken_module])
    monkeypatch.setattr(SOURCES, "failures", [])
    monkeypatch.setattr(SOURCES, "_loaded", False)
    return broken_module


def test_check_shows_a_source_module_that_cannot_be_imported(
        sources_with_a_broken_module: str, fixtures: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`vfiowatch check` prints a failed line naming the module and the exception."""
    cli.main(["--root", str(fixtures / "sysfs" / "sriov-lab"), "check", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    bad = [c for c in doc["checks"] if c["name"] == "source module"]
    assert len(bad) == 1 and not bad[0]["ok"]
    assert bad[0]["detail"] == (f"{sources_with_a_broken_module} cannot be imported: "
                                "RuntimeError: probe header missing")


def test_the_agent_logs_a_source_module_that_cannot_be_imported(
        sources_with_a_broken_module: str, fixtures: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """`vfiowatch run` logs module_import_failed (an error) before it starts anything."""
    rc = cli.main(["--root", str(fixtures / "sysfs" / "sriov-lab"), "run", "--no-journal",
                   "--sources", "nosuch"])
    assert rc == 2  # the unknown source stops it; the failure was logged first
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    failed = [x for x in lines if x["event"] == "module_import_failed"]
    assert failed and failed[0]["level"] == "error"
    assert failed[0]["module"] == sources_with_a_broken_module
    assert failed[0]["error"] == "RuntimeError: probe header missing"
