"""Fixtures every test folder shares. Tests mirror the source packages (tests/<package>/);
helpers they import live in tests/support/ and are imported as `tests.support.<name>`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The checkout's root: commands run from here, configs/ lives here."""
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (SHARED_DATA overrides); skips when absent."""
    path = Path(os.environ.get("SHARED_DATA", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"needs the shared sample data at {path} (absent here)")
    return path
