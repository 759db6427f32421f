"""Shared test configuration: tier markers by directory, fixture paths, privilege gates."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
FIXTURES = TESTS / "fixtures"
REPO = TESTS.parent

_TIER_BY_DIR = {
    "unit": "unit", "golden": "golden", "tui": "tui", "kernel": "kernel",
    "ebpf": "ebpf", "lab": "lab", "bench": "bench", "image": "image",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every test the marker of its tier directory (tests/<tier>/...)."""
    for item in items:
        rel = Path(str(item.fspath)).resolve().relative_to(TESTS.resolve())
        tier = _TIER_BY_DIR.get(rel.parts[0]) if len(rel.parts) > 1 else None
        if tier and tier not in {m.name for m in item.iter_markers()}:
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def require_root() -> None:
    """Kernel, eBPF, lab and bench tiers need root; CI runs as root, so this only skips on a
    developer laptop. Session-scoped, so module- and session-scoped fixtures can ask for it."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs every tier as root)")


def vfiowatch_bin() -> str:
    exe = REPO / ".venv" / "bin" / "vfiowatch"
    return str(exe) if exe.exists() else (shutil.which("vfiowatch") or "vfiowatch")


@contextlib.contextmanager
def bind_mounts(*pairs: tuple[Path, Path]) -> Iterator[None]:
    """Bind-mount each (source, target) for the block's life (root only), then unmount them.

    A --root tree cannot reach the real /proc or a real namespace by a symlink (it would lead
    outside the root: refused), so tests that need them inside a tree mount them there.
    """
    done: list[Path] = []
    try:
        for src, dst in pairs:
            subprocess.run(["mount", "--bind", str(src), str(dst)], check=True, capture_output=True)
            done.append(dst)
        yield
    finally:
        for dst in reversed(done):
            subprocess.run(["umount", str(dst)], check=False, capture_output=True)
