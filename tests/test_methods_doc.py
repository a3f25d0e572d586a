"""docs/methods.md is what scripts/methods_doc.py generates from the registry (so it never
drifts), and it covers every method, its options and the authors' per-dataset values."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from wca.methods import METHODS
from wca.methods.registry import options_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def methods_doc():
    spec = importlib.util.spec_from_file_location("methods_doc", ROOT / "scripts/methods_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_guide_is_current(methods_doc):
    committed = (ROOT / "docs" / "methods.md").read_text()
    assert committed == methods_doc.render(), "run .venv/bin/python scripts/methods_doc.py"


def test_every_method_and_option_is_in_it(methods_doc):
    text = methods_doc.render()
    for name in METHODS.list():
        section = text.split(f"\n## {name}\n", 1)[1].split("\n## ", 1)[0]
        for option in options_model(name).model_fields:
            assert f"| `{option}` |" in section, (name, option)


def test_per_dataset_values_are_what_the_heads_run(methods_doc):
    options, values, unseen = methods_doc.per_dataset_values("tda")
    assert options == ["views", "pos_alpha", "pos_beta"] and not unseen
    assert values["imagenet-sketch"] == {"views": "confident", "pos_alpha": 2.363, "pos_beta": 7.45}
    assert "| imagenet-sketch | `'confident'` | 2.363 | 7.45 |" in methods_doc.render()
    options, values, unseen = methods_doc.per_dataset_values("bifta")  # on its texts alone
    assert options == ["max_descriptions"] and not unseen
    assert values["imagenet"] == {"max_descriptions": 50}
    assert values["cub"] == {"max_descriptions": None}


def test_the_check_mode_finds_a_stale_guide(methods_doc, tmp_path, monkeypatch, capsys):
    stale = tmp_path / "methods.md"
    stale.write_text("# Methods\n")
    monkeypatch.setattr(methods_doc, "GUIDE", stale)
    assert methods_doc.main(["--check"]) == 1
    assert "stale" in capsys.readouterr().out
    assert methods_doc.main([]) == 0 and methods_doc.main(["--check"]) == 0
