"""The shipped demo model: it loads through wca, open_clip's OpenAI loader and its registered
model config, and it still knows what docs/demo.md's probe says it knows."""

from __future__ import annotations

import json

import open_clip
import pytest
import torch

import wca
from wca.demo.probe import run_probe
from wca.demo.train import MODEL_FILE, MODEL_NAME, normalise, register_model_config

# probe.json records docs/demo.md's probe ("probe", 256 images per size) and a smaller probe of
# the same model that these tests repeat ("test_probe").
RECORD = MODEL_FILE.parent / "probe.json"
TOLERANCE = 2.0  # percentage points: loaders may differ in the last float bits only


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RECORD.read_text())


@pytest.fixture(scope="module")
def openai_model():
    model = open_clip.load_openai_model(str(MODEL_FILE), device="cpu")
    return model.eval()


def test_shipped_file_is_small_fp16_and_openai_format(recorded):
    assert MODEL_FILE.stat().st_size <= 20 * 2**20
    state = torch.load(MODEL_FILE, map_location="cpu")
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    assert "visual.attnpool.positional_embedding" in state and "token_embedding.weight" in state
    assert sum(v.numel() for k, v in state.items() if "num_batches" not in k) >= recorded["params"]


def _check(result: dict, expected: dict) -> None:
    for radius, accuracy in expected.items():
        for key in ("colour", "shape"):
            assert abs(result[radius][key] - accuracy[key]) <= TOLERANCE, (radius, key)


def test_probe_through_wca_load_encoder(recorded):
    encoder = wca.load_encoder(f"open_clip:{MODEL_FILE}", device="cpu")
    assert encoder.preprocessing.image_size == 64
    result = run_probe(
        encoder.encode_images, encoder.encode_texts, normalise, **recorded["test_probe_args"]
    )
    _check(result, recorded["test_probe"])


@pytest.mark.slow
def test_probe_through_open_clip(recorded, openai_model):
    tokenizer = (
        open_clip.get_tokenizer(MODEL_NAME)
        if MODEL_NAME in open_clip.list_models()
        else open_clip.tokenize
    )
    result = run_probe(
        openai_model.encode_image,
        lambda texts: openai_model.encode_text(tokenizer(texts)),
        normalise,
        **recorded["test_probe_args"],
    )
    _check(result, recorded["test_probe"])


def test_registered_config_loads_the_same_weights(openai_model):
    register_model_config()
    model, _, preprocess = open_clip.create_model_and_transforms(
        MODEL_NAME, pretrained=str(MODEL_FILE)
    )
    model.eval()
    images = normalise(torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    tokens = open_clip.tokenize(["a red circle.", "a photo of a zorbel."])
    with torch.no_grad():
        assert torch.allclose(
            model.encode_image(images), openai_model.encode_image(images), atol=1e-5
        )
        assert torch.allclose(
            model.encode_text(tokens), openai_model.encode_text(tokens), atol=1e-5
        )
