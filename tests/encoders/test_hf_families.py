"""Every transformers dual-encoder family through ``hf:<folder>``: a tiny checkpoint of each,
loaded by its config's model_type, against the model's own features and processor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

import tiny_hf_families
import wca
from wca.cli import main
from wca.crops import crop_boxes
from wca.encoders.hf_families import FAMILIES, NAFLEX_PATCHES
from wca.encoders.registry import SPEC_FORMS
from wca.preprocessing import fast_views, fidelity_views

KINDS = sorted(tiny_hf_families.BUILDERS)
SCALE, BIAS = 20.0, -3.0  # written into every tiny checkpoint, to see they come from the weights
TEXTS = [
    "a photo of a bird.",
    "一张猫的照片",
    "A RED square with four sides, " * 20,  # longer than every text tower: truncated
]
# (padding, truncation length) each family's tokenizer is driven with.
TEXT_OPTIONS = {
    "align": ("max_length", 64),  # AlignProcessor declares 64, padded
    "altclip": ("longest", 40),  # 42 RoBERTa positions less the two reserved
    "chinese_clip": ("longest", 48),
    "clip": ("longest", 77),
    "metaclip_2": ("longest", 24),
    "siglip": ("max_length", 16),  # SigLIP pools the last position: fixed length
    "siglip2": ("max_length", 64),  # Siglip2Processor declares 64, padded
}


def _calibrate(folder: Path) -> None:
    """Give the checkpoint a distinctive logit scale (ALIGN: temperature) and bias."""
    path = folder / "model.safetensors"
    weights = load_file(path)
    values = {"logit_scale": math.log(SCALE), "temperature": 1 / SCALE, "logit_bias": BIAS}
    for key, value in values.items():
        if key in weights:
            weights[key] = torch.full_like(weights[key], value)
    save_file(weights, path, metadata={"format": "pt"})


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_families")
    made = {}
    for kind in KINDS:
        made[kind] = Path(tiny_hf_families.BUILDERS[kind](root / kind).removeprefix("hf:"))
        _calibrate(made[kind])
    return made


@pytest.fixture(scope="module")
def encoders(folders):
    return {kind: wca.load_encoder(f"hf:{path}", device="cpu") for kind, path in folders.items()}


@pytest.fixture(scope="module")
def references(encoders):
    """Each checkpoint's own model and processor, called the plain transformers way."""
    return {kind: (encoder.model, encoder.processor) for kind, encoder in encoders.items()}


def _image(height: int, width: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _features(output) -> torch.Tensor:
    features = output if isinstance(output, torch.Tensor) else output.pooler_output
    return F.normalize(features, dim=-1)


def test_every_family_has_a_tiny_checkpoint():
    assert set(FAMILIES) == set(KINDS)
    assert set(FAMILIES) >= {"align", "altclip", "chinese_clip", "clip", "siglip", "siglip2"}


@pytest.mark.parametrize("kind", KINDS)
def test_family_tokenizer_and_logit_scale_come_from_the_checkpoint(kind, encoders):
    encoder = encoders[kind]
    assert encoder.family is FAMILIES[kind]
    padding, length = TEXT_OPTIONS[kind]
    assert encoder.text_options == {"padding": padding, "truncation": True, "max_length": length}
    assert encoder.logit_scale == pytest.approx(SCALE, rel=1e-5)
    assert encoder.logit_bias == (pytest.approx(BIAS) if kind.startswith("siglip") else 0.0)


@pytest.mark.parametrize("kind", KINDS)
def test_embeddings_equal_the_models_own_features(kind, encoders, references):
    encoder, (model, processor) = encoders[kind], references[kind]
    tokens = processor(text=TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    with torch.inference_mode():
        expected = _features(model.get_text_features(**tokens))
    texts = encoder.encode_texts(TEXTS)
    torch.testing.assert_close(texts, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(len(TEXTS)))
    shapes = [(40, 40)] if FAMILIES[kind].vision is NAFLEX_PATCHES else [(40, 40), (45, 70)]
    for height, width in shapes:
        image = _image(height, width)
        with torch.inference_mode():
            expected = _features(model.get_image_features(**processor(images=image,
                                                                      return_tensors="pt")))
        pixels = encoder.preprocess(image)[None]
        torch.testing.assert_close(encoder.encode_images(pixels), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_fast_crops_and_full_view_equal_the_processors_pixels(kind, encoders, references):
    encoder, (model, processor) = encoders[kind], references[kind]
    naflex = FAMILIES[kind].vision is NAFLEX_PATCHES
    # 45 x 67 resizes to 32 x 47: a centre crop 7.5 pixels in, which transformers floors
    for height, width in ((45, 67), (40, 40)):
        image = _image(height, width, seed=height)
        boxes = crop_boxes(height, width, 4, 0.3, seed=1)
        views = fast_views(image, boxes, encoder.preprocessing)
        torch.testing.assert_close(views, fidelity_views(image, boxes, encoder.preprocess),
                                   atol=1e-5, rtol=0)
        pictures = [image.crop(tuple(box)) for box in boxes.tolist()]
        ours = views[1:]
        if not naflex or height == width:  # NaFlex keeps a non-square full view's aspect
            pictures, ours = [image, *pictures], views
        expected = processor(images=pictures, return_tensors="pt")["pixel_values"]
        if naflex:  # the processor's patch sequences
            ours = FAMILIES[kind].vision.inputs(model, ours)["pixel_values"]
        torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_wca_classifier_runs_end_to_end(kind, encoders):
    classes = ["bird", "cat", "dog"]
    descriptions = {c: [f"a photo of a {c}.", f"it is a {c} with fur"] for c in classes}
    classifier = wca.WCAClassifier(encoders[kind], classes, descriptions, n_crops=4)
    (prediction,) = classifier.predict(_image(48, 64), top_k=3)
    assert sorted(prediction.labels) == classes
    assert sum(prediction.scores) == pytest.approx(1.0, abs=1e-5)
    assert prediction.crop_weights.shape == (4,) and torch.isfinite(prediction.crop_weights).all()


def test_unknown_family_and_missing_config_give_one_clear_line(tmp_path, capsys):
    with pytest.raises(ValueError, match="has no config.json") as missing:
        wca.load_encoder(f"hf:{tmp_path}", device="cpu")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "owlvit"}))
    with pytest.raises(ValueError) as unknown:
        wca.load_encoder(f"hf:{tmp_path}", device="cpu")
    message = str(unknown.value)
    assert "model_type 'owlvit'" in message and "known: align, altclip, chinese_clip" in message
    for error in (missing, unknown):
        assert "\n" not in str(error.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a readable JSON config"):
        wca.load_encoder(f"hf:{tmp_path}", device="cpu")


def test_models_command_lists_families_forms_and_open_clip_pairs(capsys):
    import open_clip

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for forms in SPEC_FORMS.values():
        for form, _, example in forms:
            assert form in out and example in out
    for family in FAMILIES.values():
        assert family.model_type in out and f"hf:{family.example}" in out
    arch, tag = open_clip.list_pretrained()[0]
    assert f"{arch}: " in out and tag in out
    assert main(["models", "--backend", "hf"]) == 0
    only_hf = capsys.readouterr().out
    assert "siglip2" in only_hf and "open_clip:" not in only_hf
