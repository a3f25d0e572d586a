"""The WCAClassifier API on a stand-in encoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from fake_encoder import FakeEncoder
from wca.classifier import WCAClassifier
from wca.crops import crop_boxes
from wca.images import image_key

CLASSES = ["red square", "green circle", "blue star"]
DESCRIPTIONS = {
    "red square": ["A red square has four equal sides.", "It is bright red."],
    "green circle": ["A green circle is round.", "It is green.", "It has no corners."],
    "blue star": ["A blue star has five points."],
}


def picture(seed: int = 0, size=(90, 70)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype(np.uint8))


@pytest.fixture
def classifier() -> WCAClassifier:
    return WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=8)


def test_predict_returns_ranked_probabilities_and_evidence(classifier):
    (prediction,) = classifier.predict(picture(), top_k=2)
    assert len(prediction.labels) == 2 and prediction.labels[0] in CLASSES
    assert prediction.scores[0] >= prediction.scores[1]
    assert prediction.boxes.shape == (8, 4)
    assert torch.equal(
        prediction.boxes, crop_boxes(70, 90, 8, 0.5, seed=0, image_index=image_key(picture()))
    )
    assert prediction.crop_weights.shape == (8,)
    assert prediction.crop_weights.sum().item() == pytest.approx(1.0)
    assert set(prediction.descriptions) == set(prediction.labels)
    rows = prediction.descriptions[prediction.labels[0]]
    assert sum(r.weight for r in rows) == pytest.approx(1.0)
    assert {r.description for r in rows} == set(DESCRIPTIONS[prediction.labels[0]])


def test_probabilities_follow_the_wca_scores(classifier):
    encoder = classifier.encoder
    image = picture(1)
    boxes, views = classifier.views(image)
    emb = encoder.encode_images(views)
    scores = classifier.head.logits(emb[:1], emb[1:].unsqueeze(0))[0]
    (prediction,) = classifier.predict(image, top_k=3)
    assert prediction.indices == scores.argsort(descending=True).tolist()
    expected = torch.softmax(100.0 * scores, dim=-1).sort(descending=True).values
    assert prediction.scores == pytest.approx(expected.tolist())


def test_description_scores_decompose_the_paper_score():
    classifier = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=8, form="paper")
    image = picture(2)
    _, views = classifier.views(image)
    emb = classifier.encoder.encode_images(views)
    scores = classifier.head.logits(emb[:1], emb[1:].unsqueeze(0))[0]
    (prediction,) = classifier.predict(image, top_k=3)
    for label, rows in prediction.descriptions.items():
        total = sum(r.weight * r.similarity for r in rows)
        assert total == pytest.approx(scores[CLASSES.index(label)].item(), abs=1e-5)


def test_call_matches_the_hugging_face_pipeline_shape(classifier, tmp_path):
    path = tmp_path / "image.png"
    picture(3).save(path)
    single = classifier(path, top_k=2)
    assert isinstance(single, list) and set(single[0]) == {"label", "score"}
    several = classifier([path, picture(4)], top_k=3)
    assert len(several) == 2 and len(several[1]) == 3
    assert sum(item["score"] for item in several[1]) == pytest.approx(1.0, abs=1e-5)


def test_fidelity_path_gives_the_same_ranking_on_smooth_images():
    smooth = picture(5, (12, 9)).resize((240, 180), Image.BICUBIC)
    fast = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=6)
    exact = WCAClassifier(FakeEncoder(), CLASSES, DESCRIPTIONS, n_crops=6, fidelity=True)
    a, b = fast.predict(smooth, top_k=3)[0], exact.predict(smooth, top_k=3)[0]
    assert a.labels == b.labels
    assert a.scores == pytest.approx(b.scores, abs=1e-3)


def test_descriptions_from_a_file_and_missing_classes(tmp_path):
    import json

    path = tmp_path / "descriptions.json"
    path.write_text(json.dumps({k: v for k, v in DESCRIPTIONS.items() if k != "blue star"}))
    with pytest.raises(ValueError, match="'blue star'"):
        WCAClassifier(FakeEncoder(), CLASSES, path)
    path.write_text(json.dumps(DESCRIPTIONS))
    assert WCAClassifier(FakeEncoder(), CLASSES, path).head.desc_emb.shape == (3, 3, 16)


def test_explanation_image_is_written(classifier, tmp_path):
    from wca.explain import render_explanation

    image = picture(6, (160, 120))
    (prediction,) = classifier.predict(image, top_k=3)
    path = render_explanation(image, prediction, tmp_path / "explain" / "one.png")
    written = Image.open(path)
    assert written.format == "PNG" and written.width > 800
