"""Ragged crops (anytime views): every crop-reading head scores a batch of images with
different numbers of crops (``counts``) as it scores each image alone on its own prefix, the
padding after an image's crops (noise or NaN) changing nothing; the online heads' streams
likewise, against a stream fed image by image."""

from __future__ import annotations

import pytest
import torch

from online_streams import D, hash_encoder, stream_views, toy_sources, unit
from wca.methods import build_head

N = 19  # up to 20 views: int(0.1 V) is 1 or 2, BoostAdapter's boosting samples 0, 1 or 2
COUNTS = [1, 2, 5, N, 3, 5, 1, N, 12, 9]
TOLERANCE = {"atol": 1e-6, "rtol": 0.0}

PER_IMAGE = [
    ("wca", {}),
    ("wca-uniform-crops", {}),
    ("wca-uniform-text", {}),
    ("wca-full-view", {}),
    ("wca-paper", {}),
    ("bifta", {}),
    ("zero", {}),
    ("mta", {}),
    ("awt", {}),
    ("lazsl", {}),
    ("lazsl", {"gamma": -0.02}),  # a crop marginal over part of the image's own crops
]
ONLINE = [
    ("tda", {"views": "confident", "logit_scale": 20.0}),
    ("tda+wca", {"logit_scale": 20.0}),
    ("tda", {"base": "zero", "logit_scale": 20.0}),
    ("dmn", {"logit_scale": 20.0, "memory_size": 2}),  # full classes: entropies decide
    ("dmn", {"base": "wca", "logit_scale": 20.0, "memory_size": 2}),
    ("boostadapter", {"views": "confident", "logit_scale": 20.0}),
    ("boostadapter", {"base": "wca", "logit_scale": 20.0}),
    ("onzeta", {}),
    ("onzeta", {"base": "wca"}),
    ("dota", {"views": "confident", "logit_scale": 20.0}),
    ("dota+wca", {"logit_scale": 20.0}),
    ("ecalp", {}),
    ("ecalp+wca", {}),
    ("bca", {"views": "confident", "logit_scale": 20.0}),
    ("bca+wca", {"logit_scale": 20.0}),
    ("oga", {"logit_scale": 20.0}),
    ("oga+wca", {"logit_scale": 20.0}),
    ("cosmic", {"logit_scale": 20.0, "clip_shots": 2}),
    ("cosmic+wca", {"logit_scale": 20.0, "clip_shots": 2}),
]


def ragged_batch(counts, seed=0):
    """Full views ``[B, D]``, crops ``[B, N, D]`` (noisy copies of a class prototype, so that
    memories fill) and ``counts``; the padding after an image's crops is garbage: other unit
    vectors (that would change its scores if read) for even images, NaN for odd ones."""
    views = stream_views(len(counts), 1 + N, 4, seed=seed)
    image, crops = views[:, 0], views[:, 1:].clone()
    counts = torch.tensor(counts)
    beyond = torch.arange(N) >= counts[:, None]
    garbage = unit(len(counts), N, D, seed=seed + 1)
    garbage[1::2] = torch.nan
    crops[beyond] = garbage[beyond]
    return image, crops, counts


def alone(image, crops, counts):
    """Each image alone: its full view ``[1, D]`` and its own crops ``[1, k, D]``."""
    return [(image[b : b + 1], crops[b : b + 1, :k]) for b, k in enumerate(counts.tolist())]


@pytest.mark.parametrize(("method", "options"), PER_IMAGE)
def test_each_image_scores_as_on_its_own_crops_alone(method, options):
    head = build_head(method, hash_encoder, toy_sources(), **options)
    image, crops, counts = ragged_batch(COUNTS)
    ragged = head.logits(image, crops, counts=counts)
    expected = torch.cat([head.logits(i, c) for i, c in alone(image, crops, counts)])
    assert torch.isfinite(ragged).all()
    torch.testing.assert_close(ragged, expected.to(ragged.dtype), **TOLERANCE)


@pytest.mark.parametrize(("method", "options"), PER_IMAGE)
def test_counts_none_is_every_crop(method, options):
    head = build_head(method, hash_encoder, toy_sources(), **options)
    image, crops, _ = ragged_batch([N] * len(COUNTS))
    full = torch.full((len(image),), N)
    torch.testing.assert_close(head.logits(image, crops, counts=full), head.logits(image, crops))


def test_wca_evidence_and_image_side_are_the_images_own():
    head = build_head("wca", hash_encoder, toy_sources())
    image, crops, counts = ragged_batch(COUNTS)
    weights = head.crop_weights(image, crops, counts=counts)
    side = head.image_features(image, crops, counts=counts)
    for b, (i, c) in enumerate(alone(image, crops, counts)):
        k = c.shape[1]
        torch.testing.assert_close(weights[b, :k], head.crop_weights(i, c)[0], **TOLERANCE)
        assert (weights[b, k:] == 0).all()
        torch.testing.assert_close(side[b], head.image_features(i, c)[0], **TOLERANCE)


@pytest.mark.parametrize(("method", "options"), ONLINE)
def test_a_ragged_stream_is_a_stream_of_each_image_alone(method, options, monkeypatch):
    head = build_head(method, hash_encoder, toy_sources(), **options)
    counts = [1 + (7 * b) % N for b in range(30)]  # every length from 1 to N, in a shuffle
    image, crops, counts = ragged_batch(counts, seed=3)
    single = head.stream(len(image))
    expected = torch.cat([single.logits(i, c) for i, c in alone(image, crops, counts)])
    monkeypatch.setattr("wca.methods.online.MAX_BLOCK", 4)  # blocks of images cut the counts
    stream, cuts = head.stream(len(image)), [0, 1, 11, 12, len(image)]
    ragged = torch.cat(
        [
            stream.logits(image[lo:hi], crops[lo:hi], counts=counts[lo:hi])
            for lo, hi in zip(cuts, cuts[1:], strict=False)
        ]
    )
    assert torch.isfinite(ragged).all()
    torch.testing.assert_close(ragged, expected, **TOLERANCE)


@pytest.mark.parametrize(("method", "options"), ONLINE)
def test_a_stream_with_every_crop_counted_is_the_stream_without_counts(method, options):
    head = build_head(method, hash_encoder, toy_sources(), **options)
    image, crops, _ = ragged_batch([N] * 12, seed=5)
    full = torch.full((len(image),), N)
    torch.testing.assert_close(head.logits(image, crops, counts=full), head.logits(image, crops))


@pytest.mark.parametrize("method", ["wca", "zero", "tda+wca"])
@pytest.mark.parametrize(
    "counts",
    [[1, 0, 2], [1, N + 1, 2], [[1, 2, 3]], [1, 2], [1.0, 2.0, 3.0], [True, True, True]],
)
def test_bad_counts_are_one_error_naming_counts(method, counts):
    head = build_head(method, hash_encoder, toy_sources())
    image, crops, _ = ragged_batch([N] * 3)
    with pytest.raises(ValueError, match=r"^counts: "):
        head.logits(image, crops, counts=torch.tensor(counts))


def test_counts_without_crops_are_an_error():
    with pytest.raises(ValueError, match=r"^counts: given without crop embeddings"):
        build_head("zero", hash_encoder, toy_sources()).logits(unit(2, D), counts=[1, 1])


def test_grouping_keeps_the_heads_dtype_and_empty_batches():
    head = build_head("mta", hash_encoder, toy_sources())
    image, crops, counts = ragged_batch(COUNTS)
    scores = head.logits(image.float(), crops.float(), counts=counts)
    assert scores.dtype == torch.float32 and scores.shape == (len(COUNTS), 4)
    empty = head.logits(image[:0], crops[:0], counts=counts[:0])
    assert empty.shape == (0, 4)
