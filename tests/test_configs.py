"""The shipped config files (the authors' YAML shape) load with the authors' settings."""

from __future__ import annotations

import pytest

from wca.config import resolve_config
from wca.configs import packaged_configs
from wca.datasets import DATASETS

CONFIGS = list(packaged_configs().values())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_the_authors_settings(path):
    config = resolve_config(path=path)
    assert config.dataset == path.stem and config.dataset in DATASETS
    assert config.model == "open_clip:ViT-B-32/openai"
    assert (config.n_run, config.patch_n) == (20, 60)
    imagenet_pool = path.stem.startswith("imagenet") and path.stem != "imagenetv2"
    assert config.n_crops == (60 if imagenet_pool else 100)  # the authors' configs
    assert config.alpha == (0.7 if path.stem == "places365" else 0.5)
    assert config.crop_alpha == 0.1  # what the authors' code crops with
    assert any("U(0.1, 0.9)" in note for note in config.notes)
    assert [m.name for m in config.enabled_methods()] == [
        "clip",
        "clip-e",
        "clip-d",
        "waffle",
        "cupl",
        "wca",
    ]
    wca = config.enabled_methods()[-1]
    assert wca.options == {"image_scale": 4.0, "text_scale": 2.0}


def test_every_paper_dataset_has_a_config():
    paper = {
        "imagenet",
        "imagenetv2",
        "imagenet-sketch",
        "imagenet-r",
        "imagenet-a",
        "cub",
        "dtd",
        "food101",
        "oxford_pets",
        "places365",
    }
    assert {p.stem for p in CONFIGS} == paper
