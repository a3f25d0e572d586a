"""The classifier under the adaptive crop budget: each image reads a prefix of its fixed crops
and is scored by the head on that prefix alone, in the order of the images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fake_encoder import FakeEncoder
from wca.budget import BudgetSpec
from wca.classifier import WCAClassifier
from wca.errors import SettingError

CLASSES = ["red square", "green circle", "blue star"]
DESCRIPTIONS = {
    "red square": ["A red square has four equal sides.", "It is bright red."],
    "green circle": ["A green circle is round.", "It is green.", "It has no corners."],
    "blue star": ["A blue star has five points."],
}
N = 12


def picture(seed: int, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


def test_defaults_stay_fixed() -> None:
    classifier = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=N)
    assert not classifier.budget.adaptive
    (prediction,) = classifier.predict(picture(0))
    assert prediction.boxes.shape == (N, 4)


@pytest.mark.parametrize("method", ["wca", "zero"])
def test_each_image_is_scored_on_its_own_prefix(method) -> None:
    budget = {"crop_budget": "adaptive", "margin_z": 10.0, "min_crops": 2, "crops_per_round": 2,
              "patience": 3, "stop_rule": "margin" if method == "wca" else "patience"}  # fmt: skip
    images = [picture(seed, (60 + 7 * seed, 50 + 3 * seed)) for seed in range(10)]
    adaptive = WCAClassifier(
        FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=N, method=method, **budget
    )
    found = adaptive.predict(images, top_k=None)
    reads = [len(prediction.crop_emb) for prediction in found]
    assert all(2 <= k <= N and k % 2 == 0 for k in reads)
    assert method != "wca" or len(set(reads)) > 1  # the margin rule stops images apart
    for image, prediction in zip(images, found, strict=True):
        k = len(prediction.crop_emb)
        fixed = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=k, method=method)
        (alone,) = fixed.predict(image, top_k=None)
        assert torch.equal(prediction.boxes, alone.boxes)
        torch.testing.assert_close(prediction.crop_emb, alone.crop_emb, rtol=0, atol=1e-6)
        assert prediction.labels[0] == alone.labels[0]
        assert prediction.scores == pytest.approx(alone.scores, abs=1e-5)


def test_a_budget_is_given_once_and_checked() -> None:
    with pytest.raises(ValueError, match="not both"):
        WCAClassifier(FakeEncoder(), CLASSES, budget=BudgetSpec(), margin_z=2.0)
    with pytest.raises(SettingError, match="min_crops"):
        WCAClassifier(FakeEncoder(), CLASSES, n_crops=2, crop_budget="adaptive")
    spec = BudgetSpec(crop_budget="adaptive", min_crops=3)
    assert WCAClassifier(FakeEncoder(), CLASSES, n_crops=8, budget=spec).budget is spec


def test_an_unreadable_image_keeps_its_place(tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    classifier = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=N,
                               crop_budget="adaptive", min_crops=2)  # fmt: skip
    images = [picture(1), str(broken), picture(2)]
    answers = list(classifier.predict_each(images))
    assert [position for position, _ in answers] == [0, 1, 2]
    assert isinstance(answers[1][1], ValueError)
