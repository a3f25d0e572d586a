"""Fixtures shared by the whole suite."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
SUPPORT = Path(__file__).resolve().parent / "support"  # helpers, on sys.path (pyproject)


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist every worker is one process of ``-n`` on as many cores: one torch
    thread each, so that two workers do not fight over the cores with two threads apiece."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def descriptors_dir() -> Path:
    """The published description sets in ``../shared/descriptors`` (read-only data), for the
    tests of those sets; they are skipped, with the reason, where the folder is absent."""
    path = (SHARED / "descriptors").resolve()  # as the CLI records it, where ../shared is a link
    if not path.is_dir():
        pytest.skip(f"{path} is absent: this test checks the published description sets")
    return path


@pytest.fixture(scope="session")
def tiny_descriptions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A descriptions folder laid out like the published sets, written by the test itself:
    ``eurosat/`` (its ten classes) and ``dtd/`` (three textures), each with CuPL sentences,
    CLIP-D descriptors and CLIP-E templates, and ``waffle-words.json`` beside them."""
    from wca.datasets.eurosat import CLASSNAMES as EUROSAT

    root = tmp_path_factory.mktemp("descriptions")
    sets = {"eurosat": list(EUROSAT.values()), "dtd": ["banded", "blotchy", "zigzagged"]}
    for folder, names in sets.items():
        (root / folder).mkdir()
        files = {
            "cupl.json": {n: [f"a photo of {n}, up close.", f"{n} in daylight."] for n in names},
            "clip-d.json": {n: ["which has a pattern", f"which looks like {n}"] for n in names},
            "clip-e.json": ["a photo of a {} texture.", "a photo of a {} pattern."],
        }
        if folder == "dtd":
            files["classnames.json"] = names
        for name, content in files.items():
            (root / folder / name).write_text(json.dumps(content), encoding="utf-8")
    (root / "waffle-words.json").write_text(json.dumps(["apple", "river", "stone", "quiet"]))
    return root


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The default cache folders (features, texts) of the whole run in one temporary folder,
    never the user's ``~/.cache/wca``; tests that need another one set ``WCA_CACHE_DIR``."""
    folder = tmp_path_factory.mktemp("wca-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WCA_CACHE_DIR", str(folder))
        yield folder
