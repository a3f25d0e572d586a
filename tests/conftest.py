"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import Iterator
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


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default cache folders (features, texts) of the whole run in one temporary folder,
    never the user's ``~/.cache/wca``; tests that need another one set ``WCA_CACHE_DIR``."""
    folder = tmp_path_factory.mktemp("wca-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WCA_CACHE_DIR", str(folder))
        yield folder
