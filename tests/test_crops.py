"""Crop boxes, the fast and fidelity view paths, and odd images."""

from __future__ import annotations

import io

import numpy as np
import open_clip
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from wca.crops import CROP_STRATEGIES, crop_boxes
from wca.images import load_image
from wca.preprocessing import Preprocessing, fast_views, fidelity_views, image_to_tensor

sizes = st.tuples(st.integers(1, 4000), st.integers(1, 4000)) | st.sampled_from(
    [(1, 1), (3, 2000), (2000, 3), (4000, 100), (100, 4000)]
)


@settings(max_examples=200, deadline=None)
@given(
    strategy=st.sampled_from([name for name in CROP_STRATEGIES if name != "rrc"]),
    size=sizes,
    alpha=st.floats(0.05, 0.9),
    seed=st.integers(0, 2**31),
    index=st.integers(0, 10**7),
)
def test_boxes_are_square_inside_and_within_bounds(strategy, size, alpha, seed, index):
    height, width = size
    boxes = crop_boxes(height, width, 16, alpha, 0.9, seed, index, strategy)
    assert boxes.shape == (16, 4)
    left, top, right, bottom = boxes.T
    side = right - left
    assert torch.equal(side, bottom - top)
    assert (
        (left >= 0).all()
        and (top >= 0).all()
        and (right <= width).all()
        and (bottom <= height).all()
    )
    short = min(height, width)
    assert (side >= max(1, int(np.floor(alpha * short)))).all()
    assert (side <= max(1, int(np.floor(0.9 * short)))).all()


@settings(max_examples=50, deadline=None)
@given(size=sizes, seed=st.integers(0, 1000), index=st.integers(0, 1000), n=st.integers(1, 64))
def test_boxes_depend_only_on_seed_image_and_crop_index(size, seed, index, n):
    boxes = crop_boxes(*size, n, 0.5, seed=seed, image_index=index)
    assert torch.equal(boxes, crop_boxes(*size, n, 0.5, seed=seed, image_index=index))
    # a prefix of a larger draw: crop i does not depend on how many crops were asked for
    assert torch.equal(boxes, crop_boxes(*size, n + 7, 0.5, seed=seed, image_index=index)[:n])


def test_boxes_differ_between_images_and_seeds():
    a = crop_boxes(500, 400, 8, 0.5, seed=0, image_index=0)
    assert not torch.equal(a, crop_boxes(500, 400, 8, 0.5, seed=0, image_index=1))
    assert not torch.equal(a, crop_boxes(500, 400, 8, 0.5, seed=1, image_index=0))


@pytest.mark.parametrize("bad", [dict(alpha=0.0), dict(alpha=0.95), dict(beta=1.5)])
def test_bad_scale_bounds_are_errors(bad):
    kwargs = dict(alpha=0.5, beta=0.9) | bad
    with pytest.raises(ValueError, match=f"^{next(iter(bad))}: "):  # names the setting
        crop_boxes(100, 100, 4, **kwargs)


def smooth_image(height=380, width=450, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    coarse = (rng.random((height // 16 + 1, width // 16 + 1, 3)) * 255).astype(np.uint8)
    return Image.fromarray(coarse).resize((width, height), Image.BICUBIC)


def clip_preprocess():
    return open_clip.image_transform(224, is_train=False)


def test_fast_path_matches_the_fidelity_path():
    """Mean absolute difference in [0, 1] pixel units must stay below 0.02 (measured ~1e-5)."""
    prep = Preprocessing()
    std = torch.tensor(prep.std).view(1, 3, 1, 1)
    for seed, (h, w) in enumerate([(380, 450), (600, 333), (224, 224), (97, 1200)]):
        image = smooth_image(h, w, seed)
        boxes = crop_boxes(h, w, 12, 0.3, seed=seed, image_index=seed)
        fast = fast_views(image, boxes, prep)
        slow = fidelity_views(image, boxes, clip_preprocess())
        assert fast.shape == slow.shape == (13, 3, 224, 224)
        difference = ((fast - slow) * std).abs().mean().item()
        assert difference < 0.02, f"{h}x{w}: mean abs difference {difference}"


def test_fast_path_accepts_a_decoded_tensor_and_squash_resize():
    image = smooth_image()
    boxes = crop_boxes(image.height, image.width, 3, 0.5)
    prep = Preprocessing(image_size=64, resize_mode="squash", interpolation="bilinear")
    views = fast_views(image_to_tensor(image), boxes, prep)
    assert views.shape == (4, 3, 64, 64)
    torch.testing.assert_close(views, fast_views(image, boxes, prep))


def encoded(image: Image.Image, fmt: str, **kwargs) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    buffer.seek(0)
    return buffer


def odd_images() -> dict[str, io.BytesIO | Image.Image]:
    rgb = smooth_image(40, 60)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the upright image is 40 wide, 60 high
    sixteen = Image.fromarray((np.arange(30 * 20).reshape(30, 20) * 100).astype(np.uint16))
    return {
        "1x1": Image.new("RGB", (1, 1), (255, 0, 0)),
        "3x2000": Image.new("RGB", (3, 2000), (0, 255, 0)),
        "grayscale": encoded(rgb.convert("L"), "PNG"),
        "rgba": encoded(rgb.convert("RGBA"), "PNG"),
        "palette": encoded(rgb.convert("P"), "PNG"),
        "16-bit": encoded(sixteen, "PNG"),
        "exif-rotated": encoded(rgb, "JPEG", exif=exif),
    }


@pytest.mark.parametrize("name", list(odd_images()))
def test_odd_images_give_valid_views(name):
    image = load_image(odd_images()[name])
    assert image.mode == "RGB"
    boxes = crop_boxes(image.height, image.width, 4, 0.5)
    prep = Preprocessing(image_size=32)
    views = fast_views(image, boxes, prep)
    assert views.shape == (5, 3, 32, 32) and torch.isfinite(views).all()
    small_clip = open_clip.image_transform(32, is_train=False)
    assert fidelity_views(image, boxes, small_clip).shape == (5, 3, 32, 32)


def test_exif_orientation_is_applied():
    assert load_image(odd_images()["exif-rotated"]).size == (40, 60)


def test_sixteen_bit_keeps_its_range():
    pixels = np.asarray(load_image(odd_images()["16-bit"]))
    assert pixels.max() > 200 and pixels.min() == 0


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.jpg"
    path.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_image(path)


def pairwise_iou(boxes: torch.Tensor) -> torch.Tensor:
    b = boxes.double()
    left, top = (
        torch.maximum(b[:, None, 0], b[None, :, 0]),
        torch.maximum(b[:, None, 1], b[None, :, 1]),
    )
    right = torch.minimum(b[:, None, 2], b[None, :, 2])
    bottom = torch.minimum(b[:, None, 3], b[None, :, 3])
    inter = (right - left).clamp(min=0) * (bottom - top).clamp(min=0)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou = inter / (area[:, None] + area[None, :] - inter)
    return iou.fill_diagonal_(0)


def test_diverse_crops_avoid_near_duplicates():
    for index in range(5):
        diverse = crop_boxes(1000, 800, 8, 0.3, seed=1, image_index=index, strategy="diverse")
        assert pairwise_iou(diverse).max() <= 0.5
    random = [crop_boxes(1000, 800, 8, 0.3, seed=1, image_index=i) for i in range(5)]
    assert max(pairwise_iou(b).max() for b in random) > 0.5


def test_grid_crops_cover_scales_from_beta_to_alpha():
    boxes = crop_boxes(400, 400, 13, 0.5, 0.9, strategy="grid")
    sides = (boxes[:, 2] - boxes[:, 0]).tolist()
    assert sides[:4] == [360] * 4 and sides[4:13] == [200] * 9
    assert torch.equal(boxes, crop_boxes(400, 400, 13, 0.5, 0.9, seed=7, strategy="grid"))


def test_unknown_strategy_is_an_error():
    with pytest.raises(ValueError, match="^crop_strategy: must be one of random"):
        crop_boxes(100, 100, 4, 0.5, strategy="spiral")
