"""The Go binary reader on real executables built here in Kata's own build forms, checked against `go version -m`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from diag.sources.kata import gobinary
from tests.conftest import REPO
from tests.katabins import (
    FORMS,
    build_kata_go,
    build_kata_monitor,
    build_other_go,
    build_rust,
    go_missing,
)

COMMIT = "b7051890af22f80a9f9d8bb9b48b2e3e2a9fee52"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = go_missing()
    assert not why, why
    return tmp_path_factory.mktemp("gobin")


@pytest.fixture(scope="module")
def cache() -> Path:
    # The Go build cache survives runs (the standard library's first build takes ~30 s).
    p = REPO / ".cache" / "go-test"
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.fixture(scope="module")
def shims(work: Path, cache: Path) -> dict[str, Path]:
    return {form: build_kata_go(work, version="3.8.0", commit=COMMIT, form=form, cache=cache) for form in FORMS}


def go_version_m(path: Path) -> dict[str, str]:
    """What `go version -m` prints: path, mod and build settings, keyed like GoBuildInfo."""
    out = subprocess.run(["go", "version", "-m", str(path)], capture_output=True, text=True, check=True).stdout
    got: dict[str, str] = {"go": out.split(":", 1)[1].splitlines()[0].strip()}
    for line in out.splitlines()[1:]:
        parts = line.strip().split("\t")
        if parts[0] in ("path", "mod"):
            got[parts[0]] = parts[1]
        elif parts[0] == "build":
            k, v = parts[1].split("=", 1)
            got[k] = v.strip('"')
    return got


@pytest.mark.parametrize("form", list(FORMS))
def test_kata_version_is_read_from_every_build_form(shims: dict[str, Path], form: str) -> None:
    """PIE or static, linked by Go or by gcc, with or without symbols: the shim's VERSION and COMMIT are read."""
    info = gobinary.read_file(shims[form])
    assert info.is_go and info.is_kata
    assert (info.kata_version, info.kata_commit) == ("3.8.0", COMMIT)
    stripped = "stripped" in form
    assert info.kata_how == ("symbol katautils.VERSION" if not stripped else
                             "a version string variable in .data beside Kata's COMMIT and configuration paths "
                             "(stripped binary: no symbol table)")


@pytest.mark.parametrize("form", list(FORMS))
def test_build_information_matches_go_version_m(shims: dict[str, Path], form: str) -> None:
    """Go version, main path, module and every build setting are what `go version -m` prints."""
    info = gobinary.read_file(shims[form])
    want = go_version_m(shims[form])
    assert info.go_version == want.pop("go")
    assert info.path == want.pop("path") == "github.com/kata-containers/kata-containers/src/runtime/cmd/containerd-shim-kata-v2"
    assert info.main_module == want.pop("mod")
    assert dict(info.settings) == want


def test_the_binary_says_the_same_version_when_run(shims: dict[str, Path]) -> None:
    """The reader agrees with the shim's own --version (run here only to check the reader)."""
    out = subprocess.run([str(shims["pie"]), "--version"], capture_output=True, text=True, check=True).stdout
    assert "version: 3.8.0, commit: " + COMMIT in out


def test_versions_differ_by_build(work: Path, cache: Path) -> None:
    """Two builds of two versions read as two versions (nothing is hard-wired to 3.8.0)."""
    for v in ("3.2.0", "4.1.0"):
        info = gobinary.read_file(build_kata_go(work, version=v, commit="0" * 40, form="static-stripped", cache=cache))
        assert info.kata_version == v


def test_a_pie_whose_pointer_is_left_to_the_dynamic_loader_is_read_from_rela_dyn(shims: dict[str, Path],
                                                                                  tmp_path: Path) -> None:
    """Linkers may leave RELA-covered pointers zero in the file: the reader takes the addend from .rela.dyn."""
    data = bytearray(shims["pie-external"].read_bytes())
    elf = gobinary._parse_elf(bytes(data))
    found = gobinary._symbol(elf, gobinary.KATA_VERSION_SYMBOLS)
    assert found is not None
    off = elf.offset_of(found[1])
    assert off is not None and found[1] in elf.relocs()
    data[off:off + 8] = b"\0" * 8
    patched = tmp_path / "shim"
    patched.write_bytes(bytes(data))
    assert gobinary.read_file(patched).kata_version == "3.8.0"


def test_kata_monitor_ldflags_x_is_a_build_setting_not_the_version(work: Path, cache: Path) -> None:
    """kata-monitor's `-X main.GitCommit=` shows in the build settings; it carries no Kata version."""
    info = gobinary.read_file(build_kata_monitor(work, commit=COMMIT, cache=cache))
    assert info.is_kata and info.setting("-ldflags") == f"-X main.GitCommit={COMMIT}"
    assert info.kata_version == ""
    assert info.notes == ("Kata's Go runtime, but its VERSION variable was not found",)


def test_another_go_program_is_go_but_not_kata(work: Path, cache: Path) -> None:
    """A Go program of another module has build information and no Kata version."""
    info = gobinary.read_file(build_other_go(work, cache=cache))
    assert info.is_go and not info.is_kata and info.kata_version == ""


def test_a_rust_shim_has_no_go_build_information(work: Path) -> None:
    """runtime-rs is Rust: no .go.buildinfo, said so (the runtime is told by install path and state dirs)."""
    info = gobinary.read_file(build_rust(work))
    assert not info.is_go and info.notes == ("no .go.buildinfo: not a Go program",)


@pytest.mark.parametrize(("content", "why"), [
    (b"#!/bin/sh\nexec /opt/kata/bin/containerd-shim-kata-v2 \"$@\"\n", "not an ELF file"),
    (b"\x7fELF" + b"\0" * 10, "not an ELF file (too short)"),
    (b"\x7fELF\x09\x01" + b"\0" * 80, "unknown ELF class or byte order"),
])
def test_what_is_not_an_elf_file_is_named(tmp_path: Path, content: bytes, why: str) -> None:
    """Scripts, truncated and unknown files raise NotElf with the reason, never a traceback."""
    p = tmp_path / "f"
    p.write_bytes(content)
    with pytest.raises(gobinary.NotElf, match=f"^{why.replace('(', '.').replace(')', '.')}$"):
        gobinary.read_file(p)


def test_a_truncated_go_binary_does_not_crash(shims: dict[str, Path], tmp_path: Path) -> None:
    """A binary cut short (a copy in progress) reads as what is left, never a traceback."""
    p = tmp_path / "cut"
    p.write_bytes(shims["static"].read_bytes()[:4096])
    try:
        info = gobinary.read_file(p)
    except gobinary.NotElf:
        return
    assert info.kata_version == ""


def test_go_is_installed_by_the_project() -> None:
    """golang-go is in the test group of deploy/packages.txt, so CI can build these programs."""
    text = (REPO / "deploy" / "packages.txt").read_text()
    assert any(line.split()[:2] == ["test", "golang-go"] for line in text.splitlines() if line.strip())
    assert shutil.which("go")
