"""The classifier as transformers' zero-shot-image-classification pipeline, and its one-line
repr."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from fake_encoder import FakeEncoder
from tiny_models import save_hf_clip_model
from wca.classifier import WCAClassifier

LABELS = ["a red fox", "a blue whale", "a green frog"]


def pictures(count: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [
        Image.fromarray((rng.random((40 + 5 * i, 50, 3)) * 255).astype(np.uint8))
        for i in range(count)
    ]


def test_the_factory_and_its_call_equal_transformers_pipeline_on_a_tiny_hf_clip(tmp_path):
    """``wca.zero_shot_pipeline(model=...)`` as ``pipeline(task, model=...)``: labels at call
    time only, every label returned (top_k None), the same scores."""
    from transformers import pipeline

    import wca

    save_hf_clip_model(tmp_path / "clip")
    theirs = pipeline("zero-shot-image-classification", model=str(tmp_path / "clip"))
    ours = wca.zero_shot_pipeline(model=str(tmp_path / "clip"), method="clip", device="cpu")
    assert ours.classnames is None
    images = pictures()
    expected = theirs(images, candidate_labels=LABELS)  # "This is a photo of {}."
    got = ours(images, candidate_labels=LABELS, hypothesis_template="This is a photo of {}.")
    for mine, reference in zip(got, expected, strict=True):
        assert [row["label"] for row in mine] == [row["label"] for row in reference]
        assert [row["score"] for row in mine] == pytest.approx(
            [row["score"] for row in reference], abs=1e-5
        )


def test_inputs_labels_at_call_time_and_top_k(tmp_path, caplog):
    classifier = WCAClassifier(
        FakeEncoder(), ["fox", "whale"], {"fox": ["a fox."], "whale": ["a whale."]}, n_crops=4
    )
    image = pictures(1)[0]
    array = np.asarray(image)
    path = tmp_path / "image.png"
    image.save(path)
    one = classifier(image)
    assert classifier(array) == one and classifier(str(path)) == one and classifier(path) == one
    assert [len(r) for r in classifier([image, array])] == [2, 2]
    with caplog.at_level(logging.INFO, logger="wca"):
        three = classifier(image, candidate_labels=["fox", "whale", "frog"], top_k=None)
        classifier(image, candidate_labels=["fox", "whale", "frog"], top_k=None)
    assert sorted(row["label"] for row in three) == ["fox", "frog", "whale"]
    assert sum(row["score"] for row in three) == pytest.approx(1.0)
    notices = [r.message for r in caplog.records if "have no descriptions" in r.message]
    assert len(notices) == 1 and "'frog'" in notices[0]  # said once per label set
    assert len(classifier(image, top_k=1)) == 1
    with pytest.raises(ValueError, match="top_k"):
        classifier(image, top_k=0)
    with pytest.raises(ValueError, match="not an image"):
        classifier(3.5)


def test_prediction_repr_is_one_line_with_the_tensors_kept(tmp_path):
    classifier = WCAClassifier(FakeEncoder(), ["fox", "whale"], n_crops=4)
    path = tmp_path / "photo.png"
    pictures(1)[0].save(path)
    (prediction,) = classifier.predict(path)
    text = repr(prediction)
    assert "\n" not in text and text.startswith("Prediction(label=")
    assert str(path) in text and "score=" in text
    assert prediction.crop_emb.shape == (4, FakeEncoder.embed_dim)
    assert prediction.boxes.shape == (4, 4)


def test_without_classnames_every_call_gives_its_labels():
    classifier = WCAClassifier(FakeEncoder(), descriptions={"fox": ["a fox."]}, n_crops=4)
    image = pictures(1)[0]
    with pytest.raises(ValueError, match="no labels: give candidate_labels"):
        classifier(image)
    answer = classifier(image, candidate_labels=["fox", "whale", "frog"])
    assert sorted(row["label"] for row in answer) == ["fox", "frog", "whale"]  # all, as HF
    assert len(classifier(image, candidate_labels=["fox", "whale"], top_k=1)) == 1
