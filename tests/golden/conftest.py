"""Golden-file options: `pytest tests/golden --update-goldens` (or UPDATE_GOLDEN=1) rewrites the
committed outputs."""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", default=False,
        help="rewrite tests/golden/**/ expected files from the current code instead of comparing",
    )


def pytest_configure(config: pytest.Config) -> None:
    """One switch for both kinds of golden test: the fixture below and the modules that read
    UPDATE_GOLDEN when imported (collection comes after this)."""
    if config.getoption("update_goldens", default=False):
        os.environ["UPDATE_GOLDEN"] = "1"


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files (run pytest on tests/golden)."""
    return bool(request.config.getoption("update_goldens", default=False)
                or os.environ.get("UPDATE_GOLDEN") == "1")
