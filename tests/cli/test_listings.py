"""`wca methods`, `wca datasets` and `wca models` with patterns: made from the registries, the
help's method list checked against the registry, the weights on disk marked."""

from __future__ import annotations

import pytest

from wca.cli import build_parser, main
from wca.config import METHOD_NAMES


def test_the_help_lists_every_registered_method():
    from wca.methods import METHODS

    assert sorted(METHOD_NAMES) == METHODS.list()
    (eval_parser,) = [
        action.choices["eval"] for action in build_parser()._actions if hasattr(action, "choices")
        and isinstance(action.choices, dict) and "eval" in action.choices
    ]  # fmt: skip
    (methods,) = [action for action in eval_parser._actions if action.dest == "methods"]
    assert all(name in methods.help for name in METHODS)


def test_methods_lists_every_method_with_its_summary_and_capabilities(capsys):
    from wca.methods import METHODS

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    firsts = [line.split()[0] for line in out.splitlines() if line and not line.startswith(" ")]
    assert firsts[:-1] == METHODS.list() and firsts[-1] == "`wca"
    out = " ".join(out.split())
    assert "wca WCA (ICML 2024): descriptions aligned with weighted local crops" in out
    assert "online: a memory over the stream of images" in out


def test_a_method_pattern_shows_options_defaults_and_per_dataset_values(capsys):
    assert main(["methods", "onzeta"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith("onzeta OnZeta (ECCV 2024)")
    assert "options (--set methods.onzeta.OPTION=VALUE):" in out
    assert "tau_t (float): 0.01" in out
    assert "beta (float or none): unset: the dataset's value" in out
    assert "caltech101; other's elsewhere (--set methods.onzeta.dataset=imagenet" in out
    assert main(["methods", "tda*"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == [
        "tda", "tda+wca"]  # fmt: skip
    assert main(["methods", "nothing-like-it"]) == 1


def test_datasets_lists_names_splits_and_options(capsys):
    from wca.datasets import DATASETS

    assert main(["datasets"]) == 0
    out = capsys.readouterr().out
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert [name.removesuffix("/NAME") for name in names] == DATASETS.list()
    assert "wds/NAME" in names
    assert main(["datasets", "CIFAR"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if not line.startswith(" ")] == [
        "cifar10", "cifar100"]  # fmt: skip
    assert "splits: test; options: download=False" in out
    assert main(["datasets", "imagenetv*"]) == 0
    assert "splits: matched-frequency, threshold0.7, top-images" in capsys.readouterr().out


@pytest.mark.slow
def test_models_pattern_marks_weights_on_disk(monkeypatch, tmp_path, capsys):
    """ViT-B-32/openai's weights put in a Hugging Face cache are marked; others are not."""
    import open_clip
    from huggingface_hub import constants

    repo = open_clip.get_pretrained_cfg("ViT-B-32", "openai")["hf_hub"].strip("/")
    folder = tmp_path / f"models--{repo.replace('/', '--')}"
    (folder / "snapshots" / "0").mkdir(parents=True)
    (folder / "snapshots" / "0" / "open_clip_model.safetensors").write_bytes(b"weights")
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    assert main(["models", "ViT-B-32/*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = [line.split()[0] for line in lines if line.endswith(" *")]
    assert marked == ["ViT-B-32/openai"]
    assert "ViT-B-32/laion2b_s34b_b79k" in [line.split()[0] for line in lines]
    assert main(["models", "demo"]) == 0
    assert capsys.readouterr().out.split() == ["demo", "the", "shipped", "demo", "model", "*"]
