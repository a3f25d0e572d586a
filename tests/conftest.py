"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def descriptors_dir() -> Path:
    """The published description sets in ``../shared/descriptors`` (read-only data)."""
    path = SHARED / "descriptors"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read the published description sets from it")
    return path
