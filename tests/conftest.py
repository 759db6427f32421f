"""Shared test configuration: tier markers by directory, fixture paths, privilege gates."""

from __future__ import annotations

import os
import shutil
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


@pytest.fixture
def require_root() -> None:
    """Kernel tiers need root; CI runs as root, so this only skips on a developer laptop."""
    if os.geteuid() != 0:
        pytest.skip("needs root (CI runs every tier as root)")


def vfiowatch_bin() -> str:
    exe = REPO / ".venv" / "bin" / "vfiowatch"
    return str(exe) if exe.exists() else (shutil.which("vfiowatch") or "vfiowatch")
