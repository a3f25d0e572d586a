"""The ``rrc`` crop strategy (RandomResizedCrop boxes and a flip per view): bounds, determinism,
agreement with torchvision's sampler, flips stored in the feature cache and applied."""

from __future__ import annotations

import math

import numpy as np
import open_clip
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torchvision.transforms import RandomResizedCrop

from fake_encoder import FakeEncoder
from feature_world import TinyDataset
from wca.crops import CropSpec, crop_views
from wca.features import extract_features
from wca.options import RunOptions
from wca.preprocessing import Preprocessing, fast_views, fidelity_views, image_to_tensor


@settings(max_examples=100, deadline=None)
@given(
    height=st.integers(1, 3000),
    width=st.integers(1, 3000),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**7),
)
def test_rrc_boxes_lie_inside_with_scale_and_ratio_in_bounds(height, width, seed, index):
    boxes, flips = crop_views(height, width, 24, 0.5, seed=seed, image_index=index, strategy="rrc")
    assert boxes.shape == (24, 4) and flips.shape == (24,) and flips.dtype == torch.bool
    left, top, right, bottom = boxes.T.double()
    w, h = right - left, bottom - top
    assert (left >= 0).all() and (top >= 0).all()
    assert (right <= width).all() and (bottom <= height).all() and (w >= 1).all()
    # rounding to whole pixels moves each side by at most half a pixel
    assert ((w - 0.5) / (h + 0.5) <= 4 / 3).all() or not 3 / 4 <= width / height <= 4 / 3
    if 3 / 4 <= width / height <= 4 / 3 and min(height, width) >= 20:
        assert ((w + 0.5) / (h - 0.5) >= 3 / 4).all() and ((w - 0.5) / (h + 0.5) <= 4 / 3).all()
        area = (w + 0.5) * (h + 0.5) / (height * width)
        assert (area >= 0.08).all()


def test_rrc_is_deterministic_per_view_and_differs_between_images():
    a = crop_views(480, 640, 16, 0.5, seed=3, image_index=7, strategy="rrc")
    b = crop_views(480, 640, 40, 0.5, seed=3, image_index=7, strategy="rrc")
    assert torch.equal(a[0], b[0][:16]) and torch.equal(a[1], b[1][:16])
    other = crop_views(480, 640, 16, 0.5, seed=3, image_index=8, strategy="rrc")
    assert not torch.equal(a[0], other[0])


def test_rrc_follows_torchvision_and_flips_half_the_views():
    """The same distribution as RandomResizedCrop.get_params (means of side lengths and
    positions over 4000 boxes), and the fallback to the centre crop for extreme shapes."""
    height, width = 300, 500
    boxes, flips = crop_views(height, width, 4000, 0.5, strategy="rrc")
    ours = torch.stack(
        [boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]], 1
    )
    torch.manual_seed(0)
    image = torch.zeros(1, height, width)
    theirs = torch.tensor(
        [RandomResizedCrop.get_params(image, (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(4000)]
    )
    spread = theirs.double().std(0) / math.sqrt(4000)
    assert ((ours.double().mean(0) - theirs.double().mean(0)).abs() < 5 * spread).all()
    assert abs(flips.double().mean() - 0.5) < 0.04
    boxes, _ = crop_views(10, 2000, 5, 0.5, strategy="rrc")  # no attempt fits: centre crop
    assert boxes.tolist() == [[993, 0, 1006, 10]] * 5


def asymmetric_image(height=180, width=260) -> Image.Image:
    ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
    ramp[: height // 2, :, 1] = 255 - ramp[: height // 2, :, 1]
    return Image.fromarray(ramp.astype(np.uint8))


def test_flipped_views_are_the_flipped_crops_in_both_paths():
    image = asymmetric_image()
    boxes, _ = crop_views(image.height, image.width, 6, 0.5, seed=1, strategy="rrc")
    flips = torch.tensor([True, False] * 3)
    prep = Preprocessing()
    plain = fast_views(image, boxes, prep)
    flipped = fast_views(image_to_tensor(image), boxes, prep, flips)
    assert torch.equal(flipped[0], plain[0])  # the full view is never flipped
    for i, flip in enumerate(flips.tolist(), start=1):
        assert torch.equal(flipped[i], plain[i].flip(-1) if flip else plain[i])
        assert not torch.equal(plain[i], plain[i].flip(-1))  # the image is asymmetric
    preprocess = open_clip.image_transform(224, is_train=False)
    slow = fidelity_views(image, boxes, preprocess, flips, size=224)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    assert ((flipped - slow) * std).abs().mean() < 0.02
    assert ((flipped[1] - slow[1].flip(-1)) * std[0]).abs().mean() > 0.1


def test_fast_and_fidelity_rrc_views_agree():
    prep, preprocess = Preprocessing(), open_clip.image_transform(224, is_train=False)
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    for seed, (h, w) in enumerate([(380, 450), (600, 333), (97, 1200)]):
        generator = np.random.default_rng(seed)
        coarse = (generator.random((h // 16 + 1, w // 16 + 1, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        boxes, flips = crop_views(h, w, 8, 0.5, seed=seed, strategy="rrc")
        fast = fast_views(image, boxes, prep, flips)
        slow = fidelity_views(image, boxes, preprocess, flips, size=224)
        assert ((fast - slow) * std).abs().mean() < 0.02


def test_extraction_stores_and_applies_the_flips(tmp_path):
    dataset, encoder = TinyDataset(5), FakeEncoder()
    rrc = CropSpec(n_crops=6, alpha=0.5, seed=2, crop_strategy="rrc")
    options = RunOptions(cache_dir=tmp_path, batch_size=8, shard_size=2, progress=False)
    features = extract_features(encoder, dataset, rrc, options)
    cached = extract_features(encoder, dataset, rrc, options)
    assert torch.equal(cached.flips, features.flips) and features.flips.any()
    for index in (1, 4):
        image, _ = dataset[index]
        boxes, flips = crop_views(
            image.height, image.width, 6, 0.5, seed=2, image_index=index, strategy="rrc"
        )
        assert torch.equal(features.boxes[index], boxes) and torch.equal(
            features.flips[index], flips
        )
        expected = encoder.encode_images(fast_views(image, boxes, encoder.preprocessing, flips))
        torch.testing.assert_close(features.crop_emb[index], expected[1:])
    square = extract_features(encoder, dataset, CropSpec(n_crops=6, alpha=0.5, seed=2), options)
    assert not square.flips.any()
    chunk = next(features.chunks(3))[1]
    assert torch.equal(chunk.flips, features.flips[: len(chunk)])
