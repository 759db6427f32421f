"""Golden-file options: `pytest tests/golden --update-goldens` rewrites the committed outputs."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-goldens", action="store_true", default=False,
        help="rewrite tests/golden/**/ expected files from the current code instead of comparing",
    )


@pytest.fixture
def update_goldens(request: pytest.FixtureRequest) -> bool:
    """True when the run was asked to rewrite golden files (run pytest on tests/golden)."""
    return bool(request.config.getoption("update_goldens", default=False))
