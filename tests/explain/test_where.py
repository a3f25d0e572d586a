"""Where-maps on constructed cases: the contrast cancels coverage, peaks where the evidence is,
says "no localized evidence" where there is none, and the explanation crops are cached."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import wca
from fake_encoder import FakeEncoder
from wca.explain.contrast import contrast, cover_masks
from wca.explain.where import where_figure, where_maps
from wca.explain.windows import Windows, window_embeddings


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("WCA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "views"


def random_boxes(count: int, side: int, seed: int) -> torch.Tensor:
    """``count`` square crops of sides 15-45 % of a ``side``-pixel image, placed at random."""
    generator = torch.Generator().manual_seed(seed)
    sizes = (side * (0.15 + 0.3 * torch.rand(count, generator=generator))).long()
    left = (torch.rand(count, generator=generator) * (side - sizes)).long()
    top = (torch.rand(count, generator=generator) * (side - sizes)).long()
    return torch.stack([left, top, left + sizes, top + sizes], 1)


def test_one_heavy_crop_at_a_corner_peaks_in_it():
    side, heavy = 96, torch.tensor([[0, 0, 24, 24]])
    boxes = torch.cat([heavy, random_boxes(80, side, seed=3)])
    values = 0.2 + 0.03 * torch.randn(len(boxes), generator=torch.Generator().manual_seed(4))
    values[0] = 0.35
    masks = cover_masks(boxes, (side, side), (side, side))
    found = contrast(masks, values[None])
    row, column = found.peak(0)
    assert masks[0, row, column], "the peak lies in the heavy crop"
    assert bool(found.localized[0])


def test_noise_is_no_localized_evidence_where_the_covering_mean_finds_the_border():
    """Values unrelated to place: the covering crops' mean (the estimator before 0.3) peaks
    where one or two crops cover the image, the contrast finds nothing to show."""
    side = 96
    boxes = random_boxes(80, side, seed=3)
    values = 0.2 + 0.03 * torch.randn(1, len(boxes), generator=torch.Generator().manual_seed(5))
    masks = cover_masks(boxes, (side, side), (side, side))
    mean = (values[0, :, None, None] * masks).sum(0) / masks.sum(0)
    row, column = divmod(int(torch.nan_to_num(mean, nan=-1).argmax()), side)
    assert masks[:, row, column].sum() <= 2
    assert not bool(contrast(masks, values).localized[0])


def test_equal_values_give_a_flat_map_whatever_the_coverage():
    boxes = random_boxes(60, 64, seed=5)  # coverage from 0 to many crops per pixel
    found = contrast(cover_masks(boxes, (64, 64), (32, 32)), torch.full((2, 60), 0.3))
    covered = ~torch.isnan(found.difference[0])
    assert covered.sum() > 500
    assert found.difference[:, covered].abs().max() < 1e-12
    assert found.t[:, covered].abs().max() < 1e-3
    assert not found.localized.any()


def test_t_does_not_depend_on_the_values_scale_and_is_the_fit_slope_over_its_error():
    boxes = random_boxes(30, 40, seed=6)
    masks = cover_masks(boxes, (40, 40), (40, 40))
    values = torch.randn(1, 30, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    first, second = contrast(masks, values), contrast(masks, 3 * values + 1)
    assert torch.allclose(first.t, second.t, atol=1e-4, equal_nan=True)
    assert torch.equal(first.noise, second.noise) and torch.equal(first.localized, second.localized)
    # at one cell: the least-squares slope of values on the mask, with an intercept
    row, column = first.peak(0)
    design = torch.stack([torch.ones(30), masks[:, row, column].double()], 1)
    fit = torch.linalg.lstsq(design, values[0, :, None]).solution[:, 0]
    assert float(first.difference[0, row, column]) == pytest.approx(float(fit[1]), abs=1e-6)


def test_windows_cover_every_inner_pixel_equally():
    windows = Windows(sides=(0.25,), overlap=2)
    boxes = windows.boxes(64, 48)
    assert (boxes[:, 2] - boxes[:, 0] == 12).all() and (boxes[:, 3] - boxes[:, 1] == 12).all()
    counts = cover_masks(boxes, (64, 48), (64, 48)).sum(0)
    assert counts.min() >= 1  # every pixel is seen, the far edges by a flush row and column
    assert set(counts[6:-12, 6:-12].unique().tolist()) == {4}  # away from the borders
    with pytest.raises(ValueError, match="windows: sides"):
        Windows(sides=(0.0,))


class ConstantViews(FakeEncoder):
    """Every view embeds to the same vector: every crop matches every description equally."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.views += len(pixels)
        return F.normalize(torch.ones(len(pixels), self.embed_dim), dim=-1)


def test_no_localized_evidence_is_said_not_drawn():
    classifier = wca.WCAClassifier(
        ConstantViews(), ["thing", "other"], {"thing": ["a", "b"], "other": ["c"]}, n_crops=8
    )
    image = Image.new("RGB", (80, 60), "grey")
    (prediction,) = classifier.predict(image, top_k=2)
    found = where_maps(image, prediction, classifier, windows=Windows((0.3,), 2))
    assert not found.maps.localized.any()
    figure = where_figure(image, prediction, classifier, windows=Windows((0.3,), 2))
    said = [t for ax in figure.axes for t in ax.texts if t.get_text() == "no localized evidence"]
    assert len(said) == 1 + len(found.descriptions)  # the crop weights and each description
    assert all(len(ax.images) <= 1 for ax in figure.axes)  # the image alone, no map over it


class WhitePart(FakeEncoder):
    """Views with at least 5 % white pixels (the full view and the windows on the white part)
    embed alike and match "the target part"; every other view is orthogonal to both, with a
    little noise."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        self.views += len(pixels)
        target = (pixels[:, 0] > 0).double().mean(dim=(1, 2)) >= 0.05
        generator = torch.Generator().manual_seed(len(pixels))
        rows = torch.zeros(len(pixels), self.embed_dim)
        rows[:, 1] = 1.0
        rows[:, 4:] = 0.3 * torch.randn(len(pixels), self.embed_dim - 4, generator=generator)
        rows[target] = 0.0
        rows[target, 0] = 1.0
        return F.normalize(rows, dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        rows = super().encode_texts(texts)
        for k, text in enumerate(texts):
            if text == "the target part":
                rows[k] = F.normalize(torch.tensor([1.0, 0, 0.5] + [0.0] * 13), dim=0)
        return rows


def test_maps_point_at_the_part_and_the_windows_are_cached(cache, caplog):
    pixels = np.zeros((60, 60, 3), dtype=np.uint8)
    pixels[:15, :15] = 255  # the part: a sixteenth of the image, at the top left
    image = Image.fromarray(pixels)
    encoder = WhitePart()
    sentences = {"thing": ["the target part", "a plain part"], "other": ["a thing", "b thing"]}
    classifier = wca.WCAClassifier(encoder, ["thing", "other"], sentences, n_crops=8)
    (prediction,) = classifier.predict(image, top_k=2)
    windows = Windows((0.25,), 3)
    found = where_maps(image, prediction, classifier, class_index=0, windows=windows)
    target = 1 + found.descriptions.index(0)
    for k in (0, target):  # the crop weights and the target description
        row, column = found.maps.peak(k)
        assert row < 15 and column < 15 and bool(found.maps.localized[k])
    # the second time the windows come from the cache, unchanged
    views = encoder.views
    boxes, cached = window_embeddings(encoder, image, windows)
    assert encoder.views == views and torch.equal(boxes, found.boxes)
    assert torch.equal(cached, window_embeddings(encoder, image, windows, cache=False)[1])
    views = encoder.views
    (stored,) = cache.glob("windows-*.safetensors")
    # a corrupt cache file is named and encoded again
    stored.write_bytes(b"not a safetensors file")
    with caplog.at_level(logging.WARNING):
        _, again = window_embeddings(encoder, image, windows)
    assert "unreadable" in caplog.text and stored.name in caplog.text
    assert encoder.views > views and torch.equal(again, cached)
